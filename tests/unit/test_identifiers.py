"""Canonical identifiers (contract, "Identifiers"): one rule in the domain, applied by every
writer and reader, refusing what is not canonical and never normalising it silently."""

from __future__ import annotations

import dataclasses
import unicodedata

import orjson
import pytest

from consentry.domain.model import MAX_ID_LENGTH, Invalid, Notice, ObjectionEvent, identifier_problem
from consentry.links import make_link_token
from consentry.wire import check_notice, check_objection, notice_from_dict, objection_from_dict, parse_objection, parse_post

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
        ("\ud800x", "surrogate"),  # lone surrogates (Cs): no UTF-8 form, so no Kafka key nor URL
        ("x\udfff", "surrogate"),
        ("Zo\udcc3\udcab", "surrogate"),  # what surrogateescape makes of non-UTF-8 bytes
        ("\ud83d\ude42", "surrogate"),  # a surrogate *pair* in a str is two lone ones, not 🙂
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


LONE_SURROGATES = ["\ud800x", "x\udfff", "a\udcffb"]


@pytest.mark.parametrize("bad", LONE_SURROGATES)
def test_every_parser_refuses_a_lone_surrogate_in_any_id_and_none_raises(bad: str) -> None:
    """Each id field, from objects (what the gateway checks before acknowledging) and from bytes
    (JSON escapes, which orjson refuses): an Invalid, never a UnicodeEncodeError later."""
    event = ObjectionEvent("o-1", "u-1", "object", 1_700_000_000_000_000, "web")
    for field in ("objection_id", "user_id"):
        invalid = check_objection(dataclasses.replace(event, **{field: bad}))
        assert invalid is not None and invalid.code == "not_canonical" and field in invalid.detail, (field, invalid)
    objection = {"objection_id": "o-1", "user_id": "u-1", "kind": "object", "received_at": "2025-05-27T10:00:01Z", "channel": "web"}
    for field in ("objection_id", "user_id"):
        invalid = objection_from_dict({**objection, field: bad})
        assert type(invalid) is Invalid and invalid.code == "not_canonical", (field, invalid)
        raw = orjson.dumps({**objection, field: "PLACEHOLDER"}).replace(b"PLACEHOLDER", bad.encode("ascii", "backslashreplace"))
        assert type(parse_objection(raw)) is Invalid
    notice = Notice("n-1", "u-1", "2025-05", "email", 1_700_000_000_000_000, "FR")
    for field in ("notice_id", "user_id", "notice_version"):
        invalid = check_notice(dataclasses.replace(notice, **{field: bad}))
        assert invalid is not None and invalid.code == "not_canonical" and field in invalid.detail, (field, invalid)
        assert type(notice_from_dict({"notice_id": "n-1", "user_id": "u-1", "notice_version": "v", "channel": "email",
                                      "sent_at": "2025-05-27T10:00:01Z", "country": "FR", field: bad})) is Invalid
    for field in ("post_id", "user_id"):
        raw = post("u-1").replace(b'"' + field.encode() + b'":"' + (b"p-1" if field == "post_id" else b"u-1") + b'"',
                                  b'"' + field.encode() + b'":"' + bad.encode("ascii", "backslashreplace") + b'"')
        assert type(parse_post(raw, b"u-1")) is Invalid, field


@pytest.mark.parametrize("bad", LONE_SURROGATES)
def test_a_token_or_a_link_naming_a_lone_surrogate_is_refused(bad: str) -> None:
    from consentry.keys import key_set
    from consentry.links import LINK_AUDIENCE, LINK_PURPOSE, InvalidLink, verify_link_token
    from services.gateway.auth import InvalidToken, principal_from_claims

    with pytest.raises(InvalidToken, match="surrogate"):
        principal_from_claims({"sub": bad, "exp": 2_000_000_000}, scoped=False)
    with pytest.raises(ValueError, match="surrogate"):
        make_link_token("a-secret-of-sufficient-length-0123456789", bad)
    # A link signed with the right key whose jti (the CSRF binding) is not text: refused, not a 500.
    token = key_set("a-secret-of-sufficient-length-0123456789", "the link key").sign(
        {"sub": "u-1", "aud": LINK_AUDIENCE, "purpose": LINK_PURPOSE, "channel": "email", "jti": bad, "iat": 1, "exp": 2_000_000_000})
    with pytest.raises(InvalidLink):
        verify_link_token("a-secret-of-sufficient-length-0123456789", token)
