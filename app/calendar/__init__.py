"""School and class events, and each person's iCalendar feed."""
