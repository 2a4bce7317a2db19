"""The request pipeline: every app-wide hook, in the order it runs, registered here and only here.

``create_app`` calls ``install``. No blueprint adds app-wide hooks and nothing edits Flask's
lists; ``tests/test_pipeline.py`` compares the app's lists with ``BEFORE``, ``AFTER``,
``TEARDOWN`` and ``CONTEXT`` below, so a hook registered anywhere else fails it. Three
extensions register hooks of their own in ``init_app``: they are bound here, at the place
their hooks take, and named in the lists by their qualified names.

Before the view, in order (a hook that answers ends the request; the rest do not run):
  1. start_request_log     request id and timer first, so every later refusal is logged with them
  2. limit_upload_size     the import's size limit, before anything reads the body (CSRF does)
  3. (Flask-WTF's hook)    a no-op: WTF_CSRF_CHECK_DEFAULT is off, step 4 runs the check instead
  4. check_csrf            refuse a forged state change before any work, limits or database
  5. (Flask-Limiter)       rate limits, after CSRF: a forged cross-site POST from a victim's
                           browser must not spend that victim's sign-in budget
  6. refuse_deep_json     a JSON body nested beyond reason, before anything decodes one (7 does,
                           and so do Flask-WTF's forms); 4 and 5 read form fields and headers only
  7. refuse_nul_characters before any value reaches the database (PostgreSQL cannot store NUL)
  8. load_request_membership  the member, the school, the tenancy binding
  9. enforce_access        the view's declared access; needs 8
 10. load_notice           the consent banner, signed-in only, after 9 (no work for a refusal);
                           reads only: no GET writes a row
 11. record_use            state-changing requests only: continued use and the notice they saw
 12. claim (submissions)   last: a form's one-time submission key is claimed once all the
                           refusals above have had their say; a repeat of the key is answered
                           with the first result here, and its view never runs

After the view, in the order they run (Flask runs after_request hooks last-registered first;
``install`` registers them reversed so this list reads in running order). The session is
saved after all of them.
  1. settle (submissions)  first: the claimed key keeps the view's outcome, or is released if
                           the view changed nothing; before 2, whose jobs commit on their own
  2. run_jobs_after_request  in-process jobs released by the request's commit (no Redis)
  3. security_headers      CSP and friends on every response, errors included
  4. (Flask-Login)         its remember-me cookie refresh (we set none; it stays a no-op)
  5. (Flask-Limiter)       the X-RateLimit headers
  6. log_request           last: the final status in the access line, the id in a header

Teardown: Flask-Limiter's context release, then release_unsettled (a claimed submission key
whose request raised before it had a response). Flask-SQLAlchemy removes the database session
at app-context teardown, which is not a request hook.
Context processors: Flask-WTF's ``csrf_token``, then ``template_globals`` (ours, consent
included, and ``form_guard`` for hand-written forms). Flask-Login's own is not added:
``template_globals`` has ``current_user``.
Blueprint-local: only the messages blueprint's ``local_time`` for its own templates.
"""

from __future__ import annotations

from flask import Flask, current_app, g
from flask_login import current_user

from app import i18n, permissions, submissions
from app.auth.services import load_request_membership
from app.consent import analytics, ledger, policy
from app.extensions import csrf, limiter, login_manager
from app.forms import form_guard
from app.identity import brand
from app.imports.services import limit_upload_size
from app.jobs import run_jobs_after_request
from app.logging_setup import log_request, start_request_log
from app.models.consent import ConsentKind
from app.security import refuse_deep_json, refuse_nul_characters, security_headers


def check_csrf() -> None:
    """before_request: Flask-WTF's check (400 on a state change without a valid token); the only
    views exempt are those of ``security.CSRF_EXEMPT`` (one-click unsubscribe, the Mailgun webhook)."""
    if current_app.config["WTF_CSRF_ENABLED"]:
        csrf.protect(apply_exemptions=True)


BEFORE = [
    "app.logging_setup.start_request_log",
    "app.imports.services.limit_upload_size",
    "flask_wtf.csrf.CSRFProtect.init_app.<locals>.csrf_protect",
    "app.pipeline.check_csrf",
    "flask_limiter._extension.Limiter._check_request_limit",
    "app.security.refuse_deep_json",
    "app.security.refuse_nul_characters",
    "app.auth.services.load_request_membership",
    "app.permissions.enforce_access",
    "app.consent.ledger.load_notice",
    "app.consent.ledger.record_use",
    "app.submissions.claim",
]
AFTER = [  # in running order
    "app.submissions.settle",
    "app.jobs.run_jobs_after_request",
    "app.security.security_headers",
    "flask_login.login_manager.LoginManager._update_remember_cookie",
    "flask_limiter._extension.Limiter.__inject_headers",
    "app.logging_setup.log_request",
]
TEARDOWN = ["flask_limiter._extension.Limiter.__release_context", "app.submissions.release_unsettled"]
CONTEXT = ["flask_wtf.csrf.CSRFProtect.init_app.<locals>.<lambda>", "app.pipeline.template_globals"]


def install(app: Flask) -> None:
    """Register every app-wide hook in the order it runs (the module's docstring says why)."""
    # after_request hooks run last-registered first: the access log is registered before all.
    app.after_request(log_request)

    app.before_request(start_request_log)
    app.before_request(limit_upload_size)
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # Flask-WTF's own hook stays a no-op ...
    csrf.init_app(app)  # ... and adds the csrf_token context processor
    app.before_request(check_csrf)
    limiter.init_app(app)  # its check (before), its headers (after: run just before the log), its release
    login_manager.init_app(app, add_context_processor=False)  # its remember-cookie hook (after)
    app.before_request(refuse_deep_json)
    app.before_request(refuse_nul_characters)
    app.before_request(load_request_membership)
    app.before_request(permissions.enforce_access)
    app.before_request(ledger.load_notice)
    app.before_request(ledger.record_use)
    app.before_request(submissions.claim)

    app.after_request(security_headers)
    app.after_request(run_jobs_after_request)
    app.after_request(submissions.settle)  # registered last: runs first after the view
    app.teardown_request(submissions.release_unsettled)
    submissions.listen_for_commits()

    app.context_processor(template_globals)


def template_globals() -> dict:
    """What every template may use: permission checks, the current school and member, the consent state."""
    return {
        "can": permissions.can,
        "current_school": g.get("school"),
        "school_brand": brand.school_brand(),  # the header's name, crest and brand stylesheet
        "current_membership": g.get("membership"),
        "my_memberships": g.get("memberships", []),
        "current_user": current_user,
        "env_name": current_app.config["ENV_NAME"],
        "consent_notice": lambda: g.get("consent_notice"),
        "analytics_config": analytics.config_for_page,
        "my_consent_ledger": lambda: ledger.ledger_of(current_user.id),
        "my_policy_version": lambda: policy.version_for_user(current_user),
        "ConsentKind": ConsentKind,
        "current_locale": i18n.current_locale(),
        "text_direction": i18n.text_direction(),
        "languages": i18n.LANGUAGES,
        "direction": i18n.direction,
        "form_guard": form_guard,
    }
