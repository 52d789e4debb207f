"""Make the ``fake_discord`` fixture available to the harness's own tests."""

from tests.discord_fake.fixtures import fake_discord  # noqa: F401
