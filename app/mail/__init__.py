"""The mail layer: templates, the outbox, backends and the jobs that send."""

from app.mail.outbox import queue_email, render_email

__all__ = ["queue_email", "render_email"]
