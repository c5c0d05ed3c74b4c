"""Ingest's fast path for posts (consentry.wire.parse_common_post) is the generic validator's
semantics: whenever it answers, `parse_post` accepts the same post with the same values; when
it does not, the generic validator decides (and every rejection is its own)."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.contract import POST
from consentry.domain.model import NO_NOTICES, Post
from consentry.domain.eligibility import decide, decide_values
from consentry.domain.notices import EU_EEA, NoticePolicy
from consentry.domain.model import NoticeFacts
from consentry.timeutil import format_rfc3339, parse_rfc3339
from consentry.wire import encode_training_post, encode_training_values, parse_common_post, parse_post
from tests.support.hostile import hostile_posts


def agrees(value: bytes | None, key: bytes | None) -> bool:
    """Assert the fast path agrees with parse_post on (value, key); True when it answered."""
    fields = parse_common_post(value, key)
    generic = parse_post(value, key)
    if fields is None:
        return False
    post_id, user_id, created_at, visibility, text, lang, country, minor = fields
    assert type(generic) is Post, (value, key, generic)
    expected = (generic.post_id, generic.user_id, generic.created_at_text, generic.visibility, generic.text, generic.lang, generic.country, generic.author_is_minor)
    assert (post_id, user_id, created_at, visibility, text, lang, country, minor) == expected
    assert all(type(a) is type(b) for a, b in zip(fields, expected))  # True is not 1, str is not a subclass
    assert parse_rfc3339(created_at) == generic.created_at_us
    assert encode_training_values(post_id, user_id, created_at, text, lang, country, 7) == encode_training_post(generic, 7)
    return True


BASE = {
    "post_id": "p-1", "user_id": "u-42", "created_at": "2025-05-27T10:00:00Z", "visibility": "public",
    "text": "Bonjour !", "lang": "fr", "country": "FR", "author_is_minor": False,
}
# Values each field may take: the plain ones and their near misses (types, edges, Unicode).
ODD = [
    None, "", " ", "a", "a ", " a", "p-1", "u-42", "Alice", "e\u0301", "\u00e9", "a\u200bb", "a\x00b", "a\x7fb", "a\tb", "\ud800", "x" * 256, "x" * 257,
    "public", "friends", "private", "Public", "FR", "fr", "F", "FRA", "É1", "DE", "\uff26\uff32",
    "2025-05-27T10:00:00Z", "2025-05-27T10:00:00.123456Z", "2025-05-27T10:00:00.000000Z", "2025-02-30T10:00:00Z",
    "2025-05-27T10:00:00z", "2025-05-27t10:00:00Z", "2025-05-27 10:00:00Z", "2025-05-27T10:00:00+02:00", "2025-05-27T10:00:00.1Z",
    "2025-05-27T10:00:00.1234567Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2025-05-27T10:00:00.12345\u0663Z",
    "x" * 35, "x" * 36, "en-GB", 0, 1, -1, 2**64, 1.5, True, False, [], ["a"], {}, {"a": 1},
]
FIELD = st.sampled_from([*BASE, "type", "other"])


@st.composite
def posts(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    post = dict(BASE)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(FIELD)
        if draw(st.integers(0, 5)) == 0:
            post.pop(name, None)
        else:
            post[name] = draw(st.one_of(st.sampled_from(ODD), st.text(max_size=8)))
    try:
        value = orjson.dumps(post)
    except TypeError:  # a lone surrogate (orjson refuses to write it): write it by hand
        value = repr(post).encode("utf-8", "surrogatepass")
    user = post.get("user_id")
    key = draw(st.sampled_from([
        user.encode("utf-8", "surrogatepass") if type(user) is str else b"u-42", b"u-42", b"U-42", None, b"",
    ]))
    return value, key


def test_every_field_with_every_odd_value_agrees() -> None:
    """Each field of a valid post replaced by each odd value, or removed: the near misses one by one."""
    answered = 0
    for name in [*BASE, "other"]:
        for odd in [*ODD, "removed"]:
            post = {k: v for k, v in BASE.items() if not (odd == "removed" and k == name)}
            if odd != "removed":
                post[name] = odd
            try:
                value = orjson.dumps(post)
            except TypeError:  # a lone surrogate: orjson refuses to write it
                continue
            answered += agrees(value, b"u-42")
    assert answered > 50


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A valid post's bytes with a few bytes replaced, inserted or deleted (duplicate keys,
    escapes, broken UTF-8 ...)."""
    value = bytearray(orjson.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(value)))
        piece = draw(st.sampled_from([b'"', b"\\", b"\\u0000", b"\\ud800", b",\"user_id\":\"u-43\"", b"\xff", b"\xc3", b" ", b"0", b"}", b"Z", b".", b"1e999"]))
        if draw(st.booleans()):
            value[at:at + 1] = piece
        else:
            value[at:at] = piece
    return bytes(value), b"u-42"


@settings(max_examples=400, deadline=None)
@given(st.one_of(posts(), mutated(), st.tuples(st.binary(max_size=40), st.sampled_from([b"u-42", None]))))
def test_the_fast_path_agrees_with_the_generic_validator(case: tuple[bytes, bytes | None]) -> None:
    agrees(*case)


def test_the_hostile_posts_agree_and_the_common_shape_takes_the_fast_path() -> None:
    rng = random.Random(16)
    answered = 0
    for case in hostile_posts(rng, 3_000, "fast"):
        answered += agrees(case.value, case.key)
    assert answered > 300  # the well-formed ones
    assert agrees(orjson.dumps(BASE), b"u-42")
    assert agrees(orjson.dumps({**BASE, "created_at": "2025-05-27T10:00:00.123456Z", "lang": None, "extra": [1]}), b"u-42")
    assert parse_common_post(None, b"u-42") is None and parse_common_post(b"x" * (1 << 20) + b"{}", b"u-42") is None


def test_the_fast_path_knows_every_field_of_the_post_declaration() -> None:
    """A field added to (or changed in) consentry.contract.POST must be added to the fast path
    too: until then this fails (the fast path would accept what the generic one refuses)."""
    declared = [(f.name, f.kind, f.required, f.nullable, f.max_length, f.values) for f in POST.fields]
    assert declared == [
        ("post_id", "id", True, False, None, ()),
        ("user_id", "id", True, False, None, ()),
        ("key", "key", True, False, None, ()),
        ("created_at", "timestamp", True, False, None, ()),
        ("visibility", "enum", True, False, None, ("public", "friends", "private")),
        ("text", "text", True, False, None, ()),
        ("lang", "text", False, True, 35, ()),
        ("country", "country", False, True, None, ()),
        ("author_is_minor", "boolean", False, False, None, ()),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 100), st.one_of(st.none(), st.integers(0, 100))), max_size=3),
    st.integers(0, 100), st.booleans(), st.sampled_from(["public", "friends", "private"]), st.sampled_from([None, "FR", "US"]),
    st.integers(0, 100), st.sampled_from([NO_NOTICES, NoticeFacts(10, frozenset({"FR"})), NoticeFacts(90, frozenset({"US"}))]),
    st.sampled_from([None, NoticePolicy(20, EU_EEA)]),
)
def test_decide_values_is_decide(intervals, created, minor, visibility, country, now, notices, policy) -> None:  # type: ignore[no-untyped-def]
    post = Post("p", "u", created, visibility, "t", None, country, minor)
    intervals = tuple(intervals)
    assert decide_values(intervals, created, minor, visibility, country, now, notices, policy) is decide(post, intervals, now, notices, policy)
    if not intervals:  # created_at_us is not read without intervals
        assert decide_values((), None, minor, visibility, country, now, notices, policy) is decide(post, (), now, notices, policy)


def test_a_non_canonical_created_at_is_the_generic_paths() -> None:
    """Valid but not as Consentry writes it: the generic path, which reformats it."""
    for created_at in ("2025-05-27T12:00:00+02:00", "2025-05-27T10:00:00.000000Z", "2025-05-27 10:00:00Z", "2025-05-27T10:00:00.5Z"):
        value = orjson.dumps({**BASE, "created_at": created_at})
        assert parse_common_post(value, b"u-42") is None
        post = parse_post(value, b"u-42")
        assert type(post) is Post and format_rfc3339(post.created_at_us).startswith("2025-05-27T10:00:00")
