"""Fixtures of the integration tests."""

from plain_bot import plain_bot, plain_bot_model  # noqa: F401

from integration_project import trained_model  # noqa: F401
