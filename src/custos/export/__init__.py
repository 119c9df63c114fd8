"""Export: push alerts, decisions, releases and approval events as OCSF JSON to a file,
syslog or a webhook, at least once and in order (see docs/design/export.md)."""

from custos.export.config import DestinationConfig, destination_configs
from custos.export.destinations import (
    Destination,
    FileDestination,
    SyslogDestination,
    WebhookDestination,
    octet_counted,
    signature,
    syslog_message,
)
from custos.export.exporter import (
    Cursors,
    CursorState,
    Exporter,
    LedgerExport,
    RoundResult,
    results_text,
)
from custos.export.ocsf import (
    API_ACTIVITY,
    DETECTION_FINDING,
    REQUIRED,
    AlertRecord,
    from_alert,
    from_entry,
    problems,
)
from custos.export.seal import CursorKey, load_key

__all__ = [
    "API_ACTIVITY",
    "DETECTION_FINDING",
    "REQUIRED",
    "AlertRecord",
    "CursorKey",
    "CursorState",
    "Cursors",
    "Destination",
    "DestinationConfig",
    "Exporter",
    "FileDestination",
    "LedgerExport",
    "RoundResult",
    "SyslogDestination",
    "WebhookDestination",
    "destination_configs",
    "from_alert",
    "from_entry",
    "load_key",
    "octet_counted",
    "problems",
    "results_text",
    "signature",
    "syslog_message",
]
