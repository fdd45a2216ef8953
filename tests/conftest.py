"""Shared fixtures: the managed Letta stack and the OpenAI stub live in tests/conftest_letta.py."""

pytest_plugins = ["tests.conftest_letta"]
