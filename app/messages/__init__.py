"""The messages feature package: compose, preview, send or schedule announcements, and follow them."""
