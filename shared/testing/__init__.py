"""Test fixtures every service's tests use (a pytest plugin: `pytest_plugins = ["shared.testing.fixtures"]`)."""
