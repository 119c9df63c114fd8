"""One JSON error shape for every failure: ``{"error": {"code", "message", ...}}``.

A :class:`CustosError` keeps its own code, message and status; request validation becomes
``invalid_input`` (422) listing each problem by location; anything unexpected is a 500 that
says only "internal error" (the details go to the server log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from custos.errors import CustosError, ScimRefused

log = logging.getLogger("custos.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _is_scim(request: Request) -> bool:
    """SCIM clients get RFC 7644's error shape instead of custos's."""
    return request.url.path.startswith("/scim/")


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(("/v1/", "/metrics", "/healthz", "/readyz")) and (
        "text/html" in request.headers.get("accept", "")
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(CustosError)
    async def custos_error(request: Request, exc: CustosError) -> Response:
        if _is_scim(request):
            from custos.api.routes_feeds import scim_error_response

            return scim_error_response(exc)
        if exc.http_status == 401 and _wants_html(request):
            from custos.web import login_page  # the dashboard answers people with a page

            return login_page(request, status_code=401)
        if exc.http_status in (403, 404) and _wants_html(request):
            from custos.web import error_page

            return error_page(request, exc.http_status, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        if exc.http_status == 429:
            headers = {"Retry-After": "1"}
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for item in exc.errors():
            where = ".".join(str(part) for part in item.get("loc", ()))
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        if _is_scim(request):
            return await custos_error(request, ScimRefused("; ".join(problems), "invalidValue"))
        return JSONResponse(
            error_body("invalid_input", "the request is invalid", problems=problems),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI's own answer to a body it cannot parse (not UTF-8, nested too deeply):
            # the same 422 the routes that parse their own bodies give.
            return JSONResponse(
                error_body("invalid_input", "the request body is not valid JSON"),
                status_code=422,
            )
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if _is_scim(request):
            return await custos_error(request, ScimRefused(message, None, status=exc.status_code))
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)
