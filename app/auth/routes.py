"""Auth blueprint: join, sign in and out, passwords, email, switching school."""

from __future__ import annotations

import math
import time

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext, refresh
from flask_login import current_user

from app.auth import forms, passwords, services, throttle
from app.consent import ledger
from app.extensions import db, limiter
from app.forms import GuardedForm
from app.htmx import redirect_after_post, render, wants_fragment
from app.i18n import SESSION_KEY
from app.members import lifecycle
from app.parsing import optional_id
from app.permissions import public, signed_in
from app.urls import safe_next

bp = Blueprint("auth", __name__)


def _sign_in_limit() -> str:
    """Per IP, for signing in and the account page's password checks: a school's NAT's worth."""
    return current_app.config["RATELIMIT_SIGN_IN"]


def _sends_mail_limit() -> str:
    """Per IP, for the forms that send an email to a typed address (join, forgot, change)."""
    return current_app.config["RATELIMIT_SENDS_MAIL"]


def _submitted_email_key() -> str:
    """Rate-limit key per submitted address, keyed-hashed so Redis holds no guessable email."""
    return "email:" + throttle.keyed_hash(services.normalise_email(request.form.get("email", "")))


@bp.route("/join", methods=["GET", "POST"])
@public
@limiter.limit(_sends_mail_limit, methods=["POST"])
@limiter.limit("30 per hour", methods=["POST"], key_func=_submitted_email_key)
def join():
    """Sign up with a school's invitation code; the membership waits for approval."""
    form = forms.JoinForm()
    if request.method == "GET" and request.args.get("code"):
        form.invite_code.data = request.args["code"][:40]
    forms.offer_classes(form, services.classes_for_code(form.invite_code.data or ""))
    refused = False
    if form.validate_on_submit():
        outcome = lifecycle.join_school(
            code=form.invite_code.data,
            name=form.name.data,
            email=form.email.data,
            password=form.password.data,
            children=_children_of(form),
            family_code=form.family_code.data or "",
        )
        if outcome.error is None:
            # New address or not, the same answer: the email tells the person what comes next.
            db.session.commit()
            return redirect_after_post(url_for("auth.join_sent"))
        _field_error(form, outcome)
        refused = True
    status = 400 if refused or form.errors else 200
    return render("auth/join.html", block="form", target="join-form", form=form, status=status)


def _children_of(form: forms.JoinForm) -> list[lifecycle.NewChild]:
    """The started child rows of a validated form (a class is a plain id by then, or none)."""
    return [
        lifecycle.NewChild(child.first_name.data, child.last_name.data, child.chosen_class_id())
        for child in form.children
        if child.filled()
    ]


def _field_error(form, outcome) -> None:
    """Show a service's refusal next to the field it is about."""
    field = form.children[0].class_id if outcome.field == "children" else getattr(form, outcome.field)
    field.errors = [*field.errors, outcome.error]


@bp.route("/join/sent")
@public
def join_sent():
    """After joining: check your email (the same page whether or not the address had an account)."""
    return render_template("auth/join_sent.html")


@bp.route("/join/classes")
@public
@limiter.limit(_sign_in_limit)
def join_classes():
    """htmx: once the code is typed, the children's class menus list that school's classes.

    Only the hint and the menus come back (never the names typed, which stay in the page); each
    menu keeps the class it had if the school offers it."""
    form = forms.JoinForm(formdata=None)
    form.invite_code.data = request.args.get("invite_code", "")[:40]
    forms.offer_classes(form, services.classes_for_code(form.invite_code.data))
    for child in form.children:
        picked = request.args.get(child.class_id.name, "")
        if picked and any(choice.value == picked for choice in child.class_id.choices):
            child.class_id.data = picked
    return render_template("auth/partials/_class_menus.html", form=form)


@bp.route("/pending")
@signed_in
def pending():
    """What a person waiting for approval sees: the school's name and nothing of its directory."""
    if g.membership is not None and g.membership.is_approved:
        return redirect(url_for("main.home"))
    return render_template("auth/pending.html", join_form=forms.JoinAnotherSchoolForm(prefix="js"))


def _sign_in_breached(limit) -> Response:
    """The per-IP limit is reached: the sign-in form again, typed address kept, saying how long."""
    wait = max(1, math.ceil(limit.window[0] - time.time()))
    form = forms.SignInForm()
    form.validate()  # the typed address back in its field; its errors are not the point here
    return _sign_in_page(form, slowed=wait)


@bp.route("/sign-in", methods=["GET", "POST"])
@public
@limiter.limit(_sign_in_limit, methods=["POST"], on_breach=_sign_in_breached)
def sign_in():
    """Email and password; the same answer whether or not the address has an account.

    Failed passwords slow the (address, IP) pair down and never lock the account (app/auth/throttle.py).
    """
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = forms.SignInForm()
    if form.validate_on_submit():
        keys = throttle.keys_for(services.normalise_email(form.email.data))
        wait = throttle.wait_seconds(keys)
        if wait:
            return _sign_in_page(form, slowed=wait)
        user = services.authenticate(form.email.data, form.password.data)
        if user is not None:
            throttle.record_success(keys)
            services.sign_in(user)
            db.session.commit()  # the sign-in's audit entry
            return redirect_after_post(safe_next(request.args.get("next")) or url_for("main.home"))
        form.password.errors.append(_("That email and password don't match an account."))
        wait = throttle.record_failure(keys)
        if wait:
            return _sign_in_page(form, slowed=wait)
    return _sign_in_page(form)


def _slowed_message(seconds: int) -> str:
    """What a slowed attempt is told."""
    return ngettext(
        "Too many attempts from here. Try again in %(num)d second.",
        "Too many attempts from here. Try again in %(num)d seconds.",
        seconds,
    )


def _current_password_matches(field) -> bool:
    """The account page's re-entered password, slowed like sign-in: a stolen session or an
    unlocked shared computer must not try thousands of passwords (same pair and account keys)."""
    keys = throttle.keys_for(current_user.email)
    wait = throttle.wait_seconds(keys)
    if wait:
        field.errors.append(_slowed_message(wait))
        return False
    if passwords.verify_password(current_user.password_hash, field.data):
        throttle.record_success(keys)
        return True
    field.errors.append(_("That is not your current password."))
    throttle.record_failure(keys)
    return False


def _sign_in_page(form: forms.SignInForm, *, slowed: int = 0):
    """The sign-in page (or its form for htmx); ``slowed``: seconds before the next try.

    A slowed answer is 429 with Retry-After; to htmx it is 400, the status its forms swap in,
    so the message shows in the form rather than as the generic "too many attempts" notice.
    """
    message = _slowed_message(slowed) if slowed else ""
    demo = current_app.config["SHOW_DEMO_ACCOUNTS"] and _demo_accounts()
    status = (400 if wants_fragment("sign-in-form") else 429) if slowed else 400 if form.errors else 200
    response = render(
        "auth/sign_in.html",
        block="form",
        target="sign-in-form",
        form=form,
        demo=demo,
        slowed_message=message,
        status=status,
    )
    if slowed:
        response.headers["Retry-After"] = str(slowed)
        # Flask-Limiter would raise Retry-After to its per-IP window's end: the wait is ours.
        limiter.context.view_rate_limit = None
    return response


def _demo_accounts():
    from app.demo import DEMO_ACCOUNTS, DEMO_PASSWORD

    return {"accounts": DEMO_ACCOUNTS, "password": DEMO_PASSWORD}


@bp.route("/sign-out", methods=["POST"])
@public
def sign_out():
    """End the session (POST only, so a link or image cannot sign anyone out)."""
    services.sign_out()
    flash(_("You are signed out."), "info")
    return redirect_after_post(url_for("auth.sign_in"))


@bp.route("/password/forgot", methods=["GET", "POST"])
@public
@limiter.limit(_sends_mail_limit, methods=["POST"])
@limiter.limit("5 per hour", methods=["POST"], key_func=_submitted_email_key)
def forgot_password():
    """Ask for a reset link; the answer, and the work done for it, never say whether the address
    has an account (the worker looks it up and sends the mail)."""
    form = forms.ForgotPasswordForm()
    if form.validate_on_submit():
        services.ask_for_password_reset(form.email.data)
        db.session.commit()
        return render_template("auth/reset_sent.html")
    return render_template("auth/forgot.html", form=form), 400 if form.errors else 200


@bp.route("/password/reset/<token>")
@public
def reset_link(token: str):
    """The emailed link: keep the token server-side and move to an address without it."""
    session["reset_token"] = token[:100]
    return redirect(url_for("auth.reset_password"), code=303)


@bp.route("/password/reset", methods=["GET", "POST"])
@public
@limiter.limit(_sign_in_limit, methods=["POST"])
def reset_password():
    """Choose a new password with the token the emailed link left in the session."""
    from app.auth import tokens

    raw = session.get("reset_token")
    if tokens.find_usable(raw, "reset") is None:
        return render_template("auth/reset_invalid.html"), 400
    owner = services.reset_token_owner(raw)
    # Someone the school invited by import never ticked the policy box: they do it here.
    first_time = not ledger.has_accepted_a_version(owner.id)
    form = forms.FirstPasswordForm() if first_time else forms.NewPasswordForm()
    if form.is_submitted():
        valid = form.validate()
        # Checked even when another field failed, so every problem shows at once.
        problems = passwords.problems(form.password.data or "", email=owner.email, name=owner.name)
        if problems and not form.password.errors:
            form.password.errors.append(problems[0])
        if valid and not problems:
            services.reset_password(raw, form.password.data)
            if first_time:
                ledger.record_acceptance(owner)
            db.session.commit()
            session.pop("reset_token", None)
            flash(_("Your password is changed. Sign in with the new one."), "success")
            return redirect_after_post(url_for("auth.sign_in"))
    return render_template("auth/reset.html", form=form, first_time=first_time), 400 if form.errors else 200


def _account_page(*, block: str = "content", target: str = "main", status: int = 200, **submitted):
    """The account page with fresh forms, except the one just submitted (kept with its errors)."""
    account_forms: dict[str, GuardedForm] = {
        "name_form": forms.ChangeNameForm(prefix="nm", data={"name": current_user.name}),
        "password_form": forms.ChangePasswordForm(prefix="pw"),
        "email_form": forms.ChangeEmailForm(prefix="em"),
        "join_form": forms.JoinAnotherSchoolForm(prefix="js"),
        "language_form": _language_form(data={"language": current_user.language or ""}),
    }
    account_forms.update(submitted)
    return render("auth/account.html", block=block, target=target, status=status, **account_forms)


def _language_form(**kwargs) -> forms.LanguageForm:
    """The account's language form, offering the current school's default first."""
    school = g.get("school")
    default = school.default_language if school is not None else "en"
    return forms.LanguageForm(prefix="lg", school_default=default, **kwargs)


@bp.route("/account")
@signed_in
def account():
    """The person's own account: password, email, schools."""
    return _account_page()


@bp.route("/account/password", methods=["POST"])
@signed_in
@limiter.limit(_sign_in_limit)
def change_password():
    """Change the password after re-entering the current one; other sessions end."""
    form = forms.ChangePasswordForm(prefix="pw")
    if form.validate_on_submit():
        if not _current_password_matches(form.current_password):
            pass  # the field says why
        elif problems := passwords.problems(
            form.password.data, email=current_user.email, name=current_user.name
        ):
            form.password.errors.append(problems[0])
        else:
            services.change_password(current_user, form.password.data)
            db.session.commit()
            flash(_("Password changed. You were signed out everywhere else."), "success")
            return redirect_after_post(url_for("auth.account"))
    return _account_page(block="password_form", target="password-section", status=400, password_form=form)


@bp.route("/account/name", methods=["POST"])
@signed_in
def change_name():
    """Change one's own name (every school of the account shows the new one)."""
    form = forms.ChangeNameForm(prefix="nm")
    if not form.validate_on_submit():
        return _account_page(block="name_form", target="name-section", status=400, name_form=form)
    if form.name.data != current_user.name:
        current_user.name = form.name.data
        db.session.commit()
    flash(_("Name saved."), "success")
    return redirect_after_post(url_for("auth.account"))


@bp.route("/account/language", methods=["POST"])
@signed_in
def change_language():
    """Keep the language of the person's pages and email (none: their school's default)."""
    form = _language_form()
    if not form.validate_on_submit():
        return _account_page(block="language_form", target="language-section", status=400, language_form=form)
    chosen = form.language.data or None
    current_user.language = chosen
    if chosen:
        session[SESSION_KEY] = chosen
    else:
        session.pop(SESSION_KEY, None)
    db.session.commit()
    refresh()  # this answer is already in the new language
    flash(_("Language saved."), "success")
    return redirect_after_post(url_for("auth.account"))


@bp.route("/account/email", methods=["POST"])
@signed_in
@limiter.limit(_sends_mail_limit)
def change_email():
    """Start an email change: re-enter the password, then confirm from the new address."""
    form = forms.ChangeEmailForm(prefix="em")
    if form.validate_on_submit():
        if not _current_password_matches(form.current_password):
            pass  # the field says why
        elif services.email_taken(form.new_email.data, by_other_than=current_user):
            form.new_email.errors.append(_("Use a different address for this account."))
        else:
            services.start_email_change(current_user, form.new_email.data)
            db.session.commit()
            flash(
                _("We sent a confirmation link to your new address. Your old one stays until you use it."),
                "success",
            )
            return redirect_after_post(url_for("auth.account"))
    return _account_page(block="email_form", target="email-section", status=400, email_form=form)


@bp.route("/account/email/confirm/<token>")
@public
def email_link(token: str):
    """The emailed confirmation link: keep the token server-side, show a button to confirm."""
    session["email_token"] = token[:100]
    return redirect(url_for("auth.confirm_email"), code=303)


@bp.route("/account/email/confirm", methods=["GET", "POST"])
@public
def confirm_email():
    """Confirm the new address with a button (mail scanners follow links; they don't press buttons)."""
    form = forms.ConfirmForm()
    if form.validate_on_submit():
        user = services.confirm_email_change(session.pop("email_token", ""))
        if user is None:
            return render_template("auth/email_invalid.html"), 400
        db.session.commit()
        flash(_("Your email address is changed."), "success")
        return redirect_after_post(
            url_for("auth.account") if current_user.is_authenticated else url_for("auth.sign_in")
        )
    if not session.get("email_token"):
        return render_template("auth/email_invalid.html"), 400
    return render_template("auth/email_confirm.html", form=form)


@bp.route("/schools/switch", methods=["POST"])
@signed_in
def switch_school():
    """Make another of the person's schools the current one."""
    school_id = optional_id(request.form.get("school_id"))
    if school_id is None or not services.switch_school(school_id):
        flash(_("You are not a member of that school."), "error")
    return redirect_after_post(url_for("main.home"))


@bp.route("/schools/join", methods=["POST"])
@signed_in
@limiter.limit(_sends_mail_limit)
def join_another_school():
    """A signed-in person asks to join one more school with its code."""
    form = forms.JoinAnotherSchoolForm(prefix="js")
    if form.validate_on_submit():
        school = services.school_by_code(form.invite_code.data)
        if school is None:
            form.invite_code.errors.append(_("We don't recognise this code. Check it with your school."))
        else:
            outcome = lifecycle.add_membership(current_user, school)
            if outcome.user is not None:
                db.session.commit()
                session["school_id"] = school.id
                flash(_("Your request to join is with the school."), "success")
                return redirect_after_post(url_for("main.home"))
            form.invite_code.errors.append(outcome.error)
    return _account_page(block="join_form", target="join-school-section", status=400, join_form=form)
