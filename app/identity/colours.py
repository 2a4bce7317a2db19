"""Colours as WCAG 2 measures them: hex parsing, relative luminance and contrast ratio."""

from __future__ import annotations

import re

WHITE = "#ffffff"
# What a brand colour meets on the pages: white text on it (header, buttons) and itself as text
# on white cards and on the page's background (links); app.css's --card and --bg.
PAGE_BACKGROUND = "#f5f7fa"
USED_WITH = (WHITE, PAGE_BACKGROUND)
# The app's own brand colour (app.css's --brand), for email of a school that chose none.
DEFAULT_BRAND = "#1d4ed8"
# WCAG 2.x success criterion 1.4.3 (AA) for normal-size text.
AA_CONTRAST = 4.5
_HEX = re.compile(r"#?(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


def parse_hex(value: str | None) -> str | None:
    """``#1D4ED8``, ``1d4ed8`` or ``#14d`` as ``#1d4ed8``; None when it is not a hex colour."""
    text = (value or "").strip()
    if not _HEX.fullmatch(text):
        return None
    digits = text.lstrip("#").lower()
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return f"#{digits}"


def _linear(channel: int) -> float:
    """One sRGB channel (0..255) as linear light (WCAG 2's definition)."""
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def relative_luminance(colour: str) -> float:
    """WCAG relative luminance of a ``#rrggbb`` colour: 0 for black, 1 for white."""
    digits = colour.lstrip("#")
    r, g, b = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)


def contrast_ratio(first: str, second: str) -> float:
    """(L1 + 0.05) / (L2 + 0.05), the lighter over the darker: 1 to 21."""
    a, b = relative_luminance(first), relative_luminance(second)
    lighter, darker = max(a, b), min(a, b)
    return (lighter + 0.05) / (darker + 0.05)


def meets_aa(background: str, text: str = WHITE) -> bool:
    """Is ``text`` on ``background`` readable at WCAG AA (4.5:1)?"""
    return contrast_ratio(background, text) >= AA_CONTRAST


def lowest_contrast(colour: str, others: tuple[str, ...] = USED_WITH) -> float:
    """The worst contrast of ``colour`` with any colour it is used with."""
    return min(contrast_ratio(colour, other) for other in others)


def darker(colour: str, factor: float = 0.75) -> str:
    """The colour with each channel scaled towards black (for hover): more contrast with white."""
    digits = colour.lstrip("#")
    channels = (round(int(digits[i : i + 2], 16) * factor) for i in (0, 2, 4))
    return "#" + "".join(f"{c:02x}" for c in channels)
