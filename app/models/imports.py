"""Models of the imports feature."""
