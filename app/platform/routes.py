"""The platform blueprint's views."""

from flask import Blueprint

bp = Blueprint("platform", __name__, url_prefix="/platform")
