"""Typed errors of the rules package."""


class RulesError(Exception):
    """Base of every error the rules package reports to a user."""
