"""Canonical identifiers (contract, "Identifiers"): one rule in the domain, applied by every
writer and reader, refusing what is not canonical and never normalising it silently."""

from __future__ import annotations

import unicodedata

import orjson
import pytest

from consentry.domain.model import MAX_ID_LENGTH, Invalid, ObjectionEvent, identifier_problem
from consentry.links import make_link_token
from consentry.wire import check_objection, parse_post

JOSE_NFC = unicodedata.normalize("NFC", "José")
JOSE_NFD = unicodedata.normalize("NFD", "José")


@pytest.mark.parametrize("user_id", ["u-42", "Alice", "alice", JOSE_NFC, "名前", "a b", "x" * MAX_ID_LENGTH, "a\u00a0b"])
def test_canonical_ids_pass(user_id: str) -> None:
    assert identifier_problem(user_id) is None


@pytest.mark.parametrize(
    ("user_id", "why"),
    [
        ("", "empty"),
        ("x" * (MAX_ID_LENGTH + 1), "longer"),
        (JOSE_NFD, "NFC"),
        ("alice ", "whitespace"),
        (" alice", "whitespace"),
        ("alice\u00a0", "whitespace"),
        ("al\tice", "control"),
        ("al\x00ice", "control"),
        ("al\u200bice", "format"),  # zero width space (Cf)
        ("al\u202eice", "format"),  # right-to-left override (Cf)
        ("Jo\u0085sé", "control"),
    ],
)
def test_ids_that_are_not_canonical_are_refused_with_a_reason(user_id: str, why: str) -> None:
    problem = identifier_problem(user_id)
    assert problem is not None and why in problem


def test_case_is_kept_apart_never_folded() -> None:
    assert identifier_problem("Alice") is None and identifier_problem("alice") is None
    assert "Alice" != "alice"  # two people: nothing in the rule compares them


def post(user_id: str) -> bytes:
    return orjson.dumps({"post_id": "p-1", "user_id": user_id, "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "t"})


@pytest.mark.parametrize("user_id", [JOSE_NFD, "alice ", "al\u200bice"])
def test_a_post_under_a_non_canonical_id_is_rejected_not_normalised(user_id: str) -> None:
    result = parse_post(post(user_id), user_id.encode())
    assert type(result) is Invalid and result.code == "not_canonical" and "user_id" in result.detail


def test_the_hot_path_accepts_plain_and_unicode_ids() -> None:
    for user_id in ("u-42", JOSE_NFC):
        assert parse_post(post(user_id), user_id.encode()).user_id == user_id  # type: ignore[union-attr]


def test_an_objection_under_a_non_canonical_id_is_refused_before_it_is_acknowledged() -> None:
    invalid = check_objection(ObjectionEvent("o-1", JOSE_NFD, "object", 1_700_000_000_000_000, "web"))
    assert invalid is not None and invalid.code == "not_canonical"


def test_a_one_click_link_cannot_be_made_for_a_non_canonical_id() -> None:
    with pytest.raises(ValueError, match="NFC"):
        make_link_token("a-secret-of-sufficient-length-0123456789", JOSE_NFD)
