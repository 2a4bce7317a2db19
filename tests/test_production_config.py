"""Production refuses to start wrong: each setting that would fail quietly later (mail from
no-reply@localhost, a sender that fails DMARC alignment, http:// links) stops the process with
one line naming the variable and what to set, from the flask command, worker.py and gunicorn
alike, without a traceback; the good configuration starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from config import CONFIG_EXIT_STATUS, ConfigError, ProductionConfig, dmarc_aligned
from tests.integration.processes import ROOT, child_env

GOOD = {
    "APP_ENV": "production",
    "SECRET_KEY": "production-like-secret-for-this-test-0123456789",
    "PUBLIC_URL": "https://school.example.org",
    "MAIL_BACKEND": "mailgun",
    "MAILGUN_API_KEY": "key-test",
    "MAILGUN_DOMAIN": "mg.example.org",
    "MAIL_FROM": "Maple School <no-reply@mg.example.org>",
    "REDIS_URL": "redis://127.0.0.1:6379/15",  # nothing here connects to it
}
# Each bad setting, and the words its one line must say (the variable and what to set).
REFUSED = {
    "MAIL_FROM unset": ({"MAIL_FROM": None}, ["MAIL_FROM must be set", "no-reply@mg.example.org"]),
    "MAIL_FROM not an address": ({"MAIL_FROM": "Maple School"}, ["MAIL_FROM must be a name and address"]),
    "MAIL_FROM at another domain": (
        {"MAIL_FROM": "Maple <no-reply@example.com>"},
        ["MAIL_FROM's domain (example.com) must be MAILGUN_DOMAIN (mg.example.org)", "DMARC"],
    ),
    "MAIL_FROM at a look-alike": (
        {"MAIL_FROM": "no-reply@evil-mg.example.org"},
        ["MAIL_FROM's domain (evil-mg.example.org)"],
    ),
    "PUBLIC_URL http": (
        {"PUBLIC_URL": "http://school.example.org"},
        ["PUBLIC_URL must be the site's https:// address", "'http://school.example.org'"],
    ),
    "PUBLIC_URL without a host": ({"PUBLIC_URL": "https://"}, ["PUBLIC_URL must be the site's https://"]),
    "PUBLIC_URL unset": ({"PUBLIC_URL": None}, ["PUBLIC_URL must be set in production"]),
    "SECRET_KEY unset": ({"SECRET_KEY": None}, ["SECRET_KEY must be set in production", "token_urlsafe"]),
    "MAIL_BACKEND unset": ({"MAIL_BACKEND": None}, ["MAIL_BACKEND must be set in production: mailgun"]),
    "MAILGUN_DOMAIN unset": (
        {"MAILGUN_DOMAIN": None},
        ["MAILGUN_DOMAIN must be set when MAIL_BACKEND=mailgun"],
    ),
    "MAILGUN_API_KEY unset": ({"MAILGUN_API_KEY": None}, ["MAILGUN_API_KEY must be set when MAIL_BACKEND"]),
    # Jobs would run inside requests: forgot-password would time known addresses apart.
    "REDIS_URL unset": ({"REDIS_URL": None}, ["REDIS_URL must be set in production", "worker.py"]),
}


def _environment(monkeypatch, changes: dict[str, str | None]) -> None:
    for name, value in {**GOOD, **changes}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_the_good_configuration_starts_with_the_values_it_was_given(monkeypatch):
    _environment(monkeypatch, {})
    config = ProductionConfig()
    assert GOOD["MAIL_FROM"] == config.MAIL_FROM
    assert (config.MAIL_BACKEND, config.MAILGUN_DOMAIN) == ("mailgun", "mg.example.org")
    assert config.PUBLIC_URL == "https://school.example.org"


@pytest.mark.parametrize("case", REFUSED)
def test_each_bad_setting_is_refused_with_one_line_saying_what_to_set(monkeypatch, case):
    changes, words = REFUSED[case]
    _environment(monkeypatch, changes)
    with pytest.raises(ConfigError) as refused:
        ProductionConfig()
    [line] = str(refused.value).splitlines()
    for word in words:
        assert word in line, (case, line)


def test_every_problem_is_named_at_once(monkeypatch):
    _environment(
        monkeypatch, {"PUBLIC_URL": "http://school.example.org", "MAIL_FROM": None, "SECRET_KEY": None}
    )
    with pytest.raises(ConfigError) as refused:
        ProductionConfig()
    lines = str(refused.value).splitlines()
    assert [line.split()[0] for line in lines] == ["SECRET_KEY", "PUBLIC_URL", "MAIL_FROM"]


@pytest.mark.parametrize(
    "mail_from",
    [
        "no-reply@mg.example.org",  # the sending domain itself
        "Maple School <no-reply@example.org>",  # the domain it belongs to
        "no-reply@news.mg.example.org",  # a subdomain of it
        "Maple <No-Reply@MG.Example.ORG.>",  # case and a trailing dot do not matter
    ],
)
def test_a_sender_aligned_with_the_mailgun_domain_is_accepted(monkeypatch, mail_from):
    _environment(monkeypatch, {"MAIL_FROM": mail_from})
    assert mail_from == ProductionConfig().MAIL_FROM


def test_alignment_is_the_organisational_domain_relation_and_no_looser():
    assert dmarc_aligned("example.org", "mg.example.org") and dmarc_aligned("mg.example.org", "example.org")
    assert not dmarc_aligned("example.org.evil.test", "example.org")
    assert not dmarc_aligned("badexample.org", "example.org")
    # Siblings would pass DMARC, but telling them from strangers needs the Public Suffix List.
    assert not dmarc_aligned("news.example.org", "mg.example.org")


def test_other_backends_in_production_need_no_mailgun_settings(monkeypatch):
    _environment(
        monkeypatch,
        {"MAIL_BACKEND": "devmailbox", "MAIL_FROM": None, "MAILGUN_DOMAIN": None, "MAILGUN_API_KEY": None},
    )
    assert ProductionConfig().MAIL_BACKEND == "devmailbox"


# --- the real processes -------------------------------------------------------------------------

PROCESSES = {
    "flask": [sys.executable, "-m", "flask", "--app", "app:create_app", "routes"],
    "worker.py": [sys.executable, "worker.py"],
    "gunicorn": [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "gunicorn.conf.py",
        "--bind",
        "127.0.0.1:0",
        "app:create_app()",
    ],
}


def _run(command: list[str], tmp_path, changes: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = child_env(f"sqlite:///{tmp_path / 'prod.db'}", "", tmp_path, public_url=GOOD["PUBLIC_URL"])
    env.pop("REDIS_URL")
    for name, value in {**GOOD, **changes}.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("process", PROCESSES)
def test_each_process_refuses_with_the_message_and_no_traceback(tmp_path, process):
    done = _run(PROCESSES[process], tmp_path, {"MAIL_FROM": "no-reply@example.com"})
    assert done.returncode == CONFIG_EXIT_STATUS, (done.stdout, done.stderr)
    assert done.stderr.count("Not starting: the configuration needs fixing.") == 1, done.stderr
    assert "MAIL_FROM's domain (example.com) must be MAILGUN_DOMAIN" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    if process == "gunicorn":
        assert "Listening at" not in done.stderr  # refused in the master, before binding or forking


def test_a_mail_backend_setting_the_config_cannot_check_is_refused_the_same_way(tmp_path):
    done = _run(PROCESSES["flask"], tmp_path, {"MAILGUN_REGION": "mars"})
    assert done.returncode == CONFIG_EXIT_STATUS
    assert "MAILGUN_REGION must be one of us, eu; got 'mars'." in done.stderr
    assert "Traceback" not in done.stderr


def test_the_flask_command_starts_with_the_good_configuration(tmp_path):
    done = _run(PROCESSES["flask"], tmp_path, {})
    assert done.returncode == 0, done.stderr
    assert "webhooks.mailgun" in done.stdout


def test_the_deploy_manifest_asks_for_every_setting_production_requires():
    """app.json (Heroku's deploy button) asks for each variable the good configuration sets,
    or fills it in itself; APP_ENV is production on any dyno."""
    document = json.loads((ROOT / "app.json").read_text())
    manifest = document["env"]
    # The Heroku Redis add-on sets REDIS_URL itself.
    assert any(addon["plan"].startswith("heroku-redis") for addon in document["addons"])
    for name in set(GOOD) - {"APP_ENV", "REDIS_URL"}:
        entry = manifest[name]
        assert entry.get("required", True) or "value" in entry or "generator" in entry, name
    assert "https://" in manifest["PUBLIC_URL"]["description"]
    assert "MAILGUN_DOMAIN" in manifest["MAIL_FROM"]["description"]
