"""Shared by the hostile-input tests (no tests here): two schools, an actor of every role, the
routes of ``url_map`` turned into requests, forms found by crawling, and table snapshots.

Everything is generic on purpose: a route or form added later is covered without editing this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from flask import Flask
from sqlalchemy import event, select

from app import tenancy
from app.extensions import db
from app.models import (
    Category,
    Enrollment,
    Family,
    Guardian,
    MailMessage,
    Membership,
    MembershipStatus,
    Role,
    School,
    SchoolClass,
    Student,
)
from app.permissions import Access, effective_permissions
from tests.conftest import HtmxClient, sign_in

ROLES = ("anonymous", "pending", "parent", "room_parent", "staff", "admin", "superadmin")
# Tables that any request may write (the session store), whoever asks.
ALWAYS_WRITTEN = frozenset({"web_session"})
# Values that must never come back as markup.
SCRIPT = '<script>alert("hostile-1")</script>'
IMG = '"><img src=x onerror=alert("hostile-2")>'
SVG = '\'><svg/onload=alert("hostile-3")>'
TEMPLATE = "{{ 7 * 7777 }}"  # 54439 in the page would mean the value was evaluated
TEMPLATE_RESULT = "54439"
REFLECTION_CHECKS = (SCRIPT, IMG, SVG)
MALICIOUS = (
    SCRIPT,
    IMG,
    SVG,
    TEMPLATE,
    "${7*7777}",
    "' OR '1'='1",
    "1; DROP TABLE membership; --",
    '1 UNION SELECT password_hash FROM "user" --',
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "javascript:alert(1)",
    "a\x00b",
    "\x00",
    "-1",
    "0",
    "99999999999999999999999",
    "1e309",
    "NaN",
    "",
    " ",
    "\u202e\u200b名前🙂",
    "%00",
    "\r\nSet-Cookie: injected=1",
)
BIG = "x" * 100_000


@dataclass
class Side:
    """One school and the people, rows and words that belong to it."""

    school: School
    actors: dict[str, Membership] = field(default_factory=dict)
    applicant: Membership | None = None
    ids: dict[str, int] = field(default_factory=dict)  # table name -> one row's id
    markers: tuple[str, ...] = ()


@dataclass
class World:
    mine: Side
    other: Side

    def ids_for(self, side: Side) -> dict[str, int]:
        return side.ids


def build_side(make_school, make_member, label: str) -> Side:
    """A school with one member of every role, a pending applicant, a class, a family and a message."""
    school = make_school(name=f"{label} Academy", code=f"{label.upper()}-CODE")
    side = Side(school=school)
    for role in ("parent", "room_parent", "staff", "admin", "superadmin"):
        side.actors[role] = make_member(
            school,
            role=Role(role),
            name=f"{label} {role.title().replace('_', '')}",
            email=f"{role}@{label.lower()}.example",
        )
    side.actors["pending"] = make_member(
        school,
        status=MembershipStatus.PENDING,
        name=f"{label} Waiting",
        email=f"pending@{label.lower()}.example",
    )
    side.applicant = make_member(
        school,
        status=MembershipStatus.PENDING,
        name=f"{label} Applicant",
        email=f"applicant@{label.lower()}.example",
    )
    with tenancy.bound(school.id):
        school_class = SchoolClass(name=f"{label} Owls", grade="2", school_year="2026-27")
        family = Family(name=f"{label} Family")
        db.session.add_all([school_class, family])
        db.session.flush()
        guardian = Guardian(family_id=family.id, membership_id=side.actors["parent"].id)
        student = Student(family_id=family.id, first_name=f"{label}kid", last_name=f"{label}son")
        db.session.add_all([guardian, student])
        db.session.flush()
        enrollment = Enrollment(student_id=student.id, class_id=school_class.id)
        message = MailMessage(
            school_id=school.id,
            category=Category.SCHOOL_ANNOUNCEMENTS,
            template="announcement",
            subject=f"{label} secret subject",
            text_body=f"{label} secret body",
            created_by_id=side.actors["admin"].user_id,
            audience_label=f"{label} everyone",
            source_markdown=f"{label} secret body",
        )
        db.session.add_all([enrollment, message])
        db.session.commit()
        side.ids = {
            "school_class": school_class.id,
            "family": family.id,
            "guardian": guardian.id,
            "student": student.id,
            "enrollment": enrollment.id,
            "membership": side.applicant.id,
            "mail_message": message.id,
        }
    side.markers = (label,)
    return side


def build_world(make_school, make_member) -> World:
    """My school (Alder) and another school (Zanzibar) whose data must never reach my actors."""
    return World(
        mine=build_side(make_school, make_member, "Alder"),
        other=build_side(make_school, make_member, "Zanzibar"),
    )


def signed_in_client(app: Flask, side: Side, role: str, *, https: bool = False) -> HtmxClient:
    """A client signed in as ``role`` of ``side`` (anonymous: no sign-in).

    ``https``: requests say they came over TLS, so Secure cookies (production) are kept and sent,
    with the same-origin Referer that Flask-WTF requires of forms over https.
    """
    client = app.test_client()
    if https:
        client.environ_base["wsgi.url_scheme"] = "https"
        client.environ_base["HTTP_REFERER"] = "https://localhost/"
    if role != "anonymous":
        response = sign_in(client, side.actors[role].user.email)
        assert response.status_code in (302, 303), (role, response.status_code)
    return client


# -- who may reach what ----------------------------------------------------------------------------


def declared_access(app: Flask, endpoint: str) -> tuple[Access | None, tuple[str, ...]]:
    view = app.view_functions.get(endpoint)
    return getattr(view, "access", None), getattr(view, "access_permissions", ())


def may_reach(app: Flask, endpoint: str, side: Side, role: str) -> bool:
    """Does the endpoint's declaration let this actor in? (mirrors permissions.enforce_access)"""
    access, needed = declared_access(app, endpoint)
    if access is Access.PUBLIC:
        return True
    if role == "anonymous" or access is None:
        return False
    if access is Access.SIGNED_IN:
        return True
    if access is Access.PLATFORM:
        return False  # no actor here has a platform role
    membership = side.actors[role]
    if not membership.is_approved:
        return False
    if access is Access.MEMBER:
        return True
    with tenancy.bound(side.school.id):
        fresh = db.session.get(Membership, membership.id)
        allowed = effective_permissions(fresh)
    return all(p in allowed for p in needed)


# -- routes as requests ----------------------------------------------------------------------------

_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-z]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


# Stems that more than one table ends with, and the table the routes' argument names.
AMBIGUOUS_STEMS = {"request": "support_request"}  # no route takes a password_reset_request


def table_for_argument(name: str) -> str | None:
    """``class_id`` -> ``school_class``, ``membership_id`` -> ``membership``: a table whose name
    is the argument's stem or the one table that ends with ``_<stem>`` (else AMBIGUOUS_STEMS)."""
    if not name.endswith("_id"):
        return None
    stem = name[: -len("_id")]
    tables = [t.name for t in db.metadata.sorted_tables]
    if stem in tables:
        return stem
    ending = [table for table in tables if table.endswith("_" + stem)]
    if len(ending) > 1:
        return AMBIGUOUS_STEMS.get(stem)  # None: an unknown kind, which the tenant matrix refuses
    return ending[0] if ending else None


def int_arguments(rule) -> list[str]:
    return [m["name"] for m in _ARGUMENT.finditer(rule.rule) if m["converter"] == "int"]


def fill_rule(rule, ids: dict[str, int], strings: str = "x") -> str:
    """The rule's path with each int argument replaced by the id of a row of its table."""

    def replace(match: re.Match) -> str:
        if match["converter"] == "int":
            table = table_for_argument(match["name"])
            return str(ids.get(table, next(iter(ids.values()))))
        if match["converter"] == "path":
            return "css/app.css"
        return strings

    return _ARGUMENT.sub(replace, rule.rule)


def interesting_rules(app: Flask, method: str):
    """Every rule that answers ``method``, static files aside."""
    for rule in app.url_map.iter_rules():
        if method in rule.methods and rule.endpoint != "static":
            yield rule


# -- forms found by reading pages ---------------------------------------------------------------------


@dataclass
class FormTarget:
    """Something a page lets a person send: a form, or an htmx control."""

    method: str
    path: str
    fields: dict[str, str]  # name -> the value the page put there
    file_fields: tuple[str, ...] = ()
    htmx_target: str | None = None

    @property
    def key(self) -> tuple:
        return (self.method, self.path, tuple(sorted(self.fields)), self.htmx_target)


class _FormParser(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.found: list[FormTarget] = []
        self._form: FormTarget | None = None
        self._forms_fields: dict[str, str] = {}
        self._files: list[str] = []
        self._select: str | None = None

    def _target(self, attrs: dict, method: str, url: str, fields: dict) -> FormTarget | None:
        path = urlsplit(urljoin(self.base, url or self.base))
        if path.netloc not in ("", "localhost"):
            return None
        full = path.path + (f"?{path.query}" if path.query else "")
        hx_target = (attrs.get("hx-target") or "").lstrip("#") or None
        return FormTarget(method=method.upper(), path=full, fields=dict(fields), htmx_target=hx_target)

    def handle_starttag(self, tag, attrs_list):
        # htmx reads data-hx-* (valid HTML) as it reads hx-*: one name for both here.
        attrs = {
            (k.removeprefix("data-") if k.startswith("data-hx-") else k): (v or "") for k, v in attrs_list
        }
        for verb in ("post", "put", "patch", "delete", "get"):
            if f"hx-{verb}" in attrs and tag != "form":
                named = {attrs["name"]: attrs.get("value", "")} if attrs.get("name") else {}
                target = self._target(attrs, verb, attrs[f"hx-{verb}"], named)
                if target:
                    target.htmx_target = target.htmx_target or attrs.get("id")
                    self.found.append(target)
        if tag == "form":
            method = attrs.get("method", "get")
            url = attrs.get("action", "")
            for verb in ("post", "get"):
                if f"hx-{verb}" in attrs:
                    method, url = verb, attrs[f"hx-{verb}"]
            self._form = self._target(attrs, method, url, {})
            if self._form and "hx-target" not in attrs and any(k.startswith("hx-") for k in attrs):
                self._form.htmx_target = attrs.get("id")
            self._files = []
        elif self._form is not None and tag in ("input", "textarea", "select", "button"):
            name = attrs.get("name")
            if not name:
                return
            if tag == "input" and attrs.get("type") == "file":
                self._files.append(name)
                return
            if tag == "input" and attrs.get("type") in ("checkbox", "radio") and name in self._form.fields:
                return
            self._form.fields[name] = attrs.get("value", "y" if attrs.get("type") == "checkbox" else "")
            if tag == "select":
                self._select = name
        elif tag == "option" and self._form is not None and self._select and attrs.get("value"):
            self._form.fields.setdefault(self._select, "")
            if not self._form.fields[self._select]:
                self._form.fields[self._select] = attrs["value"]

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        if tag == "form" and self._form is not None:
            self._form.file_fields = tuple(self._files)
            self.found.append(self._form)
            self._form = None


def forms_on(html: str, base: str) -> list[FormTarget]:
    parser = _FormParser(base)
    parser.feed(html)
    return parser.found


def crawl_forms(client: HtmxClient, start_paths: list[str]) -> list[FormTarget]:
    """GET every start path as this client and collect the forms and htmx controls on them."""
    found: dict[tuple, FormTarget] = {}
    for path in start_paths:
        response = client.get(path)
        if response.status_code != 200 or "html" not in (response.mimetype or ""):
            response.close()
            continue
        for target in forms_on(response.get_data(as_text=True), path):
            found.setdefault(target.key, target)
        response.close()
    return list(found.values())


# -- snapshots ------------------------------------------------------------------------------------------


def snapshot(exclude: frozenset[str] = ALWAYS_WRITTEN) -> dict[str, list[tuple]]:
    """Every row of every table (Core, on its own connection: no tenancy filter, nothing cached)."""
    rows: dict[str, list[tuple]] = {}
    with db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            if table.name in exclude:
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            rows[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return rows


def changed_tables(before: dict, after: dict) -> set[str]:
    return {name for name in before if before[name] != after.get(name)}


def rows_of_school(snap: dict[str, list[tuple]], school_id: int) -> dict[str, list[tuple]]:
    """The rows of one school in a snapshot: its own row, and rows whose school_id is it."""
    result: dict[str, list[tuple]] = {}
    for table in db.metadata.sorted_tables:
        if table.name not in snap:
            continue
        names = [c.name for c in table.columns]
        if table.name == "school":
            index = names.index("id")
        elif "school_id" in names:
            index = names.index("school_id")
        else:
            continue
        result[table.name] = [row for row in snap[table.name] if row[index] == school_id]
    # The accounts of the school's members (names, addresses, password hashes, active flags).
    membership_columns = [c.name for c in db.metadata.tables["membership"].columns]
    user_index = membership_columns.index("user_id")
    member_users = {row[user_index] for row in result.get("membership", [])}
    users = db.metadata.tables["user"]
    index = [c.name for c in users.columns].index("id")
    result["user"] = [row for row in snap.get("user", []) if row[index] in member_users]
    return result


_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)
_SET_COLUMNS = re.compile(r"\bSET\s+(.*?)\s+WHERE\b", re.IGNORECASE | re.DOTALL)
# Writes only these permissions allow, whatever route makes them (a route declared too weakly
# is caught here, where the declared-access check would let it through). "*": any column.
DECISIONS = {"approved", "rejected"}
GUARDED: dict[tuple[str, str], frozenset[str]] = {
    ("membership", "role"): frozenset({"members.manage"}),
    ("membership", "status"): frozenset({"members.approve", "members.manage"}),
    ("permission_change", "*"): frozenset({"members.permissions"}),
    ("school", "*"): frozenset({"settings.edit"}),
    ("school_class", "*"): frozenset({"classes.manage", "import.run"}),
    # Lifting a member's email suppression (the webhook, which also writes them, is not signed in).
    ("suppression", "*"): frozenset({"members.manage"}),
    ("suppression_lift", "*"): frozenset({"members.manage"}),
}


@dataclass
class Write:
    """One INSERT, UPDATE or DELETE: its table, the columns it sets (UPDATE) and its parameters."""

    verb: str
    table: str
    columns: tuple[str, ...]
    parameters: tuple

    def guarded_by(self) -> list[frozenset[str]]:
        """The permission sets (any one of each suffices) this write needs."""
        needed = []
        for (table, column), permissions in GUARDED.items():
            if table != self.table:
                continue
            if column == "*" or (self.verb == "UPDATE" and column in self.columns):
                needed.append(permissions)
        if self.table == "membership" and not DECISIONS & set(map(str, self.parameters)):
            # A status change that is not a decision on a request (closing one's own account).
            needed = [p for p in needed if p is not GUARDED[("membership", "status")]]
        return needed


def _flat_values(parameters) -> tuple:
    """Every parameter value of one statement (a dict, a sequence, or many of either)."""
    if isinstance(parameters, dict):
        return tuple(parameters.values())
    if isinstance(parameters, list | tuple):
        values: list = []
        for item in parameters:
            values.extend(_flat_values(item) if isinstance(item, dict | list | tuple) else (item,))
        return tuple(values)
    return ()


class WriteRecorder:
    """The writes made through one engine while it listens (far cheaper than snapshots)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.writes: list[Write] = []

    @property
    def tables(self) -> list[str]:
        return [write.table for write in self.writes]

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        match = _WRITE.match(statement)
        if not match or match[2] in ALWAYS_WRITTEN:
            return
        verb = match[1].split()[0].upper()
        columns: tuple[str, ...] = ()
        if verb == "UPDATE" and (found := _SET_COLUMNS.search(statement)):
            columns = tuple(part.split("=")[0].strip().strip('"') for part in found[1].split(","))
        self.writes.append(Write(verb, match[2], columns, _flat_values(parameters)))

    def __enter__(self) -> WriteRecorder:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def overreaching(writes: list[Write], permissions: frozenset[str]) -> list[Write]:
    """Writes the actor's permissions do not allow."""
    return [w for w in writes if any(not (needed & permissions) for needed in w.guarded_by())]


def permissions_of(side: Side, role: str) -> frozenset[str]:
    """What the actor may do in their school (nothing for strangers and people waiting)."""
    if role == "anonymous":
        return frozenset()
    with tenancy.bound(side.school.id):
        db.session.expire_all()
        return effective_permissions(db.session.get(Membership, side.actors[role].id))
