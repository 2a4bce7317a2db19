"""The support feature package: help and contact requests, forwarded to Zendesk (P6, P16)."""
