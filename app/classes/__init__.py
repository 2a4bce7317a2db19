"""The classes feature package."""
