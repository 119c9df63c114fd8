"""Approvals: just-in-time requests, independent N-of-M approval, time-bound grants,
break-glass with mandatory review, and notifications through an outbox.

The access path asks the policies which approvals a request needs and opens the request
here; :meth:`Approvals.active_grant` is how decisions see the grants that result.
"""

from custos.approvals.independence import RULES
from custos.approvals.model import ApprovalSettings, Grant, Request, Vote, covered_actions
from custos.approvals.notify import (
    DeliveryReport,
    NotificationFailed,
    Notifier,
    Outbox,
    WebhookNotifier,
    signature,
)
from custos.approvals.workflow import Approvals, Journal

__all__ = [
    "RULES",
    "ApprovalSettings",
    "Approvals",
    "DeliveryReport",
    "Grant",
    "Journal",
    "NotificationFailed",
    "Notifier",
    "Outbox",
    "Request",
    "Vote",
    "WebhookNotifier",
    "covered_actions",
    "signature",
]
