"""The error answers every part of the gateway gives (a missing token, a refused scope, a body
over the limit, a request that does not match the schema, a rate limit), as the contract's
problem bodies and OpenAPI `responses` entries with examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Problem(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "a sentence saying what went wrong and what to do"}]})

    detail: str | list[Any]


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    detail: list[ValidationIssue]


def problem(description: str, example: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry: a Problem body with its own example."""
    return {"model": Problem, "description": description, "content": {"application/json": {"example": {"detail": example}}}}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

UNAUTHORIZED = problem("Missing, invalid or expired token.", "token expired")
FORBIDDEN = problem(
    "The token lacks the `consentry:admin` scope (or a person's key signed it: scopes count only in operators' tokens).",
    "this operation needs the consentry:admin scope, in a token signed with an operator's key or by the identity provider",
)
UNREADABLE = problem("The body could not be read: it is not UTF-8.", "There was an error parsing the body")
TOO_LARGE = problem("The request body is over the limit.", "request body too large: this endpoint accepts at most 64 KiB")
INVALID = {
    "model": ValidationProblem,
    "description": "The request does not match the schema (FastAPI's validation error list).",
    "content": {
        "application/json": {
            "example": {"detail": [{"loc": ["body", "channel"], "msg": "Input should be 'web', 'app', 'email' or 'api'", "type": "literal_error"}]}
        }
    },
}
RATE_LIMITED = {**problem("Too many requests from this user or address.", "too many requests; retry in 3 s"), "headers": RETRY_AFTER}
