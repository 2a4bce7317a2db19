"""Unsubscribe links and one-click unsubscribe (RFC 8058)."""
