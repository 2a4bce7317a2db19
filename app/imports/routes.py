"""The imports blueprint's views."""

from flask import Blueprint

bp = Blueprint("imports", __name__, url_prefix="/import")
