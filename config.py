"""Configuration read from the environment, with embedded defaults for a laptop.

Nothing here needs a server: with no variables set the app uses SQLite under
``instance/``, runs jobs in-process after each commit and keeps mail in a
development mailbox. Production reads everything from environment variables.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("INSTANCE_PATH", BASE_DIR / "instance"))


class ConfigError(RuntimeError):
    """Raised when the environment cannot make a safe configuration."""


# The exit status of a process the environment misconfigures. gunicorn takes 4 from a worker
# as "App failed to load" and stops, instead of forking a new worker every second; the flask
# command and worker.py simply exit with it.
CONFIG_EXIT_STATUS = 4


def refuse_to_start(error: ConfigError) -> NoReturn:
    """End the process with what to set, one line per variable: an operator's message, not a traceback."""
    sys.stderr.write(f"Not starting: the configuration needs fixing.\n{error}\n")
    sys.stderr.flush()
    raise SystemExit(CONFIG_EXIT_STATUS) from None


def database_url(raw: str | None) -> str:
    """Normalise DATABASE_URL; Heroku still hands out the old ``postgres://`` scheme."""
    if not raw:
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{INSTANCE_DIR / 'app.db'}"
    for old in ("postgres://", "postgresql://"):
        if raw.startswith(old):
            return "postgresql+psycopg://" + raw[len(old) :]
    return raw


def engine_options(url: str) -> dict:
    """SQLite waits for a busy file (web, session store and jobs share it); PostgreSQL pings."""
    # hide_parameters: a failed statement's values (emails, names) stay out of error text and logs.
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15}, "hide_parameters": True}
    return {"pool_pre_ping": True, "hide_parameters": True}


def redis_options(url: str | None) -> dict:
    """Connection options for REDIS_URL; Heroku Redis serves TLS with a self-signed certificate."""
    if url and url.startswith("rediss://"):
        return {"ssl_cert_reqs": "none"}
    return {}


def development_secret_key() -> str:
    """Generate a secret key once and keep it under instance/, so sessions survive restarts."""
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    path = INSTANCE_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def env_flag(name: str, default: bool = False) -> bool:
    """Read a yes/no environment variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


class Config:
    """Settings shared by every environment."""

    ENV_NAME = "base"
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the server-side session
    WTF_CSRF_HEADERS = ["X-CSRFToken"]
    SESSION_COOKIE_NAME = "session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    PERMANENT_SESSION_LIFETIME = timedelta(days=14)
    REMEMBER_COOKIE_DURATION = timedelta(seconds=0)
    MAX_CONTENT_LENGTH = 16 * 1024 * 1024
    # Said explicitly: Flask-Limiter keeps the previous app's choice when the key is missing.
    RATELIMIT_ENABLED = True
    RATELIMIT_HEADERS_ENABLED = True
    # Per IP. Hundreds of parents sign in behind one school wifi at a school evening; accounts
    # are protected per (address, IP) pair and per address instead (app/auth/throttle.py).
    RATELIMIT_SIGN_IN = "300 per minute"
    # Per IP, for the forms that email a typed address (join, forgot password, change email):
    # a school evening's joins in a few minutes, without making us a mail cannon.
    RATELIMIT_SENDS_MAIL = "60 per minute"
    RATELIMIT_STRATEGY = "fixed-window"
    # A repeated form (a double click) waits this long (a request thread held) for the first answer before it
    # says "still being sent" (app/submissions.py); the first one is never run twice.
    FORM_REPEAT_WAIT_SECONDS = 3
    # A Redis outage must not lock everyone out: count in memory until it returns.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    PASSWORD_RESET_HOURS = 1
    EMAIL_CHANGE_HOURS = 24
    MAIL_FROM = os.environ.get("MAIL_FROM", "Join Our Class <no-reply@localhost>")
    MAIL_BACKEND = os.environ.get("MAIL_BACKEND", "devmailbox")
    SHOW_DEMO_ACCOUNTS = False
    DEV_MAILBOX = False
    HSTS = False
    BEHIND_PROXY = env_flag("BEHIND_PROXY")
    JOB_QUEUES = ("mail", "default")
    SWEEP_PENDING_AFTER = timedelta(minutes=5)
    # Compose writes up to this many deliveries in the request (one INSERT ... SELECT, ~30 ms);
    # a larger audience is written by the worker in chunks of MESSAGE_FANOUT_CHUNK people.
    MESSAGE_INLINE_RECIPIENTS = int(os.environ.get("MESSAGE_INLINE_RECIPIENTS", "1000"))
    MESSAGE_FANOUT_CHUNK = int(os.environ.get("MESSAGE_FANOUT_CHUNK", "25000"))
    # How often the worker runs the sweeper (worker.py reads this). With MAIL_LEASE_SECONDS it
    # bounds how long a killed worker's deliveries stand still: lease + provider timeout + this.
    SWEEP_EVERY_SECONDS = int(os.environ.get("SWEEP_EVERY_SECONDS", "10"))
    # The worker's heartbeat, idle or busy: it re-registers lost repeating jobs and takes over
    # a dead worker's scheduler, so this bounds both repairs. RQ's default (405 s idle) is far
    # too slow for that; 20 s costs three cheap Redis round trips a minute per worker.
    WORKER_HEARTBEAT_SECONDS = int(os.environ.get("WORKER_HEARTBEAT_SECONDS", "20"))
    # A warm shutdown lets the job in hand run this long, then requeues it: platforms SIGKILL
    # 30 s after SIGTERM (Heroku), which leaves 5 s to requeue it and leave.
    WORKER_SHUTDOWN_GRACE_SECONDS = int(os.environ.get("WORKER_SHUTDOWN_GRACE_SECONDS", "25"))
    # A send run's claim on its deliveries lasts this long, and is renewed before each provider
    # call for the call's timeout plus this much: the sweeper hands on only rows whose holder
    # can no longer be in the middle of a call (docs: app/mail/jobs.py).
    MAIL_LEASE_SECONDS = float(os.environ.get("MAIL_LEASE_SECONDS", "10"))
    SUPPORT_EMAIL = os.environ.get("SUPPORT_EMAIL", "")
    # Delays between attempts after a temporary failure: base * 2**(attempt-1), capped.
    MAIL_RETRY_BASE_SECONDS = float(os.environ.get("MAIL_RETRY_BASE_SECONDS", "30"))
    MAIL_RETRY_MAX_SECONDS = 3600
    # Temporary failures are retried this long after the first attempt, then failed: as long
    # as Mailgun itself keeps retrying a message it has accepted (72 hours).
    MAIL_GIVE_UP_AFTER = timedelta(hours=float(os.environ.get("MAIL_GIVE_UP_HOURS", "72")))
    MAILGUN_API_KEY = os.environ.get("MAILGUN_API_KEY")
    MAILGUN_DOMAIN = os.environ.get("MAILGUN_DOMAIN")
    MAILGUN_REGION = os.environ.get("MAILGUN_REGION", "us")
    MAILGUN_BASE_URL = os.environ.get("MAILGUN_BASE_URL")
    MAILGUN_WEBHOOK_SIGNING_KEY = os.environ.get("MAILGUN_WEBHOOK_SIGNING_KEY")
    MAILGUN_TRACKING = env_flag("MAILGUN_TRACKING")
    MAILGUN_TIMEOUT = float(os.environ.get("MAILGUN_TIMEOUT", "30"))
    # Mailgun's Events API is eventually consistent: an accepted batch may show late. A batch
    # whose answer was lost is re-sent (to those not shown accepted) only once its call's
    # deadline (timeout + MAIL_LEASE_SECONDS) plus this much has passed. Events nearly always
    # show within seconds; Mailgun's polling guide trusts a page only well after the fact, so
    # the default waits five minutes: a crash delays that batch by as much, and sends it once.
    MAILGUN_EVENTS_LAG_SECONDS = float(os.environ.get("MAILGUN_EVENTS_LAG_SECONDS", "300"))
    # An address whose inbound mail reaches us, for the mailto: part of List-Unsubscribe.
    MAIL_UNSUBSCRIBE_MAILTO = os.environ.get("MAIL_UNSUBSCRIBE_MAILTO")
    # Mailgun retries an unanswered webhook for about 8 hours (5 min ... 4 h apart) with the
    # timestamp, token and signature of the first try: older than this is refused as stale, and
    # tokens are remembered as long (a retry of one already taken is answered, not redone).
    WEBHOOK_MAX_AGE_SECONDS = 9 * 3600
    # A timestamp this far ahead of our clock is tolerated (clock skew), and no further.
    WEBHOOK_MAX_AHEAD_SECONDS = 5 * 60
    # Support requests go to Zendesk's Tickets API (email/token auth); unset: they wait, stored.
    ZENDESK_SUBDOMAIN = os.environ.get("ZENDESK_SUBDOMAIN")
    ZENDESK_EMAIL = os.environ.get("ZENDESK_EMAIL")
    ZENDESK_API_TOKEN = os.environ.get("ZENDESK_API_TOKEN")
    ZENDESK_BASE_URL = os.environ.get("ZENDESK_BASE_URL")  # overrides the subdomain's URL (tests)
    ZENDESK_TIMEOUT = float(os.environ.get("ZENDESK_TIMEOUT", "30"))
    SUPPORT_RETRY_BASE_SECONDS = float(os.environ.get("SUPPORT_RETRY_BASE_SECONDS", "30"))
    # Zendesk being down (5xx, 429, no answer) is retried this long after the request was
    # stored, then the request is marked failed: the same 72 hours as mail.
    SUPPORT_GIVE_UP_AFTER = timedelta(hours=float(os.environ.get("SUPPORT_GIVE_UP_HOURS", "72")))
    RATELIMIT_CONTACT = "5 per hour"
    # Pages and mail are in English, Spanish or Arabic (app/i18n); English when nothing else fits.
    BABEL_DEFAULT_LOCALE = "en"
    BABEL_TRANSLATION_DIRECTORIES = str(Path(__file__).parent / "app" / "translations")
    # A LibreTranslate-compatible API (a school may host its own); unset: announcements go out
    # only as written. Its key, if it needs one, is never logged.
    TRANSLATE_URL = os.environ.get("TRANSLATE_URL") or None
    TRANSLATE_API_KEY = os.environ.get("TRANSLATE_API_KEY") or None
    TRANSLATE_TIMEOUT = float(os.environ.get("TRANSLATE_TIMEOUT", "10"))
    # Google Analytics 4 measurement id (G-XXXXXXX); unset: no analytics at all (P5).
    GA_MEASUREMENT_ID = os.environ.get("GA_MEASUREMENT_ID") or None

    def __init__(self) -> None:
        self.SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("DATABASE_URL"))
        self.REDIS_URL = os.environ.get("REDIS_URL") or None
        self.REDIS_OPTIONS = redis_options(self.REDIS_URL)
        self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        self.RATELIMIT_STORAGE_OPTIONS = dict(self.REDIS_OPTIONS)
        self.SECRET_KEY = os.environ.get("SECRET_KEY") or self.fallback_secret_key()
        self.PUBLIC_URL = (os.environ.get("PUBLIC_URL") or self.default_public_url()).rstrip("/") or None
        self.SQLALCHEMY_ENGINE_OPTIONS = engine_options(self.SQLALCHEMY_DATABASE_URI)

    def fallback_secret_key(self) -> str:
        """Where SECRET_KEY is unset: development makes one; other environments refuse."""
        return development_secret_key()

    def default_public_url(self) -> str:
        """The site's address for links in emails sent by jobs (set PUBLIC_URL in production)."""
        return f"http://127.0.0.1:{os.environ.get('PORT', '5000')}"


class DevelopmentConfig(Config):
    """A laptop: embedded database, in-process jobs, the development mailbox."""

    ENV_NAME = "development"
    SHOW_DEMO_ACCOUNTS = True
    DEV_MAILBOX = True


class TestConfig(Config):
    """The test suite: CSRF stays on; databases come from TEST_DATABASE_URL."""

    ENV_NAME = "test"
    TESTING = True
    MAIL_BACKEND = "memory"
    SERVER_NAME = "localhost"
    MAIL_RETRY_BASE_SECONDS = 0.5
    # Sign-in keeps production's per-IP limit (tests/test_sign_in_limits.py signs in 200 times);
    # the mail-sending forms are held lower so their limit is reached in a few quick requests.
    RATELIMIT_SENDS_MAIL = "5 per minute"

    def __init__(self) -> None:
        super().__init__()
        # The suite's conftest always sets TEST_DATABASE_URL (an SQLite file by default):
        # the session store, a live server and a worker process need their own connections.
        self.SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("TEST_DATABASE_URL"))
        self.SQLALCHEMY_ENGINE_OPTIONS = engine_options(self.SQLALCHEMY_DATABASE_URI)
        self.REDIS_URL = None
        self.RATELIMIT_STORAGE_URI = "memory://"
        self.SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105 - tests only


class ProductionConfig(Config):
    """A Heroku-style host: everything from the environment, secure cookies, HSTS.

    It refuses to start with settings that would fail quietly later (ConfigError, one line per
    variable, each saying what to set): ``create_app`` turns that into a plain message and exit.
    """

    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    HSTS = True
    PREFERRED_URL_SCHEME = "https"

    def __init__(self) -> None:
        super().__init__()
        # Read now, not at import: the values checked are the values used.
        self.MAIL_BACKEND = os.environ.get("MAIL_BACKEND", "")
        self.MAIL_FROM = os.environ.get("MAIL_FROM", "")
        self.MAILGUN_API_KEY = os.environ.get("MAILGUN_API_KEY")
        self.MAILGUN_DOMAIN = os.environ.get("MAILGUN_DOMAIN")
        self.TRANSLATE_URL = os.environ.get("TRANSLATE_URL") or None
        self.TRANSLATE_API_KEY = os.environ.get("TRANSLATE_API_KEY") or None
        try:
            self.TRANSLATE_TIMEOUT = float(os.environ.get("TRANSLATE_TIMEOUT", "10"))
        except ValueError:
            self.TRANSLATE_TIMEOUT = 0.0  # refused below, naming the variable
        problems = production_problems(self)
        if problems:
            raise ConfigError("\n".join(problems))

    def fallback_secret_key(self) -> str:
        """Production never invents a key (sessions would break on every restart): left empty, refused."""
        return ""

    def default_public_url(self) -> str:
        """Production has no guess: left empty, refused (links in emails must name the real site)."""
        return ""


def production_problems(config: Config) -> list[str]:
    """What keeps this configuration from running in production, one line per variable."""
    problems = []
    if not config.SECRET_KEY:
        problems.append(
            "SECRET_KEY must be set in production: a long random value, e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'."
        )
    problems += _public_url_problems(config.PUBLIC_URL)
    if not config.REDIS_URL:
        # Without Redis, jobs would run inside web requests: forgot-password would take longer
        # for a known address than an unknown one, and the rate limits would be per process.
        problems.append(
            "REDIS_URL must be set in production: the job queue and the rate limits live in Redis "
            "(run `python worker.py` beside the web process)."
        )
    if not config.MAIL_BACKEND:
        # Without this, mail would be kept in the database and never sent.
        problems.append("MAIL_BACKEND must be set in production: mailgun (devmailbox sends nothing).")
    elif config.MAIL_BACKEND == "mailgun":
        problems += _mailgun_problems(config)
    problems += _translate_problems(config)
    return problems


def _translate_problems(config: Config) -> list[str]:
    """TRANSLATE_URL (optional) carries every announcement and the API key: https unless on loopback.

    The same rule as the mail and support providers' base URLs (app/providers.checked_base_url).
    The URL is not echoed: it may hold credentials.
    """
    if not config.TRANSLATE_URL:
        return []
    parts = urlsplit(config.TRANSLATE_URL.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return [
            "TRANSLATE_URL must be the translation service's https:// address, e.g. https://translate.example.org."
        ]
    problems = []
    if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        problems.append(
            "TRANSLATE_URL must use https (plain http only for a service on this machine, e.g. "
            "http://127.0.0.1:5000): announcements and TRANSLATE_API_KEY would cross the network "
            "in the clear."
        )
    if not config.TRANSLATE_TIMEOUT > 0:
        problems.append("TRANSLATE_TIMEOUT must be a positive number of seconds, e.g. 10.")
    return problems


def _public_url_problems(public_url: str | None) -> list[str]:
    """PUBLIC_URL is where every emailed link points: https, or List-Unsubscribe breaks RFC 8058."""
    example = "e.g. PUBLIC_URL=https://school.example.org"
    if not public_url:
        return [f"PUBLIC_URL must be set in production: the site's https:// address, {example}."]
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname:
        return [
            f"PUBLIC_URL must be the site's https:// address ({example}); got {public_url!r}. "
            "Links in emails and the one-click unsubscribe address (RFC 8058) must use https."
        ]
    return []


def _mailgun_problems(config: Config) -> list[str]:
    """MAIL_BACKEND=mailgun: the key, the sending domain, and a sender aligned with that domain."""
    problems = [
        f"{name} must be set when MAIL_BACKEND=mailgun ({what})."
        for name, what in (
            ("MAILGUN_API_KEY", "the domain's sending key, from Mailgun's dashboard"),
            ("MAILGUN_DOMAIN", "the sending domain set up in Mailgun, e.g. mg.example.org"),
        )
        if not getattr(config, name)
    ]
    sending = config.MAILGUN_DOMAIN or "mg.example.org"
    example = f"e.g. MAIL_FROM='Maple School <no-reply@{sending}>'"
    if not config.MAIL_FROM:
        return [
            *problems,
            f"MAIL_FROM must be set when MAIL_BACKEND=mailgun: the sender of every email, {example}.",
        ]
    address = parseaddr(config.MAIL_FROM)[1]
    domain = address.rpartition("@")[2] if "@" in address else ""
    if not domain:
        return [*problems, f"MAIL_FROM must be a name and address, {example}; got {config.MAIL_FROM!r}."]
    if config.MAILGUN_DOMAIN and not dmarc_aligned(domain, config.MAILGUN_DOMAIN):
        problems.append(
            f"MAIL_FROM's domain ({domain}) must be MAILGUN_DOMAIN ({config.MAILGUN_DOMAIN}), a domain it "
            f"belongs to, or one under it, {example}: otherwise the mail fails DMARC alignment, "
            "which Gmail and Yahoo require of bulk senders."
        )
    return problems


def dmarc_aligned(from_domain: str, sending_domain: str) -> bool:
    """Does a From: domain pass DMARC relaxed alignment with the domain Mailgun sends for?

    Mailgun signs with DKIM d=<MAILGUN_DOMAIN> and sends from a bounce address there (SPF).
    DMARC (RFC 7489, section 3.1) in relaxed mode asks that the From: domain and that domain
    share an organisational domain. Equal domains do, and so does a domain with one of its
    subdomains (mg.example.org with example.org, either way round), since nobody can send for
    a public suffix such as org or co.uk. Two siblings (news.example.org and mg.example.org)
    align too, but telling siblings from strangers under a shared suffix (a.co.uk, b.co.uk)
    takes the Public Suffix List; so we ask for the simpler relation, which never lets a
    misaligned pair through.
    """
    mine, theirs = (name.strip().rstrip(".").lower() for name in (from_domain, sending_domain))
    return mine == theirs or mine.endswith("." + theirs) or theirs.endswith("." + mine)


CONFIGS = {
    "development": DevelopmentConfig,
    "test": TestConfig,
    "production": ProductionConfig,
}


def config_from_env() -> Config:
    """Pick the config class named by APP_ENV (Heroku dynos default to production)."""
    default = "production" if os.environ.get("DYNO") else "development"
    name = os.environ.get("APP_ENV", default)
    if name not in CONFIGS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}; got {name!r}.")
    return CONFIGS[name]()
