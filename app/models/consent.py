"""Models of the consent feature."""
