"""Typed errors of the alerts package."""


class AlertsError(Exception):
    """Base of every error the alerts package reports to a user."""
