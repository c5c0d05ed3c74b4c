"""The ground floor: plain types and the vocabulary every other module speaks.

Nothing here knows about JSON, Kafka or HTTP (consentry.wire turns these types into bytes
and back), and this module imports only the standard library. Times are integers: microseconds
since the epoch, UTC.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

# ------------------------------------------------------------------------- limits

MAX_POST_BYTES = 1 << 20  # a `posts` value over this is rejected (contract)
REJECTED_RAW_LIMIT = 4096  # how much of a rejected value `posts.rejected` keeps (contract)
MAX_ID_LENGTH = 256  # user_id, post_id, objection_id, notice_id, notice_version (code points)
MAX_REASON_LENGTH = 2000  # an objection's free-text reason
MAX_LANG_LENGTH = 35  # a BCP 47 tag

# A user's row in the consent table stays bounded whatever their history (consentry.domain.consent,
# "Bounded rows"): the newest events in full, the older ones folded into a summary.
HISTORY_KEPT = 64  # events a row keeps in full (the newest, by time)
REASONS_KEPT = 8  # of those, the newest whose free-text reason is kept
FOLDED_INTERVALS_KEPT = 64  # exact objection intervals of the folded events; older ones merge (erring closed)
FOLDED_IDS_KEPT = 1024  # digests of the newest folded objection ids: their re-deliveries change nothing
FOLDED_AWAITING_KEPT = 16  # folded objections still awaiting their `enforced` or `purged` receipt
TRAINED_ON_IDS_KEPT = 256  # digests of the newest training runs counted in a row's `trained_on_by` (none is counted twice)
MAX_ROW_BYTES = 512 * 1024  # what a row's encoding stays under (tests/unit/test_bounded_rows.py); Kafka's default limit is 1 MB


# --------------------------------------------------------------------- vocabulary


class Visibility(StrEnum):
    PUBLIC = "public"
    FRIENDS = "friends"
    PRIVATE = "private"


class Kind(StrEnum):
    """What an objection event asks for."""

    OBJECT = "object"
    WITHDRAW = "withdraw"


class Channel(StrEnum):
    """Where a person objected (the contract's `channel` of an objection event)."""

    WEB = "web"
    APP = "app"
    EMAIL = "email"
    API = "api"
    IMPORT = "import"  # an operator's bulk import of historical objections


class NoticeChannel(StrEnum):
    """How the platform told a person (the contract's `channel` of a notice): `in_app`, not `app`."""

    EMAIL = "email"
    IN_APP = "in_app"


class ReceiptKind(StrEnum):
    ENFORCED = "enforced"  # ingest drops the user's posts and wrote the purge marker
    PURGED = "purged"  # the sink committed the Delta delete


class Status(StrEnum):
    """A person's current step, as `GET /v1/objections/me` shows it."""

    NONE = "none"
    RECEIVED = "received"
    ENFORCED = "enforced"
    PURGED = "purged"
    WITHDRAWN = "withdrawn"


class Decision(StrEnum):
    """What ingest does with one post."""

    ACCEPT = "accepted"
    OBJECTED = "objected"
    MINOR = "minor"
    NOT_PUBLIC = "not_public"
    DEFERRED = "deferred"  # not a drop: the post waits for its author's notice grace period


# Short names for the words used on every line of the rules.
OBJECT = Kind.OBJECT
WITHDRAW = Kind.WITHDRAW
ENFORCED = ReceiptKind.ENFORCED
PURGED = ReceiptKind.PURGED

VISIBILITIES = frozenset(Visibility)
OBJECTION_KINDS = frozenset(Kind)
OBJECTION_CHANNELS = frozenset(Channel)
PERSON_CHANNELS = tuple(c for c in Channel if c is not Channel.IMPORT)  # what a person may name when filing, in order
NOTICE_CHANNELS = frozenset(NoticeChannel)


# ------------------------------------------------------------- identifiers, codes


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a message or a request is refused: `code` is a short stable label (metrics),
    `detail` a sentence for people. Neither ever holds post text."""

    code: str
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf"})


def identifier_problem(value: str) -> str | None:
    """Why `value` is not a canonical identifier (contract, "Identifiers"), or None.

    1 to MAX_ID_LENGTH code points, Unicode NFC, no control or format characters, no leading
    or trailing whitespace; Unicode characters only (no lone surrogate, category Cs: such a
    string has no UTF-8 form, and the contract's keys are UTF-8). Case is kept: `Alice` and
    `alice` are two people. Nothing is normalised here: a writer that sends a non-canonical id is told so."""
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if value.isascii():
        # ASCII: the control characters are exactly the non-printable ones, whitespace other
        # than the space among them; NFC holds for every ASCII string.
        if not value.isprintable():
            return "contains a control character"
        if value[0] == " " or value[-1] == " ":
            return "has leading or trailing whitespace"
        return None
    if value[0].isspace() or value[-1].isspace():
        return "has leading or trailing whitespace"
    for char in value:
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            return "contains a control or format character"
        if category == "Cs":
            # Not Unicode text: a lone surrogate (from a JSON escape such as "\ud800") has no
            # UTF-8 form, so it could be neither a key nor a URL; refused like any other.
            return "contains a lone surrogate (not a Unicode character)"
    if not unicodedata.is_normalized("NFC", value):
        return "is not in Unicode NFC"
    return None


def is_country_code(value: object) -> bool:
    """An ISO 3166-1 alpha-2 code as the contract writes it: two upper-case ASCII letters."""
    return type(value) is str and len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()


# -------------------------------------------------------------------------- posts


@dataclass(slots=True)  # not frozen (treat it as immutable): a frozen __init__ cost 9 % of ingest's CPU
class Post:
    post_id: str
    user_id: str
    created_at_us: int
    visibility: str
    text: str
    lang: str | None = None
    country: str | None = None
    author_is_minor: bool = False
    # `created_at` as received when it is already in the form the wire writes (UTC, "Z"): the
    # encoder reuses it instead of formatting the timestamp again (hot path).
    created_at_text: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PurgeMarker:
    """Delete every stored post of `user_id`. Ingest writes it after every post it forwarded
    for that user, in the user's partition, so applying the stream in order purges them all."""

    user_id: str
    objection_ids: tuple[str, ...]
    marked_at_us: int


# --------------------------------------------------------------------- objections


@dataclass(frozen=True, slots=True)
class ObjectionEvent:
    objection_id: str
    user_id: str
    kind: str  # a Kind
    received_at_us: int
    channel: str  # a Channel
    reason: str | None = None
    notice_version: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """The platform told `user_id` (by e-mail or in the app) that their public posts may be
    used for AI training and how to object. The grace period runs from `sent_at`."""

    notice_id: str
    user_id: str
    notice_version: str
    channel: str  # a NoticeChannel
    sent_at_us: int
    country: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """Ingest confirms `enforced` (it now drops the user's posts and has written the purge
    marker); the sink confirms `purged` (the Delta delete is committed)."""

    kind: str  # a ReceiptKind
    user_id: str
    objection_ids: tuple[str, ...]
    at_us: int
    rows_purged: int | None = None
    enforced_at_us: int | None = None  # on `purged`: when ingest marked it (the marker's time)
    # On `purged`: the training runs that read a table version still holding the purged rows
    # (consentry.domain.lineage); None: not known (a purge re-confirmed after a replay).
    trained_on_runs: tuple[str, ...] | None = None
    # On `purged`: the Delta version of the delete (the audit trail's proof); None: no commit
    # (nothing was found: a replay) or not known.
    version: int | None = None


# ----------------------------------------------------------------- consent state


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    objection_id: str
    kind: str
    received_at_us: int
    channel: str
    reason: str | None = None
    notice_version: str | None = None
    enforced_at_us: int | None = None
    purged_at_us: int | None = None
    rows_purged: int | None = None
    # True when the event named no notice version and `notice_version` is the latest notice
    # sent to the user by `received_at` (consentry.domain.notices derives it).
    notice_version_derived: bool = False


@dataclass(frozen=True, slots=True)
class NoticeEntry:
    """A notice as the consent table records it (the user is the row's)."""

    notice_id: str
    notice_version: str
    channel: str
    sent_at_us: int
    country: str


class NoticeFacts(NamedTuple):
    """What the notice rule needs to know about a user: when the first notice was sent (µs,
    None when none was) and the countries the notices went to."""

    first_sent_us: int | None
    countries: frozenset[str]


NO_NOTICES = NoticeFacts(None, frozenset())


def notice_facts(sent_at_us: Iterable[int], countries: Iterable[str]) -> NoticeFacts:
    first = min(sent_at_us, default=None)
    return NO_NOTICES if first is None else NoticeFacts(first, frozenset(countries))


Interval = tuple[int, int | None]  # [start, end) in microseconds; end None while active


@dataclass(frozen=True, slots=True)
class AwaitingObjection:
    """A folded objection whose purge is not confirmed yet: what the row still owes for it."""

    objection_id: str
    since_us: int  # when its purge clock started (consentry's backlog gauge)
    enforced_at_us: int | None = None  # None: ingest has not written its purge marker yet


@dataclass(frozen=True, slots=True)
class Folded:
    """What a row keeps of the events folded out of its history (consentry.domain.consent,
    "Bounded rows"): enough to decide as the whole history would, erring closed where it
    cannot be exact, in a bounded size."""

    events: int = 0  # how many events were folded
    until_us: int = 0  # the sort key (received_at, objection_id) of the newest folded event:
    until_id: str = ""  # every event kept in full after it is applied exactly
    intervals: tuple[tuple[int, int], ...] = ()  # the folded events' closed objection intervals, sorted
    open_since_us: int | None = None  # the folded events end with an objection active since then
    merged: int = 0  # intervals merged into the first one to stay under FOLDED_INTERVALS_KEPT
    ids: tuple[str, ...] = ()  # digests of the newest FOLDED_IDS_KEPT folded objection ids, oldest first
    latest_live_us: int | None = None  # the latest received_at of a folded live (not imported) event
    awaiting: tuple[AwaitingObjection, ...] = ()  # folded objections awaiting a receipt


@dataclass(frozen=True, slots=True)
class ConsentState:
    """One user's row in the consent table. `intervals` and `pending` are derived from
    `history` by consentry.domain.consent and stored so readers need not recompute them."""

    user_id: str
    history: tuple[HistoryEntry, ...] = ()
    intervals: tuple[Interval, ...] = ()
    pending: tuple[str, ...] = ()  # objection ids ingest has not yet confirmed (purge marker written)
    pending_withdrawals: tuple[str, ...] = ()  # withdrawal ids ingest has not yet confirmed
    updated_at_us: int = 0
    notices: tuple[NoticeEntry, ...] = ()  # every notice received, sorted by sent_at
    folded: Folded | None = None  # the events folded out of `history`, once there are more than HISTORY_KEPT
    trained_on_by: int = 0  # training runs that read the user's rows before a purge removed them
    trained_on_ids: tuple[str, ...] = ()  # digests of the newest TRAINED_ON_IDS_KEPT of those runs


class EnforcementView(NamedTuple):
    """What ingest keeps of a user's row."""

    intervals: tuple[Interval, ...]
    pending: tuple[str, ...]  # objections whose purge marker is not confirmed
    pending_withdrawals: tuple[str, ...]  # withdrawals not yet acknowledged
    notices: NoticeFacts


@dataclass(frozen=True, slots=True)
class UserStatus:
    """A person's state as they see it (`GET /v1/objections/me`), from the consent table to HTTP."""

    user_id: str
    objected: bool
    status: Status
    history: tuple[HistoryEntry, ...] = ()
    notices: tuple[NoticeEntry, ...] = ()
    trained_on_by: int = 0  # how many training runs read the user's posts before they were purged
