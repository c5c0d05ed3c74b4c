"""Identifiers in a URL path: `{name:id}` takes any id, and `require_canonical` checks it.

Canonical ids may hold slashes (contract, "Identifiers"), and a line break must reach the
handler to be refused with a 422 naming it: Starlette's `str` parameter stops at a slash and its
`path` at a line break, so such ids matched no route and got an undocumented 404.
"""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.convertors import PathConvertor, register_url_convertor

from consentry.domain.model import identifier_problem


class AnyIdConvertor(PathConvertor):
    """The rest of the path, slashes and line breaks included."""

    regex = "(?s:.*)"


register_url_convertor("id", AnyIdConvertor())


def require_canonical(name: str, value: str) -> None:
    """422 naming the parameter and the problem unless `value` is a canonical identifier."""
    reason = identifier_problem(value)
    if reason is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} {reason}")
