"""How long the vault keeps precise values by default, apart from the vault itself so that
reading the settings (every decision's process does) does not import the vault."""

from __future__ import annotations

from typing import Final

#: Days precise values are kept, per category (others are kept until deleted); overridden by
#: ``[vault.retention_days]``.
DEFAULT_RETENTION_DAYS: Final = {"ip_history": 90, "location": 90, "device": 90}
