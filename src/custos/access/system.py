"""The composition root: one custos installation (a home folder and its database) and the
parts wired to it. Everything above (CLI, API, web) reaches the parts through this."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from custos import telemetry
from custos.access.batching import ThreadBatcher
from custos.access.decisions import AUTHORITY_MISMATCH, DecisionMaker
from custos.access.journal import decision_entry, new_event_id
from custos.approvals import (
    Approvals,
    ApprovalSettings,
    Grant,
    Request,
    covered_actions,
)
from custos.authority import AuthorityWriter, Voucher
from custos.config import Settings, decision_settings, decision_settings_digest, load_settings
from custos.directory import DirectoryStore, Principal
from custos.errors import (
    AuthorityMismatch,
    ConfigurationError,
    Conflict,
    CustosError,
    NotFound,
    NotInitialised,
    RequestRefused,
    VocabularyInUse,
)
from custos.ledger import (
    LOG_KEY_FILE,
    ORIGIN_FILE,
    SIGNED_HEAD_FILE,
    Ledger,
    NoteSigner,
    NoteVerifier,
    check_key_name,
    read_key,
    write_new_key,
    write_origin,
)
from custos.ledger.entries import (
    IngestEntry,
    OversightViewEntry,
    PolicyVersionEntry,
    ReportViewEntry,
    SettingsEntry,
    ShredEntry,
    SignInEntry,
)
from custos.policy import (
    AccessRequest,
    ApprovalsNeeded,
    Decision,
    PolicyEngine,
    PolicyPack,
    check_words,
    install_default_pack,
    load_pack,
)
from custos.store import Database, open_database
from custos.store.directory import PolicyVersionRow
from custos.times import iso

SHRED_LOCK_FILE = "shred.lock"

if TYPE_CHECKING:  # imported where used: a command pays only for the parts it needs
    from custos.access.query import QueryDesk, QueryRequest, QueryResult
    from custos.access.read import ReadResult
    from custos.access.replay import Replayed, Replayer
    from custos.accounts import Account, Accounts
    from custos.accounts.oidc import OidcClient
    from custos.accounts.onbehalf import OnBehalf
    from custos.detect import Casebook, DetectionRun, EventStore
    from custos.hsm import Token  # python-pkcs11 is imported only when a token is configured
    from custos.ledger import VerifyReport
    from custos.reports import SubjectIndex
    from custos.sql import DataMap
    from custos.store.bulk import BulkAccessStore
    from custos.vault import IngestReport, ShredReport, Vault
    from custos.vocabulary import Vocabulary

WEBHOOK_SECRET_FILE = "webhook.secret"  # noqa: S105 - a file name, not a secret
#: Signs the short-lived tokens given for an on-behalf-of assertion (RFC 8693 exchange).
EXCHANGE_KEY_FILE = "exchange.key"
WEBHOOK_SECRET_ENV = "CUSTOS_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret


log = logging.getLogger(__name__)

#: The digest of the decision settings this home last ledgered (see record_settings).
SETTINGS_MARKER = "settings.ledgered"
#: The digest of the last policy pack whose words this home checked against the data, the
#: directory and the configuration, and the directory's version then (see
#: Custos._check_words_in_use).
WORDS_MARKER = "policies.checked"


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Who asks for a subject's report, as the ledger records it: where (``api``,
    ``dashboard``, ``cli``, ``demo``), the principal they act as (None for credentials linked
    to nobody and for the host's operator) and their roles. Never a username: the entry is
    shown to the subject, and a principal id is the pseudonym reports already carry."""

    source: str
    principal: str | None = None
    roles: tuple[str, ...] = ()


def _status_and_kind(principal: Principal) -> tuple[str, str]:
    return principal.status, principal.kind


def _create_secret(path: Path) -> None:
    """A random secret (hex) for signing webhooks, created once, readable by the owner only."""
    if path.exists():
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")


class Custos:
    """An opened custos installation. Create with :meth:`open` (existing) or :meth:`init`."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        # Concurrent decide() and read() calls from threads run together in batches (see
        # custos.access.batching): one policy batch and one durable ledger batch each.
        self._checks: ThreadBatcher[Decision] = ThreadBatcher(
            lambda requests, source: self.decide_many(requests, source=source)
        )
        self._reads: ThreadBatcher[ReadResult] = ThreadBatcher(
            lambda requests, source: self.read_many(requests, source=source)
        )

    @classmethod
    def init(cls, home: Path | None = None) -> Custos:
        """Create (or bring up to date) the home folder and database; idempotent.

        Raises :class:`ConfigurationError` when the home cannot be created.
        """
        from custos.vault import KEK_FILE, LocalKeyFile

        settings = load_settings(home)
        origin = str(settings.section("ledger").get("origin") or f"custos/{uuid.uuid4().hex[:12]}")
        check_key_name(origin)  # before anything is created
        keys = settings.keys
        if keys.provider == "pkcs11":
            from custos.hsm import Token

            Token.from_config(keys)  # module, token and PIN checked before anything is created
        try:
            settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            settings.keys_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create custos home {settings.home}: {exc.strerror}"
            ) from None
        db = open_database(settings.database_url, migrate=True)
        system = cls(settings, db)
        # Each part's own setup, in layer order.
        if keys.provider == "pkcs11":
            from custos.ledger.token import TokenSigningKey
            from custos.vault.token import TokenKek

            TokenSigningKey.create(system.token, keys.log_key_label)
            write_origin(settings.keys_dir / ORIGIN_FILE, origin)
            TokenKek.create(system.token, keys.kek_label)
        else:
            write_new_key(settings.keys_dir / LOG_KEY_FILE, origin)
            LocalKeyFile.create(settings.keys_dir / KEK_FILE)
        _create_secret(settings.keys_dir / WEBHOOK_SECRET_FILE)
        install_default_pack(settings.policy_dir)
        system.activate_policies()
        return system

    @classmethod
    def open(cls, home: Path | None = None) -> Custos:
        """Open an initialised installation. Raises :class:`NotInitialised` otherwise."""
        settings = load_settings(home)
        if settings.database_url.startswith("sqlite") and not settings.home.is_dir():
            raise NotInitialised(
                f"no custos home at {settings.home}", hint="run `custos init` first"
            )
        return cls(settings, open_database(settings.database_url))

    @cached_property
    def events(self) -> EventStore:
        """Access events: imported from other tools' logs, and custos's own (fed from the
        ledger by :meth:`feed_events`); imported ones must use the active pack's words."""
        from custos.detect import EventStore

        return EventStore(self.db, vocabulary=lambda: self.policy_pack.vocabulary)

    @cached_property
    def bulk_accesses(self) -> BulkAccessStore:
        """Bulk accesses: statements of imported audit logs that read many people at once
        (see :mod:`custos.store.bulk`); the evidence of ``bulk_read`` alerts."""
        from custos.store.bulk import BulkAccessStore

        return BulkAccessStore(self.db)

    def feed_events(self) -> int:
        """Copy custos's own decisions and releases from the ledger into the access events,
        from where the last feed stopped; returns how many ledger entries were read.

        Reading the ledger, not hooking the hot path, keeps decisions fast and means detection
        sees exactly what was logged. Idempotent (events are keyed by their ids).
        """
        from custos.access.feed import EventFeed
        from custos.ledger.follow import follow_ledger

        return follow_ledger(self.ledger, [EventFeed(self.db, self.events)])

    def detect(self, *, since: datetime | None = None) -> DetectionRun:
        """Feed the ledger into the events, then run every detection rule (see
        :func:`custos.detect.run_detection`). Raises :class:`ConfigurationError` when a
        ``[detect]`` category or purpose list names a word the active pack lacks."""
        from custos.detect import run_detection
        from custos.detect.config import check_words
        from custos.detect.replay import ReplayPolicy, ReplaySource

        check_words(
            self.settings.section("detect"),
            self.policy_pack.vocabulary,
            f"{self.settings.config_path} [detect]",
        )
        self.feed_events()
        return run_detection(
            self.db,
            self.directory,
            self.settings.section("detect"),
            since=since,
            home=self.settings.home,
            replay=ReplaySource(
                ReplayPolicy(self.policy, self.settings.allowed_countries), self._ledger_from
            ),
        )

    def _ledger_from(self, start: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The ledger's entries from ``start`` on, parsed, in index order."""
        for _, _, entries in self.ledger.batches(start):
            for index, raw in entries:
                yield index, json.loads(raw)

    @cached_property
    def _settings_digest(self) -> str:
        """The digest of the decision settings this instance decides under (fixed for its
        life): every decision entry names it, so `custos log verify` can tell a decision made
        under settings the ledger never took (a hand-edited config and marker file)."""
        return decision_settings_digest(self.settings)

    @cached_property
    def casebook(self) -> Casebook:
        from custos.detect import Casebook, DetectConfig

        config = DetectConfig.from_section(self.settings.section("detect"))
        return Casebook(self.db, suppress_days=config.suppress_days, window_days=config.window_days)

    @cached_property
    def subject_index(self) -> SubjectIndex:
        """Which ledger entries are about which subject (for transparency reports)."""
        from custos.reports import SubjectIndex

        return SubjectIndex(self.db, self.ledger)

    def subject_report(
        self, subject: str, *, viewer: Viewer, names: bool = False
    ) -> dict[str, Any]:
        """The transparency report of ``subject`` (see :mod:`custos.reports`), after logging
        who asked for it (a ``report_view`` entry, so the report holds its own request).

        Raises ``UnknownSubject`` (nothing logged) and :class:`StoreUnavailable` when the
        request cannot be logged (nothing shown).
        """
        from custos.reports import build_report

        self.directory.subject(subject)
        self.ledger.append(
            ReportViewEntry(
                time=iso(datetime.now(UTC)),
                subject=subject,
                principal=viewer.principal,
                roles=tuple(sorted(viewer.roles)),
                names=names,
                source=viewer.source,
            ).to_json()
        )
        return build_report(self.ledger, self.subject_index, self.directory, subject, names=names)

    def record_view(
        self,
        viewer: Viewer,
        view: str,
        *,
        subject: str | None = None,
        subjects: Sequence[str] = (),
        about: str | None = None,
        alert: str | None = None,
    ) -> None:
        """Log, before it is shown, that ``viewer`` looked at oversight data (an
        ``oversight_view`` entry): ``view`` is ``access_log`` (filtered by ``subject`` and/or
        ``about``, a principal), ``alert`` (its evidence, ``subjects`` the alert's),
        ``case`` (its alerts' ``subjects``), ``alerts`` or ``cases`` (the lists) or
        ``principal`` (``about``'s activity). Who
        watched whom is evidence too: the access log answers "who looked at this
        journalist", the question a leak hunt starts with.
        The entry is in the report of ``subject`` and of every one of ``subjects``
        (``subjects_reported``). A filter that
        names no one in the directory is recorded as such, never verbatim: what was typed
        into a search box could be an address or a name, and the ledger keeps it for good.

        Raises :class:`StoreUnavailable` / ``LedgerUnavailable`` when it cannot be logged
        (then nothing may be shown).
        """
        unknown = "not in the directory"
        named = tuple(sorted(set(subjects)))
        if subject is None and len(named) == 1:
            subject = named[0]
        known_subject = subject is not None and self._known(self.directory.subject, subject)
        known_about = about is not None and self._known(self.directory.principal, about)
        self.ledger.append(
            OversightViewEntry(
                time=iso(datetime.now(UTC)),
                view=view,
                principal=viewer.principal,
                roles=tuple(sorted(viewer.roles)),
                source=viewer.source,
                subject=subject if known_subject else None,
                subject_filter=unknown if subject is not None and not known_subject else None,
                subjects=named,
                # In the report of every subject named, each one's chain linked to it.
                subjects_reported=bool(named),
                about_principal=about if known_about else None,
                principal_filter=unknown if about is not None and not known_about else None,
                alert=alert,
            ).to_json()
        )

    @staticmethod
    def _known(lookup: Callable[[str], object], key: str) -> bool:
        try:
            lookup(key)
        except NotFound:
            return False
        return True

    def record_sign_in(self, account: Account, method: str) -> None:
        """Log that ``account`` signed in (``method``: password or oidc) before its session
        starts. Raises :class:`StoreUnavailable` when it cannot be logged (no session then)."""
        self.ledger.append(
            SignInEntry(
                time=iso(datetime.now(UTC)),
                account=account.username,
                principal=account.principal,
                roles=tuple(account.roles),
                method=method,
            ).to_json()
        )

    @cached_property
    def oidc(self) -> OidcClient | None:
        """The OpenID Connect provider people may sign in with (``[service.oidc]``), if any.
        Raises :class:`ConfigurationError` for an incomplete configuration."""
        from custos.accounts.oidc import OidcClient, OidcSettings

        service = self.settings.section("service")
        config = service.get("oidc", {})
        if not isinstance(config, dict):
            raise ConfigurationError("[service.oidc] must be a table")
        settings = OidcSettings.from_config(config, os.environ.get("CUSTOS_OIDC_CLIENT_SECRET"))
        if settings is None:
            return None
        path = self.settings.keys_dir / "session.key"
        _create_secret(path)
        return OidcClient(settings, path.read_bytes().strip())

    @cached_property
    def on_behalf(self) -> OnBehalf | None:
        """Tools acting for staff members who prove it with their own assertion
        (``[on_behalf]``), if configured. Raises :class:`ConfigurationError`."""
        from custos.accounts.onbehalf import OnBehalf, OnBehalfSettings

        settings = OnBehalfSettings.from_config(self.settings.section("on_behalf"))
        if settings is None:
            return None
        path = self.settings.keys_dir / EXCHANGE_KEY_FILE
        _create_secret(path)
        return OnBehalf(
            settings,
            self.accounts,
            lambda principal: _status_and_kind(self.directory.principal(principal)),
            path.read_bytes().strip(),
        )

    @cached_property
    def accounts(self) -> Accounts:
        """People, tokens and sessions of the service: each ledgered before it is written,
        and honoured only while it equals its entry (docs/design/authority.md)."""
        from custos.accounts import Accounts

        return Accounts(
            self.db, vouch=self.voucher.check, record=AuthorityWriter(self.ledger).record
        )

    @cached_property
    def directory(self) -> DirectoryStore:
        """Principals, subjects and tickets: every change ledgered before it is written,
        every row checked against its entry as it is loaded (docs/design/authority.md)."""
        return DirectoryStore(
            self.db, vouch=self.voucher.check, record=AuthorityWriter(self.ledger).record
        )

    @cached_property
    def voucher(self) -> Voucher:
        """Checks authority rows against the ledger entries that set them."""
        return Voucher(self.ledger)

    @cached_property
    def token(self) -> Token:
        """The PKCS#11 token of ``[keys]``, logged in with ``$CUSTOS_PKCS11_PIN``. Raises
        :class:`ConfigurationError` (no such module or token, no or a wrong PIN, or
        ``[keys] provider`` is not ``pkcs11``)."""
        from custos.hsm import Token

        return Token.from_config(self.settings.keys)

    @cached_property
    def ledger(self) -> Ledger:
        """The log; its key (and origin, the key's name) from ``keys/log.key``, or with
        ``[keys] provider = "pkcs11"`` the key from the token and the origin from
        ``keys/log.origin``; the last tree this host signed in ``keys/log.signed``. Each
        entry about a subject links to the previous one about that subject
        (:data:`custos.reports.SUBJECT_CHAIN`)."""
        from custos.reports import SUBJECT_CHAIN

        keys = self.settings.keys
        signer: NoteSigner
        if keys.provider == "pkcs11":
            from custos.ledger.token import read_token_key

            signer = read_token_key(
                self.token, keys.log_key_label, self.settings.keys_dir / ORIGIN_FILE
            )
        else:
            signer = read_key(self.settings.keys_dir / LOG_KEY_FILE)
        return Ledger(
            self.db,
            signer,
            signer.name,
            self.settings.keys_dir / SIGNED_HEAD_FILE,
            chain=SUBJECT_CHAIN,
        )

    def verify_log(self) -> VerifyReport:
        """``custos log verify``: recompute the log, its links and checkpoints
        (:func:`custos.ledger.verify_log`), and check the subject index against the entries
        it is derived from. Mismatches are reported, not raised."""
        from custos.ledger import verify_log

        report = verify_log(self.ledger, self.log_verifier)
        for index, problem in self.subject_index.verify():
            report.fail(index, problem)
        return report

    @property
    def witnesses(self) -> list[NoteVerifier]:
        """The witnesses whose cosignatures this log keeps: ``[ledger] witnesses`` (their
        verifier keys) in config.toml. Raises :class:`ConfigurationError` for a bad key."""
        keys = self.settings.section("ledger").get("witnesses", [])
        if not isinstance(keys, list):
            raise ConfigurationError("[ledger] witnesses must be a list of verifier keys")
        try:
            return [NoteVerifier.parse(str(k)) for k in keys]
        except CustosError as exc:
            raise ConfigurationError(f"[ledger] witnesses: {exc.message}") from None

    @property
    def log_verifier(self) -> NoteVerifier:
        """The verifier key of this log's checkpoints, as witnesses and auditors use it."""
        return NoteVerifier.parse(self.ledger.signer.verifier_key())

    @cached_property
    def vault(self) -> Vault:
        """Sensitive records; settings from ``[vault]`` in config.toml (``geoip``, ``city``,
        ``grid_km``, ``[vault.retention_days]``); the KEK from ``keys/vault.kek`` or, with
        ``[keys] provider = "pkcs11"``, from the token."""
        from custos.vault import GeoLookup, Vault
        from custos.vault.keys import kek_provider

        settings = self.settings
        config = settings.section("vault")
        geoip = config.get("geoip")
        provider = kek_provider(settings, lambda: self.token)
        # After the key: a vault without its KEK is named as such, before the retention
        # check activates the policy pack (which writes to the ledger, and needs its key).
        retention = self.retention_days()
        return Vault(
            self.db,
            provider,
            retention_days=retention,
            grid_km=settings.number("vault", "grid_km", 10.0),
            geo=GeoLookup(Path(str(geoip)), with_city=settings.flag("vault", "city", False))
            if geoip
            else None,
            vocabulary=lambda: self.policy_pack.vocabulary,
        )

    def retention_days(self, words: Vocabulary | None = None) -> dict[str, int]:
        """Days the vault keeps precise values, per category: the defaults overridden by
        ``[vault.retention_days]``, whose every key must be a category of ``words`` (default:
        the active pack's) — a retention for a word the pack lacks would never apply to
        anything, and a misspelt one would leave the real category's data unshredded.

        Raises :class:`ConfigurationError` naming the file, the key and the pack's
        categories, and for a value that is not a positive whole number or not a table.
        """
        from custos.vault.retention import DEFAULT_RETENTION_DAYS

        settings = self.settings
        asked = settings.section("vault").get("retention_days", {})
        if not isinstance(asked, dict):
            raise ConfigurationError(
                f"{settings.config_path}: [vault.retention_days] must be a table"
            )
        words = words or self.policy_pack.vocabulary
        for key in asked:
            if not words.knows("category", key):
                raise ConfigurationError(
                    f"{settings.config_path}: [vault.retention_days] "
                    f"{words.unknown('category', key)}",
                    hint=f"retention is per category of the policy pack ({settings.policy_dir}"
                    "/vocabulary.yaml): fix the key, or declare the category there",
                )
        retention = dict(DEFAULT_RETENTION_DAYS)
        retention.update(
            {
                str(k): settings.positive_whole(v, f"[vault.retention_days] {k}")
                for k, v in asked.items()
            }
        )
        return retention

    @cached_property
    def policy_pack(self) -> PolicyPack:
        """The active pack: ``policies/`` in the home folder, recorded in the policy history
        (and the ledger) the first time it is used. Raises ``PolicyError``."""
        return self.activate_policies()

    @cached_property
    def policy(self) -> PolicyEngine:
        return PolicyEngine(self.policy_pack)

    @cached_property
    def decisions(self) -> DecisionMaker:
        return DecisionMaker(
            self.settings, self.directory, self.policy, grants=self.approvals.active_grant
        )

    @cached_property
    def approvals(self) -> Approvals:
        """Requests and grants; settings from ``[approvals]`` in config.toml (durations,
        groups, and ``webhook_url`` with its secret from ``$CUSTOS_WEBHOOK_SECRET`` or
        ``keys/webhook.secret``). Raises :class:`ConfigurationError`."""
        from custos.approvals import Outbox, WebhookNotifier

        config = dict(self.settings.section("approvals"))
        url = config.get("webhook_url")
        notifier = None
        if url:
            secret = os.environ.get(WEBHOOK_SECRET_ENV, "").encode()
            if not secret:
                path = self.settings.keys_dir / WEBHOOK_SECRET_FILE
                try:
                    secret = path.read_bytes().strip()
                except OSError:
                    raise ConfigurationError(
                        f"[approvals] webhook_url is set but {path} cannot be read",
                        hint=f"run `custos init` or set ${WEBHOOK_SECRET_ENV}",
                    ) from None
            notifier = WebhookNotifier(
                str(url), secret, timeout=self.settings.number("approvals", "webhook_timeout", 5.0)
            )
        return Approvals(
            self.db,
            self.directory,
            self.ledger,
            Outbox(self.db, notifier),
            ApprovalSettings.from_config(config),
            vouch=self.voucher.check,
            vocabulary=lambda: self.policy_pack.vocabulary,
        )

    def request_access(
        self,
        *,
        principal: str,
        subject: str,
        categories: Sequence[str],
        purpose: str,
        ticket: str | None,
        precision: str = "precise",
        reason: str | None,
        duration: timedelta | None = None,
        actions: Sequence[str] = ("read",),
        source: str = "custos",
        now: datetime | None = None,
        via: str | None = None,
    ) -> Request:
        """Ask for access that the policies say needs approval, and open the request.

        Every category is decided (and logged) as asked, for each of ``actions``; the grant
        will cover those actions only. Raises :class:`RequestRefused`
        when a policy forbids it whatever the approvals (e.g. source protection), naming
        that policy, and :class:`Conflict` when it is allowed already.
        """
        now = now or datetime.now(UTC)
        acts = covered_actions(actions)  # checked before anything is decided
        asked = [
            AccessRequest(
                principal,
                subject,
                category,
                purpose,
                ticket=ticket,
                action=action,
                precision=precision,
                reason=reason,
                time=now,
                via=via,
            )
            for category in dict.fromkeys(categories)
            for action in acts
        ]
        decisions = self._decided_or_refused(
            asked, source, "no approval can allow this", refuse=lambda d: d.outcome == "deny"
        )
        needing = [d.approvals for d in decisions if d.approvals is not None]
        if not needing:
            raise Conflict(
                "this access is already allowed; no approval is needed",
                hint="use `custos read` directly",
            )
        needed = ApprovalsNeeded(
            approvals=max(n.approvals for n in needing),
            groups=tuple(sorted({g for n in needing for g in n.groups})),
        )
        policies = sorted(
            {r.policy for d in decisions if d.outcome == "approval_required" for r in d.reasons}
        )
        return self.approvals.open_request(
            principal=principal,
            subject=subject,
            categories=categories,
            purpose=purpose,
            ticket=ticket,
            precision=precision,
            reason=reason,
            duration=duration,
            needed=needed,
            policies=policies,
            actions=acts,
            decisions=[d.event_id for d in decisions if d.event_id],
            now=now,
        )

    def break_glass(
        self,
        *,
        principal: str,
        subject: str,
        categories: Sequence[str],
        purpose: str,
        ticket: str | None,
        reason: str | None,
        duration: timedelta | None = None,
        actions: Sequence[str] = ("read",),
        source: str = "custos",
        now: datetime | None = None,
        via: str | None = None,
    ) -> Grant:
        """Take an immediate break-glass grant, if the policies allow break-glass here
        for every category and action asked (the grant covers those only).

        Raises :class:`RequestRefused` naming the policy that forbids it.
        """
        now = now or datetime.now(UTC)
        acts = covered_actions(actions)  # checked before anything is decided
        asked = [
            AccessRequest(
                principal,
                subject,
                category,
                purpose,
                ticket=ticket,
                action=action,
                precision="precise",
                break_glass=True,
                reason=reason,
                time=now,
                via=via,
            )
            for category in dict.fromkeys(categories)
            for action in acts
        ]
        decisions = self._decided_or_refused(
            asked, source, "break-glass is not available here", refuse=lambda d: not d.allowed
        )
        return self.approvals.break_glass(
            principal=principal,
            subject=subject,
            categories=categories,
            purpose=purpose,
            ticket=ticket,
            reason=reason,
            duration=duration,
            actions=acts,
            decisions=[d.event_id for d in decisions if d.event_id],
            now=now,
        )

    def activate_policies(self) -> PolicyPack:
        """Validate the home's pack and record it in the policy history if it is new.

        Returns the pack. Raises ``PolicyError`` (and records nothing) when it is invalid,
        :class:`VocabularyInUse` (a ``PolicyError``) when it lacks a category or protected
        flag still in use (docs/design/policy.md, *Replacing a pack*), and
        :class:`ConfigurationError` for a ``[vault.retention_days]`` key it does not declare.
        """
        pack = load_pack(self.settings.policy_dir)
        unchecked = self._check_words_in_use(pack)
        with self.db.session() as session:
            known = session.scalar(
                select(PolicyVersionRow.id).where(PolicyVersionRow.digest == pack.digest)
            )
            if known is None:
                # In the ledger first: a policy change that cannot be logged does not happen.
                self.ledger.append(
                    PolicyVersionEntry(
                        time=iso(datetime.now(UTC)), digest=pack.digest, files=pack.files
                    ).to_json()
                )
                session.add(
                    PolicyVersionRow(
                        digest=pack.digest, activated=datetime.now(UTC), files=pack.files
                    )
                )
        if unchecked is not None:
            # Not written: the words are checked again next time (a few queries).
            with contextlib.suppress(OSError):
                (self.settings.home / WORDS_MARKER).write_text(unchecked + "\n", "ascii")
        self.__dict__["policy_pack"] = pack
        self.__dict__.pop("policy", None)
        self.__dict__.pop("decisions", None)
        self.record_settings()
        return pack

    def _check_words_in_use(self, pack: PolicyPack) -> str | None:
        """Refuse a ``[vault.retention_days]`` key ``pack`` does not declare, every time
        (config.toml may change without the pack; first, so that a typo is always named as
        one); then refuse ``pack`` when it lacks a word still in use (:func:`words_in_use`),
        unless this home checked this very pack with the directory as it is
        (``policies.checked`` holds the pack's digest and the directory's version: a process
        still running an earlier pack may have given a subject a flag since). Returns what to
        write into the marker once the pack is activated, None when it holds that already.

        Raises :class:`ConfigurationError` and :class:`VocabularyInUse` listing every use.
        """
        self.retention_days(pack.vocabulary)
        marker = self.settings.home / WORDS_MARKER
        state = f"{pack.digest} {self.directory.version()}"
        try:
            last = marker.read_text(encoding="ascii").strip()
        except OSError:
            last = ""
        checked = last == state
        if not checked:
            from custos.access.words import words_in_use

            # Only a process that activated this very pack writes to the vault (ingest is
            # a command of its own), so with the pack unchanged only the directory's flags
            # need checking again: the vault's scan is the costly part.
            same_pack = last.partition(" ")[0] == pack.digest
            problems = words_in_use(self, pack.vocabulary, vault=not same_pack)
            if problems:
                raise VocabularyInUse(
                    f"{self.settings.policy_dir}: the policy pack lacks {len(problems)} "
                    "word(s) in use; it was not activated, and nothing is decided until it "
                    "has them",
                    problems,
                    hint="keep the words in vocabulary.yaml (a word no policy permits gives "
                    "nobody access: deny by default, while retention still shreds its "
                    "data); drop one only once its data is shredded, its retention removed "
                    "and nobody carries the flag",
                )
        return None if checked else state

    def record_settings(self) -> bool:
        """Ledger the settings that change decisions (``[residency]``, ``[approvals]``) when
        they differ from those this home last ledgered, so a decision can be replayed with
        the settings it was made under. True when an entry was written. Raises
        :class:`LedgerUnavailable` (then the new settings are not taken up: retried next
        time)."""
        body = decision_settings(self.settings)
        digest = self._settings_digest
        marker = self.settings.home / SETTINGS_MARKER
        try:
            if marker.read_text(encoding="ascii").strip() == digest:
                return False
        except OSError:
            pass
        self.ledger.append(
            SettingsEntry(
                time=iso(datetime.now(UTC)),
                digest=digest,
                residency=body["residency"],
                approvals=body["approvals"],
                # Any setting added later is ledgered too, after these.
                extra={k: v for k, v in body.items() if k not in ("residency", "approvals")},
            ).to_json()
        )
        # Not written: it is ledgered again next time (an extra entry, never a missing one).
        with contextlib.suppress(OSError):
            marker.write_text(digest + "\n", encoding="ascii")
        return True

    def _admissible(self, requests: Sequence[AccessRequest]) -> None:
        """Refuse, before anything is batched or decided, a request asserting break-glass
        (:class:`RequestRefused`) or using a word the active pack does not know
        (:class:`InvalidInput`): one caller's bad request must not fail a batch of others'."""
        _refuse_asserted_break_glass(requests)
        check_words(requests, self.policy_pack.vocabulary)

    def decide(self, request: AccessRequest, *, source: str = "custos") -> Decision:
        """Decide ``request`` and durably log the decision before returning it.

        Raises for unknown ids, and :class:`LedgerUnavailable` when the decision cannot be
        logged: then nothing was decided (fail closed). Calls from several threads at once
        are decided and logged together.
        """
        self._admissible([request])
        return self._checks.run(request, source)

    def decide_many(
        self, requests: Sequence[AccessRequest], *, source: str = "custos"
    ) -> list[Decision]:
        """Decide many requests (one policy batch) and log them (one durable ledger batch).

        Raises :class:`RequestRefused` when a request asserts break-glass (see
        :meth:`break_glass`), with nothing decided.
        """
        self._admissible(requests)
        return self.log_decisions(self.decisions.decide_many(requests), source)

    def read(self, request: AccessRequest, *, source: str = "custos") -> ReadResult:
        """The guarded read (see :mod:`custos.access.read`).

        The records are decrypted in memory, then the decision and the release are appended
        to the ledger in one durable batch (decision first), and only then returned: if that
        append fails, nothing leaves (:class:`LedgerUnavailable`). A refusal is logged alone.
        Raises for unknown ids, and :class:`IntegrityError` (after logging the decision) when
        a ciphertext does not belong to its row. Calls from several threads at once run
        together (:meth:`read_many`).
        """
        self._admissible([request])
        return self._reads.run(request, source)

    def read_many(
        self, requests: Sequence[AccessRequest], *, source: str = "custos"
    ) -> list[ReadResult | CustosError]:
        """Guarded reads of many requests: one policy batch, each allowed request's records
        decrypted in memory, then every decision and release appended in one durable batch
        (each release right after its decision), and only then returned.

        One outcome per request, in order: its :class:`ReadResult`, or the error its release
        alone raised (an :class:`IntegrityError`), in which case its decision was logged and
        nothing of it released. Raises, with nothing logged and nothing returned, for an
        unknown id in any request and :class:`LedgerUnavailable` when the batch cannot be
        logged (fail closed), and :class:`RequestRefused` when a request asserts break-glass
        (see :meth:`break_glass`).
        """
        from custos.access.read import ReadResult, release_entry
        from custos.vault import Release

        self._admissible(requests)
        decisions = self.decisions.decide_many(requests)
        ids = [new_event_id() for _ in decisions]
        batch = self._decision_entries(decisions, ids, source)
        releases: list[Release | CustosError | None] = []
        for decision in decisions:
            released: Release | CustosError | None = None
            if decision.allowed and decision.precision is not None:
                request = decision.request
                try:
                    released = self.vault.release(
                        request.subject, request.category, decision.precision, request.at()
                    )
                except CustosError as exc:
                    released = exc
            releases.append(released)
        # Each release's entry goes right after its own decision's.
        entries: list[dict[str, Any]] = []
        for decision, event_id, entry, released in zip(
            decisions, ids, batch, releases, strict=True
        ):
            entries.append(entry)
            if isinstance(released, Release):
                entries.append(
                    release_entry(decision, event_id, released.count, released.shredded, source)
                )
        receipts = self.ledger.append_many(entries)
        telemetry.count_decisions(d.outcome for d in decisions)
        self._alert_authority(zip(decisions, ids, strict=True))
        outcomes: list[ReadResult | CustosError] = []
        at = 0
        for decision, event_id, released in zip(decisions, ids, releases, strict=True):
            logged = dataclasses.replace(
                decision, event_id=event_id, ledger_index=receipts[at].index
            )
            at += 1
            if isinstance(released, Release):
                outcomes.append(
                    ReadResult(logged, released.records, released.shredded, receipts[at].index)
                )
                at += 1
            else:
                outcomes.append(ReadResult(logged) if released is None else released)
        return outcomes

    @cached_property
    def query_desk(self) -> QueryDesk:
        """Guarded SQL (see :mod:`custos.access.query`); ``[sql]`` settings from config.toml.
        Raises :class:`ConfigurationError` for a bad ``[sql]`` value."""
        from custos.access.query import QueryDesk

        return QueryDesk(self)

    def data_map(self) -> DataMap:
        """The home's data map (``sources.yaml``), ledgered (a ``data_map`` entry) before it
        is first used. Raises ``DataMapError`` and :class:`LedgerUnavailable`."""
        return self.query_desk.maps.current(self)

    def query(self, request: QueryRequest, *, source_tag: str = "sql") -> QueryResult:
        """One guarded SELECT on a source of the data map (see :mod:`custos.access.query`):
        decided per pinned subject and category (or per category, in aggregate), run
        read-only under the statement timeout and row cap, its decisions and release
        appended in one durable batch, and only then returned.

        Raises ``SqlRejected`` (not one understood SELECT), ``QueryRefused`` (a shape custos
        will not run, a group under ``k``, or a refusing decision: the decisions are logged
        first), :class:`InvalidInput` (unknown source, purpose…), ``UnknownPrincipal`` /
        ``UnknownSubject``, ``SourceUnavailable`` / ``SourceFailed`` (the decisions are
        logged, nothing released) and :class:`LedgerUnavailable` (nothing leaves).
        Thread-safe.
        """
        return self.query_desk.query(request, source_tag=source_tag)

    def ingest(
        self,
        lines: Sequence[str],
        source: str,
        *,
        rejects: Path | None = None,
        now: datetime | None = None,
    ) -> IngestReport:
        """Store sensitive records (see :meth:`Vault.ingest_lines`: those already past
        retention at ``now`` are kept coarse only) and log the ingest."""
        now = now or datetime.now(UTC)
        report = self.vault.ingest_lines(lines, source, rejects=rejects, now=now)
        self.ledger.append(
            IngestEntry(
                time=iso(now),
                added=report.added,
                categories=report.categories,
                rejected=report.rejected,
                expired=report.expired,
            ).to_json()
        )
        return report

    def shred(self, now: datetime | None = None) -> ShredReport:
        """Destroy data keys past retention, after logging what will be destroyed.

        When nothing has expired, nothing is logged or changed (the service calls this on a
        schedule). Runs on one host take turns (a lock file in the home), so workers that
        start together log one shredding, not one each. Raises :class:`LedgerUnavailable`
        (and destroys nothing) when the ledger cannot record it.
        """
        from custos.vault import ShredReport

        now = now or datetime.now(UTC)
        with (self.settings.home / SHRED_LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            expired = self.vault.expired_keys(now)
            if not expired:
                return ShredReport([], 0, {}, iso(now))
            categories: dict[str, int] = {}
            for _, category in expired:
                categories[category] = categories.get(category, 0) + 1
            self.ledger.append(
                ShredEntry(time=iso(now), keys=len(expired), categories=categories).to_json()
            )
            return self.vault.shred(expired, now)

    def verify_authority(self, *, sample: int | None = None) -> Replayer:
        """Re-derive the authority state from the ledger alone, hold the tables and every
        decision to it, and replay the decisions with their recorded policy version and
        settings (``sample``: about that many, spread over the log). ``projection.findings``
        of the result name each row (table and id) or decision (index) the ledger does not
        vouch for; ``results`` hold the replays. Raises :class:`StoreUnavailable`."""
        from custos.access.replay import Replayer
        from custos.ledger.follow import follow_ledger

        size = self.ledger.size()
        stride = max(1, size // sample) if sample else 1
        replayer = Replayer(self.settings, stride=stride)
        follow_ledger(self.ledger, [replayer], end=size)
        projection = replayer.projection
        raw_directory = DirectoryStore(self.db)  # unchecked reads: every row, as stored
        tables: list[tuple[str, Iterable[tuple[str, int | None, Mapping[str, Any], bool]]]] = [
            (
                "principal",
                ((p.id, p.authority, p.facts(), False) for p in raw_directory.principals()),
            ),
            ("subject", ((s.id, s.authority, s.facts(), False) for s in raw_directory.subjects())),
            ("ticket", ((t.id, t.authority, t.facts(), False) for t in raw_directory.tickets())),
            (
                "grant",
                (
                    (g.id, g.authority, g.ledger_facts(), g.revoked is not None)
                    for g in self.approvals.grants(limit=2**31 - 1)
                    if g.logged
                ),
            ),
        ]
        tables.extend(self.accounts.rows().items())
        for kind, rows in tables:
            projection.findings.extend(projection.compare(kind, rows))
        projection.findings.extend(projection.compare_cases(*self.casebook.triage_rows()))
        return replayer

    def replay(self, index: int) -> Replayed:
        """The decision at ledger ``index`` decided again from the ledger alone (see
        :mod:`custos.access.replay`). Raises :class:`NotFound` when no decision that names
        its authority is there."""
        from custos.access.replay import Replayer
        from custos.ledger.follow import follow_ledger

        replayer = Replayer(self.settings, wanted={index})
        follow_ledger(self.ledger, [replayer], end=index + 1)
        if not replayer.results:
            raise NotFound(
                f"ledger index {index} holds no decision that names its authority",
                hint="decisions logged before custos ledgered authority cannot be replayed",
            )
        return replayer.results[0]

    def _decided_or_refused(
        self,
        requests: Sequence[AccessRequest],
        source: str,
        why: str,
        *,
        refuse: Callable[[Decision], bool],
    ) -> list[Decision]:
        """Decide (and log) ``requests``; raise :class:`RequestRefused` naming the deciding
        policy of the first decision ``refuse`` rejects."""
        # Not decide_many: break-glass asks its decisions here, with the flag set.
        decisions = self.log_decisions(self.decisions.decide_many(requests), source)
        for decision in decisions:
            if refuse(decision):
                rule = decision.reasons[0].policy if decision.reasons else "deny-by-default"
                raise RequestRefused(f"{why}: {decision.explanation}", rule=rule)
        return decisions

    def _decision_entries(
        self,
        decisions: Sequence[Decision],
        ids: Sequence[str],
        source: str,
        *,
        data_map: str | None = None,
    ) -> list[dict[str, Any]]:
        people: dict[str, tuple[str | None, str | None]] = {}
        digest = self._settings_digest
        for d in decisions:
            if d.request.principal not in people:
                try:
                    person = self.directory.principal(d.request.principal)
                    people[d.request.principal] = (person.role, person.team)
                except AuthorityMismatch:
                    # Denied for it; the entry says nothing the ledger does not vouch for.
                    people[d.request.principal] = (None, None)
        return [
            decision_entry(
                d,
                event_id,
                source,
                *people[d.request.principal],
                settings=digest,
                data_map=data_map,
            )
            for d, event_id in zip(decisions, ids, strict=True)
        ]

    def log_decisions(self, decisions: list[Decision], source: str) -> list[Decision]:
        """Durably log decisions made by :attr:`decisions` (one ledger batch); returns them
        with their event ids and ledger indexes. Raises :class:`LedgerUnavailable`: then none
        of them may be acted on."""
        ids = [new_event_id() for _ in decisions]
        receipts = self.ledger.append_many(self._decision_entries(decisions, ids, source))
        telemetry.count_decisions(d.outcome for d in decisions)
        logged = [
            dataclasses.replace(d, event_id=event_id, ledger_index=receipt.index)
            for d, event_id, receipt in zip(decisions, ids, receipts, strict=True)
        ]
        self._alert_authority(zip(logged, ids, strict=True))
        return logged

    def _alert_authority(self, logged: Iterable[tuple[Decision, str]]) -> None:
        """File a critical alert for every decision (with its event id) denied for
        ``authority-mismatch``: a row a decision rests on was changed outside custos, which
        is an insider at the database, whoever the requester was. The denial stands even if
        the alert cannot be filed."""
        refused = [
            (d, event_id)
            for d, event_id in logged
            if d.reasons and d.reasons[0].policy == AUTHORITY_MISMATCH
        ]
        if not refused:
            return
        from custos.detect import Finding  # only now: detection brings DuckDB

        now = datetime.now(UTC)
        findings = [
            Finding(
                rule="authority_mismatch",
                severity="critical",
                principals=(d.request.principal,),
                subjects=(d.request.subject,),
                events=(event_id,),
                first_seen=now,
                last_seen=now,
                explanation=(
                    f"custos denied {d.request.principal} access to {d.request.subject}'s "
                    f"{d.request.category}: {d.reasons[0].explanation}. Someone changed the "
                    "database outside custos; `custos log verify` names every such row."
                ),
                key=f"{d.request.principal}|{d.request.subject}|{now.date().isoformat()}",
            )
            for d, event_id in refused
        ]
        try:
            self.casebook.record(findings)
        except CustosError:
            log.warning("could not file an authority-mismatch alert; the access was denied")

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Custos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse_asserted_break_glass(requests: Sequence[AccessRequest]) -> None:
    """Break-glass is taken, never asserted: a decision or read that sets the flag itself
    would release precise data with no grant, no critical alert and no mandatory review.
    The grant :meth:`Custos.break_glass` returns carries the flag into later decisions."""
    if any(request.break_glass for request in requests):
        raise RequestRefused(
            "break-glass cannot be asserted on a decision or read",
            rule="break-glass",
            hint="take a break-glass grant (`custos approvals break-glass`, POST "
            "/v1/break-glass), which raises a critical alert and opens mandatory review; "
            "reads under that grant are then allowed",
        )
