"""The school admin's settings page: htmx sections that save in place."""
