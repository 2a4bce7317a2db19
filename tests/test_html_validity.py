"""Every page each role reaches is valid HTML for the W3C Nu HTML Checker (vnu).

The checker is the one the W3C runs (``vnu.jar``, from the ``vnu-jar`` npm package that
``package.json`` pins), run here on Java, once for all pages of a role. A page fails on any
error; warnings (such as "the type attribute is unnecessary") are left to taste. Partials are
fragments, not documents, so they are checked as the body of a minimal page.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import require_service
from tests.hostile_world import ROLES, build_world, signed_in_client
from tests.test_i18n_coverage import _Texts, reachable_pages

FRAGMENT_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fragment</title></head>'
    "<body>{}</body></html>"
)


JAR = Path(__file__).resolve().parents[1] / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"


def vnu_jar() -> Path | None:
    """The checker's jar (``npm ci`` installs it), when it and Java are there."""
    return JAR if JAR.exists() and shutil.which("java") else None


@pytest.fixture(scope="module")
def checker() -> Path:
    jar = vnu_jar()
    require_service("the W3C Nu HTML Checker", jar is not None, "npm ci (vnu-jar) and a Java runtime")
    assert jar is not None
    return jar


def validate(jar: Path, pages: dict[str, str], workdir: Path) -> list[str]:
    """The checker's errors for each page, as "path: line: message"."""
    files = {}
    for number, (where, html) in enumerate(sorted(pages.items())):
        path = workdir / f"page-{number}.html"
        path.write_text(html, encoding="utf-8")
        files[path.name] = where
    run = subprocess.run(
        [
            "java",
            "-Xss8m",
            "-jar",
            str(jar),
            "--format",
            "json",
            "--exit-zero-always",
            *map(str, workdir.glob("*.html")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(run.stderr or run.stdout)
    where = {
        uri: files.get(uri.rsplit("/", 1)[-1], uri) for uri in {str(m.get("url")) for m in report["messages"]}
    }
    return sorted(
        f"{where[str(m.get('url'))]}: {m.get('lastLine')}: {m['message']}"
        for m in report["messages"]
        if m.get("type") == "error" or m.get("subType") == "fatal"
    )


def pages_of(app, client, side, role) -> dict[str, str]:
    """Every page the role reaches and every htmx partial those pages load, as documents."""
    pages: dict[str, str] = {}
    partials: set[tuple[str, str]] = set()
    for path in reachable_pages(app, side, role):
        response = client.get(path)
        if response.status_code not in (200, 404) or response.mimetype != "text/html":
            continue
        html = response.get_data(as_text=True)
        pages[path] = html if "<html" in html else FRAGMENT_PAGE.format(html)
        parser = _Texts()
        parser.feed(html)
        partials.update(p for p in parser.partials if urlsplit(p[0]).netloc == "")
    for partial, target in sorted(partials):
        response = client.get(partial, headers={"HX-Request": "true", "HX-Target": target})
        if response.status_code == 200 and response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            pages[f"{partial} (htmx)"] = html if "<html" in html else FRAGMENT_PAGE.format(html)
    return pages


@pytest.mark.parametrize("role", ROLES)
def test_every_page_a_role_reaches_is_valid_html(app, make_school, make_member, checker, tmp_path, role):
    world = build_world(make_school, make_member)
    client = signed_in_client(app, world.mine, role)
    pages = pages_of(app, client, world.mine, role)
    assert len(pages) >= 3, f"{role} reached only {len(pages)} pages"
    errors = validate(checker, pages, tmp_path)
    assert not errors, f"{len(errors)} errors:\n" + "\n".join(errors)


def test_the_checker_finds_an_error(checker, tmp_path):
    """The check can fail: a duplicate id and an unknown attribute are reported."""
    page = FRAGMENT_PAGE.format('<p id="a">x</p><p id="a" hx-get="/">y</p>')
    errors = validate(checker, {"bad": page}, tmp_path)
    assert any("Duplicate ID" in e for e in errors), errors
    assert any("hx-get" in e for e in errors), errors
