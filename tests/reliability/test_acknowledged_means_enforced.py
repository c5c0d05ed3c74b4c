"""Acknowledged means enforced, as a property: whatever objection request the gateway answers
`202`, the consent service applies and ingest enforces.

Hypothesis generates requests (POST and DELETE, one to four per example for the same user):
reasons of arbitrary Unicode (NUL and other controls, format characters, lone surrogates
sent as JSON escapes, or as raw bytes that are not UTF-8), channels inside and outside the
contract's list, notice versions, extra fields, Idempotency-Keys (fresh, reused within an
example, odd), and the user as the token's subject, canonical or not (NFD, surrounding
spaces, controls, format characters, too long, surrogates). Against a running gateway,
consent and ingest on the embedded broker (started once for the module, with the production
default: the notice rule on):

* every `202` names the token's user and ends `enforced` (or later) in the consent state
  itself (`/v1/user/status` of the consent service, not the gateway's view) within a deadline;
* every other answer is a 4xx or a 503 that the OpenAPI document lists for the operation;
* a 503 is transient: the same request, repeated while the system is healthy, is answered
  otherwise within seconds (a 503 that never clears tells a client to retry for ever).

This is the test that catches the gateway acknowledging an event the consent service's
parser refuses (a NUL in `reason`, once): without `check_objection` in
services/gateway/filing.py, the NUL example below is answered 202 and never enforced.
"""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consentry.domain.model import HISTORY_KEPT, ConsentState, identifier_problem
from consentry.timeutil import parse_rfc3339
from services.gateway.consent_client import ConsentClient
from tests.support import ledger
from tests.support.system import System
from tests.support.wait import eventually

ENFORCE_DEADLINE_S = 90.0
TRANSIENT_503_S = 20.0


@pytest.fixture(scope="module")
def running(broker: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    bootstrap, flavor = broker
    with System(bootstrap, flavor, tmp_path_factory.mktemp("acknowledged"), notices=True) as system:
        system.create_topics()
        system.start("consent", "ingest", "gateway")
        yield system


# ---------------------------------------------------------------------- strategies

def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


CANONICAL_USERS = st.one_of(
    st.from_regex(r"\Au-[a-z0-9]{1,12}\Z"),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Z")), min_size=1, max_size=24).filter(
        lambda s: unicodedata.is_normalized("NFC", s)),
    st.sampled_from(["Alice", "alice", "Zoë", "用户-42", "user with spaces inside", "a/b", "a%2Fb", "?#&=", "🙂", "{x}", "a}b", ".", ".."]),
)
ODD_USERS = st.one_of(
    st.sampled_from(["\ud800x", "x\udfff", "Zoe\u0308", " alice", "alice ", "ali\u200bce", "ali\x07ce", "\ufeffbob", "a" * 257, "é".join("ab"), "\u2028x"]),
    CANONICAL_USERS.map(lambda s: " " + s),
    CANONICAL_USERS.map(_nfd),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.text(st.characters(exclude_categories=()), min_size=1, max_size=20),  # lone surrogates included
)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=300)  # every category, lone surrogates included
REASONS = st.one_of(
    st.none(),
    ANY_TEXT,
    st.sampled_from(["\x00", "a\x00b", "\x1b[31m", "\u202eevil", "\ud800", "line\nbreak", "x" * 2000, "x" * 2001, ""]),
)
CHANNELS = st.one_of(st.sampled_from(["web", "app", "email", "api"]), st.sampled_from(["import", "fax", "", "WEB", "web "]), st.text(max_size=8))
NOTICE_VERSIONS = st.one_of(st.none(), st.sampled_from(["2025-05", "", "\x00", "v" * 257]), ANY_TEXT)
# Header values as HTTP can carry them (h11 refuses surrounding whitespace); 201+ characters are over the limit.
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2"]),
                 st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=210).filter(lambda k: k == k.strip()))


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, str]:
    """(raw body, how it was made). JSON with escapes (surrogates as \\udxxx), or UTF-8 that a
    lone surrogate makes invalid, or no body at all."""
    if draw(st.integers(0, 5)) == 0:
        return None, "no body"
    body: dict[str, Any] = {}
    for name, values in (("reason", REASONS), ("channel", CHANNELS), ("notice_version", NOTICE_VERSIONS)):
        if draw(st.booleans()):
            body[name] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["user_id", "kind", "received_at", "extra"]))] = draw(st.text(max_size=10))
    ascii_only = draw(st.booleans())
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    return raw, f"json(ensure_ascii={ascii_only}) {body!r}"


@dataclass(frozen=True)
class Request:
    method: str  # POST | DELETE
    key: str | None
    body: bytes | None
    made: str

    def describe(self, user: str) -> str:
        return f"{self.method} as {user!r} key={self.key!r} body={self.made}"


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["POST", "POST", "DELETE"]))
    body, made = draw(bodies()) if method == "POST" else (None, "none")
    return Request(method, draw(KEYS), body, made)


SCENARIOS = st.tuples(st.one_of(CANONICAL_USERS, CANONICAL_USERS, ODD_USERS), st.lists(requests(), min_size=1, max_size=4))


# ---------------------------------------------------------------------- the property

@dataclass
class Ledger:
    documented: dict[tuple[str, str], set[int]]
    accepted: list[tuple[str, str, str]] = field(default_factory=list)  # (user, objection_id, request)
    received_at: dict[str, int] = field(default_factory=dict)  # objection_id -> the receipt's received_at
    answers: dict[int, int] = field(default_factory=dict)
    folded: int = 0  # 202s found applied as folded events (past a row's HISTORY_KEPT)


def documented_statuses(system: System) -> dict[tuple[str, str], set[int]]:
    doc = httpx.get(f"{system.gateway_url}/openapi.json", timeout=10).json()
    return {(method.upper(), path): {int(code) for code in op["responses"]} for path, ops in doc["paths"].items() for method, op in ops.items()}


def send(client: httpx.Client, system: System, user: str, request: Request) -> httpx.Response:
    headers = {"Authorization": f"Bearer {system.token(user)}"}
    if request.key is not None:
        headers["Idempotency-Key"] = request.key
    if request.body is not None:
        headers["Content-Type"] = "application/json"
    path = "/v1/objections" if request.method == "POST" else "/v1/objections/me"
    return client.request(request.method, path, headers=headers, content=request.body)


def check_answer(client: httpx.Client, system: System, record: Ledger, user: str, request: Request) -> None:
    response = send(client, system, user, request)
    described = request.describe(user)
    if response.status_code == 503:
        # Transient, or a lie: the same request again, while the system is healthy.
        deadline = time.monotonic() + TRANSIENT_503_S
        while response.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            response = send(client, system, user, request)
        assert response.status_code != 503, f"503 for {TRANSIENT_503_S}s on a healthy system (retry for ever?): {described}: {response.text[:300]}"
    record.answers[response.status_code] = record.answers.get(response.status_code, 0) + 1
    operation = ("POST", "/v1/objections") if request.method == "POST" else ("DELETE", "/v1/objections/me")
    if response.status_code == 202:
        receipt = response.json()
        assert receipt["user_id"] == user, f"receipt for another user: {receipt} after {described}"
        assert receipt["status"] == "received", receipt
        record.accepted.append((user, receipt["objection_id"], described))
        record.received_at[receipt["objection_id"]] = parse_rfc3339(receipt["received_at"])
        return
    assert 400 <= response.status_code < 500 or response.status_code == 503, f"{response.status_code} for {described}: {response.text[:300]}"
    assert response.status_code in record.documented[operation], (
        f"{response.status_code} is not documented for {operation}: {described}: {response.text[:300]}")


def check_enforced(system: System, record: Ledger) -> None:
    """Every 202 is in the consent state itself, enforced, within the deadline."""
    pending = list(dict.fromkeys(record.accepted))

    def enforced(user: str, objection_id: str) -> bool:
        history = system.consent_status(user)["history"]
        items = {i["objection_id"]: i for i in history}
        if objection_id in items:
            return bool(items[objection_id].get("enforced_at"))
        # A row keeps its newest HISTORY_KEPT events (consentry.domain.consent, "Bounded rows"):
        # the fuzz reuses a few users hundreds of times. Only an applied event is folded out, and
        # it sorted before every kept one (its time in the row is its receipt's or later).
        oldest_kept = min((parse_rfc3339(i["received_at"]) for i in history), default=None)
        if len(history) == HISTORY_KEPT and oldest_kept is not None and record.received_at[objection_id] < oldest_kept:
            record.folded += 1
            return True
        return False

    deadline = time.monotonic() + ENFORCE_DEADLINE_S
    while pending:
        pending = [(u, o, d) for u, o, d in pending if not enforced(u, o)]
        if pending and time.monotonic() > deadline:
            user, objection_id, described = pending[0]
            raise AssertionError(f"{len(pending)} requests answered 202 never enforced within {ENFORCE_DEADLINE_S}s, e.g. {described} "
                                 f"(objection {objection_id}); the consent service holds {system.consent_status(user)}")
        if pending:
            time.sleep(0.5)


def run_property(system: System, examples: int, derandomize: bool) -> Ledger:
    record = Ledger(documented_statuses(system))
    with httpx.Client(base_url=system.gateway_url, timeout=30) as client:

        @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
        @given(SCENARIOS)
        # The regressions this property exists for, tried first every run.
        @example(("u-nul", [Request("POST", None, json.dumps({"reason": "a\x00b"}).encode(), "reason with NUL")]))
        @example(("u-surrogate", [Request("POST", None, b'{"reason": "\\ud800"}', "reason with a lone surrogate (JSON escape)")]))
        @example(("u-replay", [Request("POST", "k", None, "object"), Request("DELETE", None, None, "withdraw"), Request("POST", "k", None, "replay")]))
        # One person objecting more times than a row keeps in full: the oldest are folded, not lost.
        @example(("u-many", [Request("POST", None, None, f"object #{n}") for n in range(HISTORY_KEPT + 6)]))
        def scenario(case: tuple[str, list[Request]]) -> None:
            user, steps = case
            for request in steps:
                check_answer(client, system, record, user, request)

        scenario()
    check_enforced(system, record)
    assert system.processes["gateway"].poll() is None and system.processes["consent"].poll() is None, "a service died"
    return record


@pytest.mark.quick
def test_every_202_ends_enforced_quick(running: System) -> None:
    record = run_property(running, examples=80, derandomize=True)
    print(f"answers {record.answers}, {len(record.accepted)} acknowledged, all enforced")
    ledger.record("nothing lost", **{"property examples": 80, "202 answers checked enforced": len(record.accepted)})


@pytest.mark.reliability
@pytest.mark.timeout(1500)
def test_every_202_ends_enforced_full(running: System) -> None:
    record = run_property(running, examples=1_500, derandomize=False)
    print(f"answers {record.answers}, {len(record.accepted)} acknowledged, all enforced")
    ledger.record("nothing lost", **{"property examples": 1_500, "202 answers checked enforced": len(record.accepted),
                                     "202 answers applied and folded out of a full row": record.folded})


@pytest.mark.quick
def test_a_token_subject_with_a_lone_surrogate_is_refused(running: System) -> None:
    documented = documented_statuses(running)
    with httpx.Client(base_url=running.gateway_url, timeout=30) as client:
        for user in ("\ud800x", "x\udfff"):
            for request in (Request("POST", None, None, "object"), Request("DELETE", "k1", None, "withdraw with a key")):
                response = send(client, running, user, request)
                operation = ("POST", "/v1/objections") if request.method == "POST" else ("DELETE", "/v1/objections/me")
                assert response.status_code in (401, 422) and response.status_code in documented[operation], (
                    f"{request.describe(user)}: {response.status_code} {response.text[:200]}")


# Ids a URL path could not carry: `/` splits segments, aiohttp's default pattern refuses `{}`,
# clients remove `.`/`..` segments, `?`/`#` end the path, `%2F` is decoded by some servers.
ROUTING_HARD = [".", "..", "a/b", "/", "a}b", "{x}", "{}", "%2F", "a%2Fb", "..%2F..", "./x", "x/..", "?", "a?b=c", "#", "a#b",
                "a b", "a+b", "%", "%zz", "&x=y", "a;b", "\\", "🙂", "用户/42", "user with spaces inside"]
ROUTING_CHARACTERS = [".", "..", "/", "{", "}", "%2F", "%", "?", "#", " ", "+", "&", "=", ";", "\\"]
ROUTABLE_USERS = st.one_of(
    st.sampled_from(ROUTING_HARD),
    st.builds(lambda a, special, b: a + special + b,
              st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs")), max_size=12),
              st.sampled_from(ROUTING_CHARACTERS),
              st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs")), max_size=12)),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=40),
).filter(lambda user: identifier_problem(user) is None)


class GatewayReads:
    """The user's row as the gateway's own ConsentClient reads it (None: "no row"), over HTTP;
    one client and one event loop for all the reads."""

    def __init__(self, system: System) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = ConsentClient(system.url("consent"))

    def __call__(self, user: str) -> ConsentState | None:
        return self.loop.run_until_complete(self.client.state(user))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.mark.quick
def test_every_user_id_can_be_looked_up_in_the_consent_service(running: System) -> None:
    """Every canonical id reaches the consent service's view for that very id: the consent
    look-up (`/v1/user/status`), the gateway's ConsentClient (`/v1/user/state`, what
    GET /v1/objections/me and the Idempotency-Key checks read) and the gateway itself. Once, the
    id was a path segment: `{`, `}` got 404 (read as "no consent row"), `.` and `..` were
    removed by the clients."""
    gateway_reads = GatewayReads(running)
    with httpx.Client(timeout=30) as client:

        def consent_status(user: str) -> dict[str, Any]:
            response = client.get(f"{running.url('consent')}/v1/user/status", params={"user_id": user})
            assert response.status_code == 200, (user, response.status_code, response.text[:200])
            return response.json()

        # The ids that could not be routed, end to end: an objection filed for each is seen in
        # the consent state by the consent service's look-up and by the gateway's client.
        filed = {}
        for user in ROUTING_HARD:
            response = client.post(f"{running.gateway_url}/v1/objections", headers=running.auth(user))
            assert response.status_code == 202, (user, response.text)
            filed[user] = response.json()["objection_id"]

        def seen(user: str, objection_id: str) -> bool:
            state = gateway_reads(user)
            return (state is not None and objection_id in {e.objection_id for e in state.history}
                    and objection_id in {i["objection_id"] for i in consent_status(user)["history"]})

        for user, objection_id in filed.items():
            eventually(lambda: seen(user, objection_id), timeout=ENFORCE_DEADLINE_S, what=f"{user!r}'s objection in the consent look-ups")

        # Round trip over the identifier alphabet: each answer is for exactly the id asked.
        @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(ROUTABLE_USERS)
        def round_trip(user: str) -> None:
            status = consent_status(user)
            assert status["user_id"] == user, (user, status)
            state = gateway_reads(user)  # raises ConsentUnavailable on any answer but this user's
            assert state is None or state.user_id == user
            mine = client.get(f"{running.gateway_url}/v1/objections/me", headers=running.auth(user))
            assert mine.status_code == 200 and mine.json()["user_id"] == user, (user, mine.status_code, mine.text[:200])

        try:
            round_trip()
        finally:
            gateway_reads.close()
