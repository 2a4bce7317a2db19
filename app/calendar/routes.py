"""The calendar blueprint's views."""

from flask import Blueprint

bp = Blueprint("calendar", __name__, url_prefix="/calendar")
