"""The members feature package."""
