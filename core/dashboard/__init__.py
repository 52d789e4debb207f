"""The operators' dashboard (``/admin``): see ``app``."""

from .app import dashboard_app

__all__ = ["dashboard_app"]
