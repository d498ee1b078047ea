"""Fixtures of the integration tests."""

from integration_project import trained_model  # noqa: F401
