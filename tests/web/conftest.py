"""The dashboard tests use the same live service as the API tests."""

from tests.api.conftest import service  # noqa: F401 - re-exported fixture
