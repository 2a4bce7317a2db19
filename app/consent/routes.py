"""The consent blueprint's views."""

from flask import Blueprint

bp = Blueprint("consent", __name__)
