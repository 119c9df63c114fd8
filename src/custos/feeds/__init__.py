"""Directory feeds: what identity providers and ticket systems send, as directory changes.

- :mod:`~custos.feeds.scim`: SCIM 2.0 users and groups (RFC 7643) as principals and groups.
- :mod:`~custos.feeds.tickets`: ticket webhooks (generic, Jira, ServiceNow) and their HMAC
  signatures.

Parsing only: the API writes what these return through the directory, which ledgers every
change before it counts (docs/design/authority.md).
"""

from custos.feeds.scim import ScimMapping, ScimUser
from custos.feeds.tickets import HookMapping, SignatureCheck, TicketChange

__all__ = ["HookMapping", "ScimMapping", "ScimUser", "SignatureCheck", "TicketChange"]
