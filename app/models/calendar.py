"""Models of the calendar feature."""
