"""The guarded path: every access is decided, logged, and only then served.

``Custos`` is the opened installation; ``Custos.decide`` / ``decide_many`` decide requests,
``Custos.read`` / ``read_many`` are guarded reads returning :class:`ReadResult`.
"""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.access.decisions import DecisionMaker as DecisionMaker
    from custos.access.query import (
        QueryColumn as QueryColumn,
    )
    from custos.access.query import (
        QueryRequest as QueryRequest,
    )
    from custos.access.query import (
        QueryResult as QueryResult,
    )
    from custos.access.read import ReadResult as ReadResult
    from custos.access.system import Custos as Custos
    from custos.access.system import Viewer as Viewer

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "decisions": ("DecisionMaker",),
        "query": ("QueryColumn", "QueryRequest", "QueryResult"),
        "read": ("ReadResult",),
        "system": ("Custos", "Viewer"),
    },
)
