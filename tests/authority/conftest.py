"""Fixtures from elsewhere: the API tests' running service (real HTTP on loopback) and the
in-process command line of the operator tests."""

from tests.api.conftest import service  # noqa: F401 - a fixture, used by name
from tests.operators import cli  # noqa: F401 - a fixture, used by name
