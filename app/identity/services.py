"""Setting the school's identity: brand colour, crest upload and removal. Services flush, never
commit; the route commits once. Every change writes the audit log.

A crest is accepted by what the bytes are, never by the file's name or the browser's Content-Type:
Pillow must recognise PNG, JPEG or WebP and verify it; its size and sides must be within limits.
It is then decoded and encoded again from its pixels alone, which drops EXIF (GPS, camera, dates),
text chunks and colour profiles, and kept in the database.
"""

from __future__ import annotations

import hashlib
import io
import warnings

from flask_babel import gettext as _
from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import select

from app import audit
from app.extensions import db
from app.identity import colours
from app.models import School
from app.models.identity import SchoolCrest

MAX_CREST_BYTES = 512 * 1024
MIN_CREST_SIDE, MAX_CREST_SIDE = 64, 2048
# Pillow's format name -> the type the crest is served with.
CREST_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class Refused(ValueError):
    """The upload or value is not accepted; the message says why, in the reader's language."""


def set_brand_colour(school: School, colour: str | None) -> bool:
    """Set (or with None clear) the brand colour, already checked by the form; audited when changed."""
    if school.brand_colour == colour:
        return False
    audit.record(
        "settings.changed",
        target="Brand colour",
        changes={"brand_colour": [school.brand_colour or "", colour or ""]},
    )
    school.brand_colour = colour
    return True


def stylesheet_version(colour: str) -> str:
    """The brand stylesheet's cache-busting part: a hash of what it says."""
    return hashlib.sha256(stylesheet(colour).encode()).hexdigest()[:16]


def stylesheet(colour: str) -> str:
    """The school's custom properties: the colour, a darker one for hover, and the text on it
    (white: the colour was accepted only with AA contrast under white text)."""
    dark = colours.darker(colour)
    return f":root{{--brand:{colour};--brand-dark:{dark};--brand-contrast:{colours.WHITE};}}\n"


def _open_checked(data: bytes) -> Image.Image:
    """The image the bytes hold, verified; Refused unless it is a PNG, JPEG or WebP within limits."""
    if len(data) > MAX_CREST_BYTES:
        raise Refused(_("The crest must be at most 512 KB. Save it smaller and try again."))
    if not data:
        raise Refused(_("Choose an image file for the crest."))
    not_an_image = _("This file is not a PNG, JPEG or WebP image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                kind = probe.format
                size = probe.size
                # The sides are read from the header: a 10 KB file may declare 9000 x 9000 pixels,
                # which would take hundreds of MB to decode. Refuse before anything is decoded.
                _check_sides(*size)
                probe.verify()
            image = Image.open(io.BytesIO(data))  # verify() leaves the image unusable: open again
            image.load()
    except Refused:
        raise  # a ValueError too, but one that says what is wrong
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,  # past twice Pillow's pixel limit: an error, not a warning
    ) as e:
        raise Refused(not_an_image) from e
    if kind not in CREST_TYPES or image.format != kind:
        raise Refused(not_an_image)
    _check_sides(*image.size)
    return image


def _check_sides(width: int, height: int) -> None:
    """Refused unless each side is within the crest's limits."""
    if min(width, height) < MIN_CREST_SIDE or max(width, height) > MAX_CREST_SIDE:
        raise Refused(
            _(
                "The crest is %(width)s × %(height)s pixels; each side must be between "
                "%(least)s and %(most)s pixels.",
                width=width,
                height=height,
                least=MIN_CREST_SIDE,
                most=MAX_CREST_SIDE,
            )
        )


def _clean_bytes(image: Image.Image, kind: str) -> bytes:
    """The image encoded again from its pixels only: no EXIF, GPS, text chunks or profiles."""
    upright = ImageOps.exif_transpose(image)  # the orientation tag goes: turn the pixels instead
    if kind == "JPEG":
        pixels = upright.convert("RGB")
    else:
        pixels = upright.convert("RGBA" if upright.mode in ("RGBA", "LA", "P", "PA") else "RGB")
    bare = Image.frombytes(pixels.mode, pixels.size, pixels.tobytes())  # a new image: no info at all
    out = io.BytesIO()
    if kind == "JPEG":
        bare.save(out, "JPEG", quality=90, optimize=True)
    elif kind == "WEBP":
        bare.save(out, "WEBP", quality=90)
    else:
        bare.save(out, "PNG", optimize=True)
    return out.getvalue()


def save_crest(school: School, data: bytes) -> SchoolCrest:
    """Check, clean and keep the uploaded crest (replacing any); Refused with the reason."""
    image = _open_checked(data)
    kind = str(image.format)
    clean = _clean_bytes(image, kind)
    checksum = hashlib.sha256(clean).hexdigest()
    crest = db.session.scalar(select(SchoolCrest))  # scoped to the bound school
    if crest is None:
        crest = SchoolCrest(school_id=school.id)
        db.session.add(crest)
    crest.content_type = CREST_TYPES[kind]
    crest.data = clean
    crest.checksum = checksum
    crest.width, crest.height = image.size
    school.crest_checksum = checksum
    db.session.flush()
    audit.record(
        "crest.uploaded",
        target="School crest",
        changes={"type": crest.content_type, "size": f"{crest.width}×{crest.height}"},
    )
    return crest


def remove_crest(school: School) -> bool:
    """Remove the crest (the header shows the name alone); audited when there was one."""
    crest = db.session.scalar(select(SchoolCrest))
    if crest is None and school.crest_checksum is None:
        return False
    if crest is not None:
        db.session.delete(crest)
    school.crest_checksum = None
    db.session.flush()
    audit.record("crest.removed", target="School crest")
    return True


def crest_by_checksum(checksum: str) -> SchoolCrest | None:
    """The bound school's crest if the checksum is its current one (another school's: None)."""
    return db.session.scalar(select(SchoolCrest).where(SchoolCrest.checksum == checksum))
