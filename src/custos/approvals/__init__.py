"""Approvals: just-in-time requests, independent N-of-M approval, time-bound grants,
break-glass with mandatory review, and notifications through an outbox.

The access path asks the policies which approvals a request needs and opens the request
here; :meth:`Approvals.active_grant` is how decisions see the grants that result.
"""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.approvals.independence import RULES as RULES
    from custos.approvals.model import (
        ApprovalSettings as ApprovalSettings,
    )
    from custos.approvals.model import (
        Grant as Grant,
    )
    from custos.approvals.model import (
        Request as Request,
    )
    from custos.approvals.model import (
        Vote as Vote,
    )
    from custos.approvals.model import (
        covered_actions as covered_actions,
    )
    from custos.approvals.notify import (
        DeliveryReport as DeliveryReport,
    )
    from custos.approvals.notify import (
        NotificationFailed as NotificationFailed,
    )
    from custos.approvals.notify import (
        Notifier as Notifier,
    )
    from custos.approvals.notify import (
        Outbox as Outbox,
    )
    from custos.approvals.notify import (
        WebhookNotifier as WebhookNotifier,
    )
    from custos.approvals.notify import (
        signature as signature,
    )
    from custos.approvals.workflow import Approvals as Approvals
    from custos.approvals.workflow import Journal as Journal

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "independence": ("RULES",),
        "model": ("ApprovalSettings", "Grant", "Request", "Vote", "covered_actions"),
        "notify": (
            "DeliveryReport",
            "NotificationFailed",
            "Notifier",
            "Outbox",
            "WebhookNotifier",
            "signature",
        ),
        "workflow": ("Approvals", "Journal"),
    },
)
