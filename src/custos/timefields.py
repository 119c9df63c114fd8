"""Pydantic field types for times, apart from :mod:`custos.times` so that what only writes or
reads times (a decision, the ledger) does not import pydantic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator

from custos.times import utc_instant

UtcTime = Annotated[datetime, BeforeValidator(utc_instant)]
"""A pydantic field type: a zoned instant, held in UTC (see :func:`custos.times.utc_instant`)."""
