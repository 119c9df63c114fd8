"""What a guarded query may contain: an explicit allow-list, everything else denied.

Two lists, one per parser. sqlglot's expression node types for the user's query (a node type
not listed here is refused, whatever it is: a new sqlglot release that parses something new
into a new node type refuses it until someone reads it and adds it). And PostgreSQL's own
names, as pglast reports them, for the SQL custos generates: functions, operators, type casts.
"""

from __future__ import annotations

from typing import Final

from sqlglot import exp
from sqlglot.expressions.datatypes import DType

#: The structure of one SELECT: clauses, references, literals, operators.
STRUCTURE: Final[frozenset[type[exp.Expr]]] = frozenset(
    {
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.With,
        exp.CTE,
        exp.Subquery,
        exp.Lateral,
        exp.From,
        exp.Join,
        exp.Table,
        exp.TableAlias,
        exp.Alias,
        exp.Column,
        exp.Identifier,
        exp.Star,
        exp.Distinct,
        exp.Where,
        exp.Group,
        exp.Having,
        exp.Order,
        exp.Ordered,
        exp.Limit,
        exp.Offset,
        exp.Window,
        exp.Literal,
        exp.Null,
        exp.Boolean,
        exp.Paren,
        exp.Tuple,
        exp.Var,  # EXTRACT(YEAR FROM …), DATE_TRUNC units
        exp.DataType,
        exp.DataTypeParam,
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.And,
        exp.Or,
        exp.Not,
        exp.In,
        exp.Between,
        exp.Is,
        exp.Like,
        exp.ILike,
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.Div,
        exp.Mod,
        exp.Neg,
        exp.Exists,
        exp.Case,
        exp.If,
        exp.Cast,
    }
)

#: Functions: pure, over their arguments only. No file, network, catalog or setting access,
#: no table functions, nothing that formats a value into a shape coarse forms do not expect.
FUNCTIONS: Final[frozenset[type[exp.Expr]]] = frozenset(
    {
        exp.Count,
        exp.Sum,
        exp.Avg,
        exp.Min,
        exp.Max,
        exp.Lower,
        exp.Upper,
        exp.Length,
        exp.Substring,
        exp.Left,
        exp.Right,
        exp.StrPosition,
        exp.Trim,
        exp.Concat,
        exp.DPipe,
        exp.Replace,
        exp.SplitPart,
        exp.Coalesce,
        exp.Nullif,
        exp.Abs,
        exp.Round,
        exp.Floor,
        exp.Ceil,
        exp.TimestampTrunc,
        exp.DateTrunc,
        exp.Extract,
        exp.Greatest,
        exp.Least,
        exp.RowNumber,
        exp.Rank,
        exp.DenseRank,
        exp.Lag,
        exp.Lead,
        exp.CurrentDate,
        exp.CurrentTimestamp,
    }
)

ALLOWED_NODES: Final = STRUCTURE | FUNCTIONS

#: Types a value may be cast to: no INET (host()/network() probes), no reg* catalog lookups,
#: no JSON or arrays.
CAST_TYPES: Final[frozenset[DType]] = frozenset(
    {
        exp.DataType.Type.TEXT,
        exp.DataType.Type.VARCHAR,
        exp.DataType.Type.CHAR,
        exp.DataType.Type.INT,
        exp.DataType.Type.BIGINT,
        exp.DataType.Type.SMALLINT,
        exp.DataType.Type.DOUBLE,
        exp.DataType.Type.FLOAT,
        exp.DataType.Type.DECIMAL,
        exp.DataType.Type.BOOLEAN,
        exp.DataType.Type.DATE,
        exp.DataType.Type.TIMESTAMP,
        exp.DataType.Type.TIMESTAMPTZ,
    }
)

#: PostgreSQL functions (as pglast names them, schema dropped) the generated SQL may call:
#: those the nodes above generate. Coarse forms of the map add their own (see analyze).
PG_FUNCTIONS: Final = frozenset(
    {
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "lower",
        "upper",
        "length",
        "substring",
        "left",
        "right",
        "strpos",
        "position",
        "btrim",
        "ltrim",
        "rtrim",
        "concat",
        "replace",
        "split_part",
        "abs",
        "round",
        "floor",
        "ceil",
        "date_trunc",
        "extract",
        "row_number",
        "rank",
        "dense_rank",
        "lag",
        "lead",
        "now",
    }
)

#: PostgreSQL operators (pglast's A_Expr names) the generated SQL may use.
PG_OPERATORS: Final = frozenset(
    {"=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||", "~~", "~~*", "!~~"}
    | {"!~~*", "BETWEEN", "NOT BETWEEN"}
)

#: PostgreSQL type names a generated cast may name (pglast, schema dropped).
PG_TYPES: Final = frozenset(
    {"text", "varchar", "bpchar", "int4", "int8", "int2", "float8", "float4", "numeric"}
    | {"bool", "date", "timestamp", "timestamptz"}
)
