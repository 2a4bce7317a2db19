"""Machine translation of announcements through a LibreTranslate-compatible service (TRANSLATE_URL)."""

from app.translate.service import machine_translation

__all__ = ["machine_translation"]
