"""Every user-facing string in the templates goes through gettext (issue 14).

Each template is parsed with the app's own Jinja environment, so ``{% trans %}`` blocks and
``_()`` calls are already gettext calls in the tree; whatever literal text is left outside
them, once HTML tags, comments, entities and whitespace are stripped, would reach a Spanish
or Arabic reader in English. Literal ``title``, ``aria-label``, ``placeholder`` and ``alt``
values are read aloud or shown too, so they count, and so do prose string constants that a
template prints (``{{ 'Whole school' if ... }}``, a dict of error texts).

``I18N_LINT_DIRS=consent,classes`` limits a local run to some top-level folders; the suite
always checks every template.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from flask import Flask
from jinja2 import nodes

GETTEXT = frozenset({"_", "gettext", "ngettext", "pgettext", "npgettext", "lazy_gettext"})
SKIPPED_DIRS = {
    # Pages for developers on a development server only; never shown to a school.
    "dev": "developer-only pages (dev mailbox), English on purpose",
}
# (template glob, exact literal) -> why it may stay as written.
ALLOWED = {
    ("*", "Join Our Class"): "the product name is a brand, the same in every language",
    ("consent/cookies.html", "_ga_…"): "a cookie's name, as the browser shows it",
    ("consent/cookies.html", "_ga"): "a cookie's name, as the browser shows it",
}
ATTRIBUTES = ("title", "aria-label", "placeholder", "alt")
LETTER = re.compile(r"[^\W\d_]")
PROSE = re.compile(r"[^\W\d_]{2,}\s|^[A-Z][a-z]")
HOLE = "\x00"  # stands for anything Jinja prints, so tags around it still strip whole
RUN = re.compile(r"[^\s\x00]+(?:[ \t]+[^\s\x00]+)*")  # words on one line, up to a hole
TAG = re.compile(r"<[^<>]*>")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")
ATTRIBUTE = re.compile(r"\s(" + "|".join(ATTRIBUTES) + r""")\s*=\s*("([^"]*)"|'([^']*)')""", re.IGNORECASE)
# Parents through which a constant is printed as it is (rather than used as a key, a URL
# endpoint, a filter argument, a comparison...).
PRINTED_THROUGH = (
    nodes.Output,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Tuple,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Assign,
    nodes.For,
    nodes.Or,
    nodes.And,
)


@dataclass
class Finding:
    """One untranslated string: where it is and what it says."""

    template: str
    line: int
    text: str

    def __str__(self) -> str:
        """'consent/policy.html:12: Coming: version'."""
        return f"{self.template}:{self.line}: {self.text}"


def _is_gettext(node: nodes.Node) -> bool:
    """A call of one of the gettext family, as ``_()`` and ``{% trans %}`` both become."""
    return isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name in GETTEXT


def _segments(node: nodes.Node) -> Iterator[tuple[str, int]]:
    """The template's literal text in source order, with a hole for everything printed."""
    if isinstance(node, nodes.Output):
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                yield child.data, child.lineno
            else:
                yield HOLE, child.lineno
        return
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Expr):
            continue  # tests, loop targets, call arguments: not page text
        yield from _segments(child)


def _allowed(template: str, text: str) -> bool:
    """True when, less the literals the allowlist grants this template, no letter is left."""
    for pattern, literal in ALLOWED:
        if PurePosixPath(template).match(pattern):
            text = text.replace(literal, "")
    return not LETTER.search(text.replace(HOLE, ""))


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    """Replace each match with spaces of the same length, so offsets keep their line."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def text_findings(template: str, tree: nodes.Template) -> list[Finding]:
    """Letters left outside gettext once markup is stripped, and literal read-aloud attributes."""
    text, lines = "", []
    for data, lineno in _segments(tree):
        for offset, char in enumerate(data):
            lines.append(lineno + data.count("\n", 0, offset))
            text += char
    findings = []
    text = _blank(text, COMMENT)
    for tag in TAG.finditer(text):
        for attribute in ATTRIBUTE.finditer(tag.group(0)):
            value = attribute.group(3) if attribute.group(3) is not None else attribute.group(4)
            if LETTER.search(value.replace(HOLE, "")) and not _allowed(template, value):
                line = lines[tag.start() + attribute.start()]
                findings.append(Finding(template, line, attribute.group(0).strip().replace(HOLE, "{{…}}")))
    text = _blank(_blank(text, TAG), ENTITY)
    by_line: dict[int, list[str]] = {}
    for run in RUN.finditer(text):
        if LETTER.search(run.group(0)) and not _allowed(template, run.group(0)):
            by_line.setdefault(lines[run.start()], []).append(run.group(0))
    findings += [Finding(template, line, " … ".join(runs)) for line, runs in by_line.items()]
    return findings


def _child_printed(node: nodes.Node, field: str, printed: bool) -> bool:
    """Whether what sits in this field of node reaches the page as it is."""
    if isinstance(node, nodes.Output):
        return True
    if isinstance(node, nodes.Assign):
        return field == "node"
    if isinstance(node, nodes.For):
        return field == "iter"
    if isinstance(node, nodes.CondExpr) and field == "test":
        return False
    if isinstance(node, nodes.Pair) and field == "key":
        return False
    return printed and isinstance(node, PRINTED_THROUGH)


def _printed_constants(node: nodes.Node, printed: bool) -> Iterator[nodes.Const]:
    """String constants that reach the page as they are, outside any gettext call."""
    if _is_gettext(node):
        return
    if isinstance(node, nodes.Const) and printed and isinstance(node.value, str):
        yield node
        return
    for field, value in node.iter_fields():
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, nodes.Node):
                yield from _printed_constants(child, _child_printed(node, field, printed))


def constant_findings(template: str, tree: nodes.Template) -> list[Finding]:
    """Prose constants printed without gettext ('Whole school', a dict of messages)."""
    return [
        Finding(template, const.lineno, repr(const.value))
        for const in _printed_constants(tree, printed=False)
        if PROSE.search(const.value) and not _allowed(template, const.value)
    ]


def templates_to_check(app: Flask) -> list[str]:
    """Every .html/.txt template, less the skipped folders (and I18N_LINT_DIRS, if set)."""
    only = {d for d in os.environ.get("I18N_LINT_DIRS", "").split(",") if d}
    names = []
    for name in app.jinja_env.list_templates(extensions=["html", "txt"]):
        top = name.split("/", 1)[0] if "/" in name else name
        if top in SKIPPED_DIRS or (only and top not in only):
            continue
        names.append(name)
    return names


def test_every_template_string_is_marked_for_translation(app: Flask) -> None:
    """No template shows a reader literal English outside gettext; all offenders at once."""
    names = templates_to_check(app)
    assert names, "no template found (check I18N_LINT_DIRS)"
    findings: list[Finding] = []
    for name in names:
        source, _filename, _uptodate = app.jinja_env.loader.get_source(app.jinja_env, name)
        tree = app.jinja_env.parse(source, name)
        findings += text_findings(name, tree) + constant_findings(name, tree)
    findings.sort(key=lambda f: (f.template, f.line))
    assert not findings, "Mark these for translation ({}):\n{}".format(
        len(findings), "\n".join(str(f) for f in findings)
    )


def test_the_lint_sees_what_it_should(app: Flask) -> None:
    """The checker flags bare text and attributes, and lets gettext and markup through."""
    source = (
        '<p title="Bare">{{ _("Fine") }} <b>Bare text</b></p>\n'
        "{% trans n=1 %}Also fine {{ n }}{% endtrans %} &amp; <!-- a comment -->\n"
        "<a href=\"{{ url_for('main.home') }}\" aria-label=\"{{ _('Fine') }}\">{{ x }}</a>\n"
        "{{ 'Whole school' if x else y }}{{ x|join(', ') }}"
    )
    tree = app.jinja_env.parse(source)
    found = [str(f) for f in text_findings("t.html", tree) + constant_findings("t.html", tree)]
    assert found == ['t.html:1: title="Bare"', "t.html:1: Bare text", "t.html:4: 'Whole school'"]


def test_the_scripts_messages_come_translated_on_the_flash_box(client) -> None:
    """app.js reads its four failure messages from #flashes, where the page put them translated."""
    page = client.get("/").get_data(as_text=True)
    box = html.unescape(page[page.index('<div id="flashes"') :].split(">", 1)[0])
    assert 'data-msg-rate-limited="Too many attempts. Please wait a minute and try again."' in box
    assert 'data-msg-forbidden="You don\'t have access to that."' in box
    assert 'data-msg-error="Something went wrong. Please try again."' in box
    assert "data-msg-send-error=\"We couldn't reach the server." in box
