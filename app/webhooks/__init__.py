"""Webhooks from providers (Mailgun events)."""
