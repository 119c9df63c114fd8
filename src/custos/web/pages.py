"""Dashboard routes. Every page needs a caller with an admin-plane role: a signed-in person
(unsafe methods CSRF-checked) or a bearer token whose role the page allows."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from custos.access import Custos, QueryRequest, acts
from custos.accounts.store import SESSION_LIFETIME
from custos.api.auth import (
    SESSION_COOKIE,
    Caller,
    acting_principal,
    approver_principal,
    check_origin,
    requires,
    system_of,
    triager_principal,
)
from custos.detect import DISPOSITIONS, AccessEvent
from custos.errors import (
    AuthenticationFailed,
    CustosError,
    InvalidInput,
    NotFound,
    RateLimited,
)
from custos.reports import render_html, verify_report
from custos.store.directory import PolicyVersionRow
from custos.web import charts
from custos.wire import text_value

log = logging.getLogger("custos.web")
_TEMPLATES = Jinja2Templates(directory=str(resources.files("custos.web") / "templates"))


def utc_text(moment: datetime | str | None, label: bool = True) -> str:
    """A time for people: UTC to the second, ``YYYY-MM-DD HH:MM:SS`` and `` UTC`` when
    ``label`` (a column headed "Time (UTC)" says it once). Takes a ``datetime`` or the ISO
    8601 text of custos's formats; an empty string for None. Raises ``ValueError`` for
    text that is not a time."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:  # stored naive only where the store's type makes it UTC
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if label else text


_TEMPLATES.env.filters["utc"] = utc_text


def fold_releases(events: list[AccessEvent]) -> list[AccessEvent]:
    """The access log as people read it: a custos release whose decision is also listed is
    left out, its count already folded into the decision (see ``EventStore.append``), so a
    precise read is one row (decision, precision, records released), not two alike."""
    listed = {e.id for e in events}
    return [
        e
        for e in events
        if not (
            e.extras().get("type") == "release"
            and f"{e.extras().get('decision_id')}:release" == e.id
            and e.extras().get("decision_id") in listed
        )
    ]


PEOPLE = requires("auditor", "investigator", "approver", "privacy_officer", "admin")
#: Who may see requests and grants: not the admin, who manages accounts and nothing else.
OVERSEERS = requires("auditor", "investigator", "approver", "privacy_officer")
APPROVING = requires("approver", "privacy_officer")
pages = APIRouter(include_in_schema=False)


class LoginThrottle:
    """At most ``limit`` sign-in attempts per username per ``window`` seconds that did not
    succeed.

    An attempt counts from the moment it starts, before the password is checked, so parallel
    guesses cannot all pass the check before the first failure is recorded; a success forgives
    only its own attempt. Counts are per process (each ``serve --workers`` process keeps its
    own) and at most ``max_names`` usernames are remembered: past that, names with no attempt
    inside the window are forgotten first, then the longest-untouched ones.
    """

    def __init__(self, limit: int = 5, window: float = 60.0, max_names: int = 10_000) -> None:
        self.limit, self.window, self.max_names = limit, window, max_names
        self._attempts: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def attempt(self, username: str) -> float:
        """Count an attempt for ``username`` and return its stamp (for :meth:`succeeded`).
        Raises :class:`RateLimited` when ``limit`` attempts are already in the window."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._attempts.pop(username, []) if now - t < self.window]
            if len(recent) >= self.limit:
                self._attempts[username] = recent
                raise RateLimited("too many failed sign-ins; wait a minute")
            recent.append(now)
            self._attempts[username] = recent  # re-inserted: dict order is least recent first
            if len(self._attempts) > self.max_names:
                self._forget(now)
            return now

    def succeeded(self, username: str, stamp: float) -> None:
        """The attempt ``stamp`` signed in: it no longer counts against ``username``."""
        with self._lock:
            recent = self._attempts.get(username)
            if recent is not None and stamp in recent:
                recent.remove(stamp)
                if not recent:
                    del self._attempts[username]

    def __len__(self) -> int:
        return len(self._attempts)

    def _forget(self, now: float) -> None:
        for name in [n for n, ts in self._attempts.items() if now - ts[-1] >= self.window]:
            del self._attempts[name]
        while len(self._attempts) > self.max_names:
            del self._attempts[next(iter(self._attempts))]


def _render(
    request: Request, name: str, who: Caller | None, status: int = 200, **ctx: Any
) -> Response:
    return _TEMPLATES.TemplateResponse(
        request, name, {"who": who, "now": datetime.now(UTC), **ctx}, status_code=status
    )


def login_page(request: Request, *, status_code: int = 200, error: str | None = None) -> Response:
    """The sign-in page (also the body of a 401 for people's browsers)."""
    try:
        client = system_of(request).oidc
    except CustosError:
        client = None
    sso = client.settings.name if client is not None else None
    return _render(request, "login.html", None, status=status_code, error=error, sso=sso)


_HEADINGS = {403: "Not allowed", 404: "Not found"}


def error_page(request: Request, status_code: int, message: str) -> Response:
    """A refusal or a missing page, for people's browsers (the API answers JSON)."""
    heading = _HEADINGS.get(status_code, "Something went wrong")
    return _render(
        request, "error.html", None, status=status_code, heading=heading, message=message
    )


def _system(request: Request) -> Custos:
    return system_of(request)


def _set_session_cookie(response: Response, secret: str) -> None:
    """The session cookie: HttpOnly, Secure, SameSite=Strict, for the session's lifetime."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        secure=True,
        samesite="strict",
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
    )


@pages.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return login_page(request)


@pages.post("/login")
def login(
    request: Request,
    username: str = Form(..., max_length=64),
    password: str = Form(..., max_length=1024),
) -> Response:
    """Sign in; sets an HttpOnly, Secure, SameSite=Strict session cookie. Refused from
    another site's page (login CSRF would sign a victim in as the attacker)."""
    check_origin(request)
    throttle: LoginThrottle = request.app.state.login_throttle
    stamp = throttle.attempt(username)
    try:
        account = _system(request).accounts.authenticate(username, password)
    except AuthenticationFailed as exc:
        # Never the name: people type their password into it.
        log.warning("a password sign-in failed")
        return login_page(request, status_code=401, error=exc.message)
    throttle.succeeded(username, stamp)
    _system(request).record_sign_in(account, "password")
    secret, _ = _system(request).accounts.start_session(account)
    response = RedirectResponse("/", status_code=303)
    _set_session_cookie(response, secret)
    return response


OIDC_COOKIE = "custos_oidc"


@pages.get("/login/oidc")
def login_oidc(request: Request) -> Response:
    """Start signing in with the configured OpenID Connect provider."""
    client = _system(request).oidc
    if client is None:
        raise NotFound("single sign-on is not configured")
    url, pending = client.start()
    response = RedirectResponse(url, status_code=303)
    # Lax, not Strict: the provider's redirect back is a cross-site top-level navigation.
    response.set_cookie(
        OIDC_COOKIE,
        pending,
        httponly=True,
        secure=True,
        samesite="lax",
        max_age=600,
        path="/login/oidc",
    )
    return response


@pages.get("/login/oidc/callback")
def login_oidc_callback(
    request: Request,
    code: str = Query(..., max_length=4096),
    state: str = Query(..., max_length=256),
) -> Response:
    """Finish an OpenID Connect sign-in: only identities linked to an account get in."""
    system = _system(request)
    client = system.oidc
    if client is None:
        raise NotFound("single sign-on is not configured")
    try:
        identity = client.finish(code, state, request.cookies.get(OIDC_COOKIE, ""))
        account = system.accounts.by_oidc(identity)
    except AuthenticationFailed as exc:
        return login_page(request, status_code=401, error=exc.message)
    system.record_sign_in(account, "oidc")
    secret, _ = system.accounts.start_session(account)
    # A page, not a redirect: the browser arrived from the provider's site, and a SameSite=
    # Strict cookie is only sent on the next navigation that starts here.
    response = HTMLResponse(
        '<!doctype html><meta http-equiv="refresh" content="0;url=/">'
        '<title>Signed in</title><p><a href="/">Signed in: continue</a></p>'
    )
    response.delete_cookie(OIDC_COOKIE, path="/login/oidc")
    _set_session_cookie(response, secret)
    return response


@pages.post("/logout")
def logout(request: Request, who: Caller = Depends(PEOPLE)) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    _system(request).accounts.end_session(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@pages.get("/", response_class=HTMLResponse)
def overview(request: Request, who: Caller = Depends(PEOPLE)) -> Response:
    system = _system(request)
    system.approvals.sweep()
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(13, -1, -1)]
    # From the access events (custos's own decisions arrive there from the ledger within a
    # housekeeping round, imported ones when imported): counted by the database per day.
    per_day = system.events.per_day(days)
    outcomes: Counter[str] = Counter()
    for counts in per_day.values():
        outcomes.update(counts)
    volume = charts.bars(
        [charts.Bar(d.strftime("%d %b"), sum(per_day[d].values())) for d in days],
        title="Accesses per day, last 14 days",
    )
    alerts = request.app.state.alerts_by_severity(system)
    severity = charts.bars(
        [charts.Bar(s, alerts.get(s, 0), s) for s in ("critical", "high", "medium", "low")],
        title="Open alerts by severity",
        height=140,
        values=True,
    )
    pending = system.approvals.requests(status="pending")
    reviews = system.approvals.grants(review_open=True)
    return _render(
        request,
        "overview.html",
        who,
        volume=volume,
        severity=severity,
        alerts=alerts,
        outcomes=outcomes,
        pending=pending,
        reviews=reviews,
        ledger_size=system.ledger.size(),
        checkpoint=system.ledger.latest_checkpoint(),
    )


@pages.get("/approvals", response_class=HTMLResponse)
def approvals_queue(request: Request, who: Caller = Depends(OVERSEERS)) -> Response:
    system = _system(request)
    system.approvals.sweep()
    return _render(
        request,
        "approvals.html",
        who,
        pending=system.approvals.requests(status="pending"),
        recent=[r for r in system.approvals.requests(limit=50) if r.status != "pending"],
        reviews=system.approvals.grants(review_open=True),
        reviews_needed=system.approvals.settings.reviews_needed,
    )


@pages.get("/approvals/{request_id}", response_class=HTMLResponse)
def approval_detail(
    request_id: str, request: Request, who: Caller = Depends(OVERSEERS)
) -> Response:
    system = _system(request)
    found = system.approvals.request(request_id)
    grant = system.approvals.grant(found.grant_id) if found.grant_id else None
    can_answer = (
        who.has("approver", "privacy_officer") and "admin" not in who.roles and who.principal
    )
    return _render(
        request, "approval.html", who, request_=found, grant=grant, can_answer=bool(can_answer)
    )


@pages.post("/approvals/{request_id}/answer", response_class=HTMLResponse)
def answer(
    request_id: str,
    request: Request,
    reason: str = Form("", max_length=2000),
    verdict: str = Form(..., pattern="^(approve|deny)$"),
    who: Caller = Depends(APPROVING),
) -> Response:
    """Approve or deny from the dashboard; a refusal is shown with its rule, in place."""
    system = _system(request)
    error = None
    try:
        principal = approver_principal(who)
        if verdict == "approve":
            system.approvals.approve(request_id, principal, reason, operator=who.operator())
        else:
            system.approvals.deny(request_id, principal, reason, operator=who.operator())
        system.approvals.outbox.deliver()
    except CustosError as exc:
        rule = getattr(exc, "rule", None)
        error = f"{exc.message} (rule: {rule})" if rule else exc.message
    found = system.approvals.request(request_id)
    grant = system.approvals.grant(found.grant_id) if found.grant_id else None
    return _render(
        request,
        "approval_state.html",
        who,
        request_=found,
        grant=grant,
        error=error,
        can_answer=True,
    )


@pages.get("/ledger", response_class=HTMLResponse)
def ledger_page(request: Request, who: Caller = Depends(PEOPLE)) -> Response:
    system = _system(request)
    checkpoints = system.ledger.checkpoints()[-20:]
    return _render(
        request,
        "ledger.html",
        who,
        size=system.ledger.size(),
        checkpoints=[(s, n) for s, _, n in reversed(checkpoints)],
        cosignatures=system.ledger.cosignatures(),
        witnesses=[w.name for w in system.witnesses],
        verifier_key=system.ledger.signer.verifier_key(),
    )


@pages.get("/policies", response_class=HTMLResponse)
def policies_page(request: Request, who: Caller = Depends(PEOPLE)) -> Response:
    system = _system(request)
    pack = system.policy_pack
    with system.db.session() as session:
        history = [
            (row.digest, row.activated, sorted(row.files))
            for row in session.scalars(
                select(PolicyVersionRow).order_by(PolicyVersionRow.activated.desc())
            )
        ]
    return _render(
        request,
        "policies.html",
        who,
        policies=sorted(pack.policies.values(), key=lambda p: p.id),
        history=history,
    )


REPORTERS = requires("auditor", "privacy_officer")


def _report(request: Request, who: Caller, subject_id: str) -> dict[str, Any]:
    names = "privacy_officer" in who.roles
    return _system(request).subject_report(subject_id, names=names, viewer=who.viewer("dashboard"))


def _verified_report(
    request: Request, who: Caller, subject_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report as this viewer may see it, and its own offline check."""
    report = _report(request, who, subject_id)
    return report, verify_report(json.dumps(report)).to_dict()


@pages.get("/subjects/{subject_id}", response_class=HTMLResponse)
def subject_page(subject_id: str, request: Request, who: Caller = Depends(REPORTERS)) -> Response:
    """A subject's accesses, as their transparency report shows them, verified."""
    report, check = _verified_report(request, who, subject_id)
    return _render(request, "subject.html", who, report=report, check=check)


@pages.get("/subjects/{subject_id}/report.json")
def subject_report_json(
    subject_id: str, request: Request, who: Caller = Depends(REPORTERS)
) -> Response:
    body = json.dumps(_report(request, who, subject_id), indent=2, sort_keys=True)
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="report-{subject_id}.json"'},
    )


@pages.get("/subjects/{subject_id}/report.html", response_class=HTMLResponse)
def subject_report_html(
    subject_id: str, request: Request, who: Caller = Depends(REPORTERS)
) -> Response:
    report, check = _verified_report(request, who, subject_id)
    # The standalone page carries its own stylesheet; allow that, and nothing else.
    return HTMLResponse(
        render_html(report, check=check),
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "frame-ancestors 'none'"
        },
    )


TRIAGE = requires("investigator", "privacy_officer")
READERS = requires("investigator", "privacy_officer", "auditor")


@pages.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, who: Caller = Depends(READERS)) -> Response:
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    system = _system(request)
    system.record_view(who.viewer("dashboard"), "alerts")
    found = sorted(
        system.casebook.alerts(),
        key=lambda a: (order.get(a.severity, 9), -a.last_seen.timestamp()),
    )
    return _render(
        request,
        "alerts.html",
        who,
        alerts=found,
        can_run=who.has("investigator", "privacy_officer"),
    )


@pages.post("/alerts/run")
def run_detection_now(request: Request, who: Caller = Depends(TRIAGE)) -> Response:
    _system(request).detect()
    return RedirectResponse("/alerts", status_code=303)


@pages.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(alert_id: str, request: Request, who: Caller = Depends(READERS)) -> Response:
    """An alert, its explanation and its evidence events."""
    return _alert_view(request, who, alert_id)


def _alert_view(request: Request, who: Caller, alert_id: str, error: str | None = None) -> Response:
    system = _system(request)
    alert = system.casebook.alert(alert_id)
    system.record_view(who.viewer("dashboard"), "alert", subjects=alert.subjects, alert=alert.id)
    case = system.casebook.case(alert.case) if alert.case else None
    return _render(
        request,
        "alert.html",
        who,
        alert=alert,
        case=case,
        evidence=system.events.get(alert.events),
        bulk_evidence=system.bulk_accesses.get(alert.events),
        can_triage=who.has("investigator", "privacy_officer"),
        can_report=who.has("auditor", "privacy_officer"),
        dispositions=DISPOSITIONS,
        error=error,
    )


@pages.post("/cases/{case_id}/close")
def close_case(
    case_id: str,
    request: Request,
    disposition: str = Form("", max_length=32),
    comment: str = Form("", max_length=2000),
    who: Caller = Depends(TRIAGE),
) -> Response:
    """Close a case with the disposition the officer chose. None chosen is refused in
    place (the form has no default verdict: a verdict is a decision, never a default)."""
    system = _system(request)
    if not disposition:
        case = system.casebook.case(case_id)
        if case.alerts:
            # In place, as a refused approval is: htmx swaps only a successful answer.
            return _alert_view(
                request,
                who,
                case.alerts[0].id,
                error="Choose a disposition (confirmed misuse, legitimate or false positive) "
                "before closing the case: none was chosen, and nothing was closed.",
            )
        raise InvalidInput("choose a disposition before closing the case")
    principal = triager_principal(who)
    case = acts.close_case(
        system,
        who.operator(),
        case_id,
        disposition,
        author=who.name,
        acting_as=principal,
        comment=comment or None,
    )
    first = case.alerts[0].id if case.alerts else None
    return RedirectResponse(f"/alerts/{first}" if first else "/alerts", status_code=303)


@pages.get("/events", response_class=HTMLResponse)
def events_page(
    request: Request,
    principal: str | None = None,
    subject: str | None = None,
    who: Caller = Depends(READERS),
) -> Response:
    """The access log (who accessed whom, why, and what custos decided): never contents."""
    system = _system(request)
    system.record_view(
        who.viewer("dashboard"), "access_log", subject=subject or None, about=principal or None
    )
    system.feed_events()
    found = fold_releases(
        system.events.search(principal=principal or None, subject=subject or None, limit=300)
    )
    return _render(request, "events.html", who, events=found, principal=principal, subject=subject)


@pages.get("/principals/{principal_id}", response_class=HTMLResponse)
def principal_page(principal_id: str, request: Request, who: Caller = Depends(READERS)) -> Response:
    """A principal: facts, their weekly breadth against their peers', alerts, recent access."""
    system = _system(request)
    person = system.directory.principal(principal_id)
    system.record_view(who.viewer("dashboard"), "principal", about=person.id)
    peers = [
        p.id
        for p in system.directory.principals()
        if p.role == person.role and p.team == person.team and p.id != person.id
    ]
    since = datetime.now(UTC) - timedelta(weeks=8)
    weeks = [(since + timedelta(weeks=n)) for n in range(8)]
    labels = [w.strftime("%d %b") for w in weeks]

    def weekly(pid: str) -> list[float]:
        seen: list[set[str]] = [set() for _ in weeks]
        for event in system.events.search(principal=pid, since=since, limit=5000):
            slot = min(7, int((event.time - since).total_seconds() // (7 * 86400)))
            seen[slot].add(event.subject)
        return [float(len(s)) for s in seen]

    mine = weekly(person.id)
    peer_series = [weekly(p) for p in peers[:30]]
    median = (
        [
            float(sorted(col)[len(col) // 2]) if col else 0.0
            for col in (list(values) for values in zip(*peer_series, strict=True))
        ]
        if peer_series
        else [0.0] * len(weeks)
    )
    chart = charts.compare(mine, median, labels, title="Distinct subjects per week")
    alerts = [a for a in system.casebook.alerts() if person.id in a.principals]
    recent = fold_releases(system.events.search(principal=person.id, limit=50))
    return _render(
        request,
        "principal.html",
        who,
        person=person,
        peers=len(peers),
        chart=chart,
        alerts=alerts,
        recent=recent,
    )


#: Who may run guarded SQL from the dashboard: signed-in people with a principal, never the
#: admin (who manages accounts and nothing else). The policy decides what each may see.
CONSOLE = requires("auditor", "investigator", "approver", "privacy_officer")
_REFUSAL_TITLES = {"QueryRefused": "Refused", "SqlRejected": "Not run"}


def _console(request: Request, who: Caller, **shown: Any) -> Response:
    system = _system(request)
    try:
        sources = sorted(system.data_map().sources)
        unavailable = None if sources else "No data map to query: sources.yaml names no source"
    except CustosError as exc:
        sources, unavailable = [], f"No data map to query: {exc.message}"
    return _render(
        request,
        "sql.html",
        who,
        sources=sources,
        unavailable=unavailable,
        # The active pack's purposes, in its order: a pack's own (hr_investigation) too.
        purposes=list(system.policy_pack.vocabulary.purposes),
        **shown,
    )


@pages.get("/sql", response_class=HTMLResponse)
def sql_console(request: Request, who: Caller = Depends(CONSOLE)) -> Response:
    """The SQL console: a source, a purpose, a ticket and one SELECT, run as the signed-in
    person's principal through ``Custos.query``."""
    acting_principal(who, None)
    return _console(request, who, purpose=_system(request).policy_pack.vocabulary.purposes[0])


@pages.post("/sql", response_class=HTMLResponse)
def sql_run(
    request: Request,
    source: str = Form(..., max_length=128),
    purpose: str = Form(..., max_length=64),
    sql: str = Form(..., max_length=20_000),
    ticket: str = Form("", max_length=128),
    reason: str = Form("", max_length=2000),
    who: Caller = Depends(CONSOLE),
) -> Response:
    """Run one guarded SELECT and answer the result fragment: coarse or precise rows with
    each column's precision, or the refusal with its reason (logged like any other)."""
    principal = acting_principal(who, None)
    query = QueryRequest(
        principal=principal,
        source=source,
        sql=sql,
        purpose=purpose,
        ticket=ticket.strip() or None,
        reason=reason.strip() or None,
    )
    result, refusal = None, None
    try:
        result = _system(request).query(query, source_tag=f"dashboard:{who.name}")
    except CustosError as exc:
        # Messages never carry values (custos.errors), so they are safe to show as they are.
        title = _REFUSAL_TITLES.get(type(exc).__name__, "Not run")
        rule = getattr(exc, "rule", None)
        message = f"{exc.message} (rule: {rule})" if rule else exc.message
        refusal = {"title": title, "message": message, "hint": exc.hint}
    rows = [[text_value(v) for v in row] for row in result.rows] if result else []
    return _TEMPLATES.TemplateResponse(
        request,
        "sql_result.html",
        {"who": who, "result": result, "rows": rows, "refusal": refusal},
    )


def _alerts_by_severity(system: Custos) -> dict[str, int]:
    counts: Counter[str] = Counter(a.severity for a in system.casebook.alerts())
    return dict(counts)


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages and assets on ``app``."""
    app.state.login_throttle = LoginThrottle()
    if not hasattr(app.state, "alerts_by_severity"):
        app.state.alerts_by_severity = _alerts_by_severity
    app.include_router(pages)
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("custos.web") / "static")),
        name="static",
    )


__all__ = ["CustosError", "install", "login_page"]
