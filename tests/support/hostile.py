"""Hostile `posts` messages, each with the verdict the contract implies for it.

The generator breaks one thing per message and knows what it broke, so the expected reason
is derived from the generator, not from the code under test. Used by the pure fuzz
(tests/unit/test_hostile_posts.py) and by the pipeline fuzz (tests/reliability/test_hostile_input.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

STORED = "stored"  # valid, public, adult, never objected: must be in the store exactly once
DROPPED = "dropped"  # valid but not eligible (not public, minor): neither stored nor rejected
DUPLICATE = "duplicate"  # re-delivery of a stored post_id: stored once

BAD_TIMESTAMPS = [
    "yesterday", "", "2025-05-27", "2025-05-27T10:00:00", "2025-05-27T10:00Z", "2025-13-01T00:00:00Z",
    "2025-02-30T00:00:00Z", "2025-05-27T25:00:00Z", "2025-05-27T10:60:00Z", "2025-05-27T10:00:00+24:00",
    "2025-W22-2T10:00:00Z", "2025-05-27T10:00:00,5Z", "2025-05-27T10:00:00+0000", "20250527T100000Z",
    "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2025-05-27T10:00:00.Z",
    "2025-05-27T10:00:00.1234567890Z", "2025-05-27T10:00:00 Z", " 2025-05-27T10:00:00Z", "2025-05-27T10:00:00Z ",
    "２０２５-05-27T10:00:00Z", "2025-05-27T10:00:00Z\x00", "1748340000", "2025-05-27T10:00:00+00:00:30",
]
GOOD_TIMESTAMPS = [
    "2025-05-27T10:00:00Z", "2025-05-27t10:00:00z", "2025-05-27 10:00:00Z", "2025-05-27T10:00:00.5+02:00",
    "2025-05-27T10:00:00.123456789-07:30", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-07-20T20:17:40Z",
]
NOT_OBJECTS = [b"[]", b"[1,2]", b'"a post"', b"42", b"3.14", b"null", b"true", b"false"]
NOT_JSON = [
    b"", b"{", b"}", b"not json", b"{'post_id': 'x'}", b'{"post_id": "x",}', b"\xff\xfe{}", b'{"a": "\xc3\x28"}',
    b'{"a": "\\ud800"}', b"[" * 2000 + b"]" * 2000, b"NaN", b'{"a": NaN}', b"\x00", b'{"a":1}{"b":2}',
]


@dataclass(frozen=True)
class Case:
    key: bytes | None
    value: bytes | None
    verdict: str  # a reason code (posts.rejected), or STORED / DROPPED / DUPLICATE
    field: str | None = None  # the field the rejection reason must name
    post_id: str | None = None
    text: str | None = None  # to check that no log ever shows it
    label: str = ""


def valid_post(rng: random.Random, n: int, tag: str) -> dict:
    user = f"{tag}-u{n}-{rng.randrange(1 << 30):x}"
    return {
        "post_id": f"{tag}-p{n}",
        "user_id": user,
        "created_at": rng.choice(GOOD_TIMESTAMPS),
        "visibility": "public",
        "text": f"secret-text-{tag}-{n}-{rng.randrange(1 << 60):x} " + rng.choice(["Bonjour !", "héllo ✓", "\u202e\ud7ff", "a\nb\tc", "\"quoted\"", ""]),
        "lang": rng.choice(["fr", "en", None]),
        "country": rng.choice(["FR", "DE", None]),
        "author_is_minor": False,
    }


def _encode(post: dict) -> bytes:
    return orjson.dumps(post)


def hostile_posts(rng: random.Random, count: int, tag: str, big: bool = True) -> Iterator[Case]:
    """`count` messages, about a third valid. `big` adds a few values around the 1 MiB limit."""
    stored: list[Case] = []
    for n in range(count):
        post = valid_post(rng, n, tag)
        key = post["user_id"].encode()
        text = post["text"]
        roll = rng.random()
        if roll < 0.30:
            if rng.random() < 0.2:
                post["extra"] = {"unknown": [1, 2, {"x": None}], "text": "nested"}  # unknown fields: kept, not stored
                post["another_unknown"] = "ignored"
            case = Case(key, _encode(post), STORED, post_id=post["post_id"], text=text, label="valid")
            stored.append(case)
            yield case
            continue
        if roll < 0.34 and stored:
            earlier = rng.choice(stored)
            yield Case(earlier.key, earlier.value, DUPLICATE, post_id=earlier.post_id, text=earlier.text, label="duplicate")
            continue
        if roll < 0.37:
            if rng.random() < 0.5:
                post["visibility"] = rng.choice(["friends", "private"])
            else:
                post["author_is_minor"] = True
            yield Case(key, _encode(post), DROPPED, post_id=post["post_id"], text=text, label="not eligible")
            continue
        yield _break(rng, post, key, text, big and rng.random() < 0.004)


def _break(rng: random.Random, post: dict, key: bytes, text: str, big: bool) -> Case:
    kind = rng.randrange(14)
    if big:
        padding = (1 << 20) - len(_encode(post)) + rng.randrange(1, 4096)
        post["text"] = text + "x" * padding
        return Case(key, _encode(post), "too_large", text=text, label="over 1 MiB")
    if kind == 0:
        return Case(key, rng.choice(NOT_JSON), "invalid_json", label="not json")
    if kind == 1:
        value = rng.choice(NOT_OBJECTS)
        return Case(key, value, "not_an_object", label="not an object")
    if kind == 2:
        name = rng.choice(["post_id", "user_id", "created_at", "visibility", "text"])
        if rng.random() < 0.5:
            del post[name]
        else:
            post[name] = None
        return Case(key, _encode(post), "missing_field", name, text=text, label=f"missing {name}")
    if kind == 3:
        name, bad = rng.choice(
            [("post_id", 42), ("post_id", ["p"]), ("user_id", 7), ("user_id", {"id": "u"}), ("created_at", 1748340000),
             ("created_at", ["2025-05-27T10:00:00Z"]), ("text", 12), ("text", ["a"]), ("text", True), ("lang", 5),
             ("author_is_minor", "false"), ("author_is_minor", 0), ("author_is_minor", None)]
        )
        post[name] = bad
        return Case(key, _encode(post), "wrong_type", name, text=text, label=f"{name} mistyped")
    if kind == 4:
        name, bad = rng.choice(
            [("visibility", "PUBLIC"), ("visibility", ["public"]), ("visibility", {"public": True}), ("visibility", 1),
             ("country", "fr"), ("country", "FRA"), ("country", "F1"), ("country", 33), ("post_id", ""), ("user_id", "")]
        )
        if name == "user_id":
            key = b""
        post[name] = bad
        return Case(key, _encode(post), "bad_value", name, text=text, label=f"{name} bad value")
    if kind == 5:
        return Case(rng.choice([b"someone-else", None, key + b" ", key.upper()]), _encode(post), "key_mismatch", "key", text=text, label="key differs")
    if kind == 6:
        post["created_at"] = rng.choice(BAD_TIMESTAMPS)
        return Case(key, _encode(post), "bad_timestamp", "created_at", text=text, label="bad timestamp")
    if kind == 7:
        name = rng.choice(["post_id", "user_id", "lang"])
        limit = 35 if name == "lang" else 256
        post[name] = "h" * rng.randrange(limit + 1, 20_000)
        if name == "user_id":
            key = post["user_id"].encode()
        return Case(key, _encode(post), "bad_value", name, text=text, label=f"huge {name}")
    if kind == 8:
        name = rng.choice(["post_id", "user_id", "text", "lang"])
        post[name] = (post[name] or "fr") + "\x00tail"
        if name == "user_id":
            key = post["user_id"].encode()
        return Case(key, _encode(post), "null_byte", name, text=text, label=f"NUL in {name}")
    if kind == 9:
        return Case(key, None, "empty", label="no value")
    if kind == 10:
        # A valid JSON document with the text buried under deep nesting of unknown fields.
        post["deep"] = orjson.loads(b"[" * 200 + b"]" * 200)
        return Case(key, _encode(post), STORED, post_id=post["post_id"], text=text, label="deep unknown field")
    if kind == 11:
        # Huge but legal text: stored whole.
        post["text"] = text + " " + "z" * rng.randrange(2_000, 50_000)
        return Case(key, _encode(post), STORED, post_id=post["post_id"], text=text, label="long text")
    if kind == 12:
        # Bytes that are valid JSON only after a lenient decoder: a BOM, or trailing garbage.
        return Case(key, rng.choice([b"\xef\xbb\xbf", b""]) + _encode(post) + rng.choice([b" x", b"\x00"]), "invalid_json", text=text, label="trailing garbage")
    post["created_at"] = rng.choice(GOOD_TIMESTAMPS)
    post["extra_" + str(rng.randrange(100))] = "\x00 NULs are fine in unknown fields"
    return Case(key, _encode(post), STORED, post_id=post["post_id"], text=text, label="NUL in unknown field")
