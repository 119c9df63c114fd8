"""The guarded path: every access is decided, logged, and only then served."""

from custos.access.system import Custos

__all__ = ["Custos"]
