"""The dev feature package."""
