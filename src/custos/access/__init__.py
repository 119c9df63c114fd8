"""The guarded path: every access is decided, logged, and only then served.

``Custos`` is the opened installation; ``Custos.decide`` / ``decide_many`` decide requests,
``Custos.read`` / ``read_many`` are guarded reads returning :class:`ReadResult`.
"""

from custos.access.decisions import DecisionMaker
from custos.access.query import QueryColumn, QueryRequest, QueryResult
from custos.access.read import ReadResult
from custos.access.system import Custos, Viewer

__all__ = [
    "Custos",
    "DecisionMaker",
    "QueryColumn",
    "QueryRequest",
    "QueryResult",
    "ReadResult",
    "Viewer",
]
