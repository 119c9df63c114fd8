"""The API tests' running service (real HTTP on loopback), for the account and token tests."""

from tests.api.conftest import service  # noqa: F401 - a fixture, used by name
