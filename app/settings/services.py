"""Kept only for app/support/services.py, which imports grant_support from here.

The settings services live by resource: school.py, people.py, support_access.py, audit_log.py.
Delete this module once app/support imports app.settings.support_access instead.
"""

from app.settings.support_access import grant_support

__all__ = ["grant_support"]
