"""The main feature package."""
