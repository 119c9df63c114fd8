"""Request bodies of the API (responses are the parts' own ``to_dict`` shapes)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from custos.vocabulary import Action, Precision

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
#: A category or purpose: a word of the active pack's vocabulary, which the guarded path
#: checks (the words are the pack's, not the code's, so they are no enum here).
Word = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Category = Word
Purpose = Word


BodyT = TypeVar("BodyT", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckBody(_Body):
    """One access request. ``principal`` defaults to the token's own (and may only be it)."""

    principal: Id | None = None
    subject: Id
    category: Category
    purpose: Purpose
    ticket: Id | None = None
    action: Action = "read"
    precision: Precision | None = None
    # Only ever false: break-glass is taken at POST /v1/break-glass, and a request that
    # asserts it is refused (403) rather than silently ignored. Strict, so "yes" is no "true".
    break_glass: StrictBool = False
    reason: Text | None = None


class QueryBody(_Body):
    """One guarded SELECT on a source of the data map. ``principal`` defaults to the token's
    own (and may only be it); ``ticket`` explains an individual-level query."""

    principal: Id | None = None
    source: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_-]*$")]
    sql: Annotated[str, Field(min_length=1, max_length=100_000)]
    purpose: Purpose
    ticket: Id | None = None
    reason: Text | None = None


class BatchBody(_Body):
    requests: Annotated[list[CheckBody], Field(min_length=1, max_length=1000)]


class RequestBody(_Body):
    """A just-in-time access request (approval needed)."""

    principal: Id | None = None
    subject: Id
    categories: Annotated[list[Category], Field(min_length=1, max_length=10)]
    purpose: Purpose
    ticket: Id | None = None
    precision: Precision = "precise"
    #: What the grant is to cover; approvers approve these actions and no others.
    actions: Annotated[list[Action], Field(min_length=1, max_length=4)] = ["read"]
    reason: Text
    hours: Annotated[float, Field(gt=0, le=24 * 7)] | None = None


class BreakGlassBody(_Body):
    principal: Id | None = None
    subject: Id
    categories: Annotated[list[Category], Field(min_length=1, max_length=10)]
    purpose: Purpose = "security_incident"
    ticket: Id | None = None
    actions: Annotated[list[Action], Field(min_length=1, max_length=4)] = ["read"]
    reason: Text
    hours: Annotated[float, Field(gt=0, le=24 * 7)] | None = None


class AnswerBody(_Body):
    reason: Text


class ReviewBody(_Body):
    note: Text


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that reads its JSON body itself (see :func:`parsed_body`)."""
    schema = model.model_json_schema()
    if "$defs" in schema:  # would need moving into the document's components
        raise TypeError(f"{model.__name__} nests models; declare it as a FastAPI body instead")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def parsed_body(request: Request, model: type[BodyT]) -> BodyT:
    """The request's JSON body as ``model``, validated as FastAPI would validate a body
    parameter. Raises ``RequestValidationError`` (the API's 422 error shape)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
