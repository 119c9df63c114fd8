"""The HTTP service: a FastAPI app over the guarded path, approvals, the ledger and the
dashboard. Every endpoint needs credentials (API token or signed-in session)."""

from custos.api.app import app_from_environment, create_app

__all__ = ["app_from_environment", "create_app"]
