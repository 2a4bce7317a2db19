"""One template, two renderings: the whole page, or the block an htmx request targeted."""

from __future__ import annotations

from flask import current_app, get_flashed_messages, make_response, render_template, request
from markupsafe import escape


def wants_fragment(target: str) -> bool:
    """True for an htmx request aimed at element ``#target`` (not a boosted page or history restore)."""
    headers = request.headers
    return (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Target") == target
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def render_block(template_name: str, block_name: str, **context) -> str:
    """Render one named block of a template with the usual template context."""
    current_app.update_template_context(context)
    template = current_app.jinja_env.get_template(template_name)
    return "".join(template.blocks[block_name](template.new_context(context)))


def render(
    template_name: str,
    *,
    block: str,
    target: str,
    status: int = 200,
    oob_blocks: tuple[str, ...] = (),
    **context,
):
    """The page, or only ``block`` (plus flashes, out of band) when htmx targets ``#target``.

    ``oob_blocks``: more blocks of the page sent with the fragment, each one element marked
    ``hx-swap-oob`` (parts outside the target that follow it, such as a live region's neighbours).
    """
    if wants_fragment(target):
        body = "".join(render_block(template_name, name, **context) for name in (block, *oob_blocks))
        flashes = get_flashed_messages(with_categories=True)
        if flashes:
            body += render_template("macros/_flashes_oob.html", flashes=flashes)
        response = make_response(body, status)
    else:
        response = make_response(render_template(template_name, **context), status)
    response.vary.update(["HX-Request", "HX-Target"])
    return response


def redirect_after_post(location: str):
    """303 for a plain form; an HX-Redirect for htmx, so the browser does a full navigation."""
    if request.headers.get("HX-Request") == "true":
        response = make_response("", 204)
        response.headers["HX-Redirect"] = location
        return response
    response = make_response("", 303)
    response.headers["Location"] = location
    return response


def main_fragment(template_name: str, status: int, **context):
    """A whole page's content for htmx to put into <main> (with its title), whatever it targeted.

    Used when a request cannot be answered with the fragment it asked for (an expired form,
    cookies refused): swapping a whole page into a form would nest one page inside another.
    """
    title = render_block(template_name, "title", **context).strip()
    # The title comes translated from its template; the brand after it is a name, never translated.
    body = f"<title>{escape(title)} · Join Our Class</title>" + render_block(
        template_name, "content", **context
    )
    response = make_response(body, status)
    response.headers["HX-Retarget"] = "#main"
    response.headers["HX-Reswap"] = "innerHTML"
    return response
