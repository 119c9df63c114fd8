"""Guarded SQL: the data map of the sources custos guards and the analysis of one SELECT.

Below access: imports only vocabulary, errors and store-level helpers.
"""

from __future__ import annotations

from custos.sql.datamap import (
    BUILTIN_COARSE,
    MAP_FILE,
    CoarseForm,
    ColumnMap,
    DataMap,
    Dialect,
    SourceMap,
    TableMap,
    default_coarse,
    load_data_map,
    parse_data_map,
    to_json,
)

__all__ = [
    "BUILTIN_COARSE",
    "MAP_FILE",
    "CoarseForm",
    "ColumnMap",
    "DataMap",
    "Dialect",
    "SourceMap",
    "TableMap",
    "default_coarse",
    "load_data_map",
    "parse_data_map",
    "to_json",
]
