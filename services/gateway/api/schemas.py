"""Request and response bodies of the HTTP API (the contract's shapes), with examples."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from consentry.domain.model import PERSON_CHANNELS, Channel, Kind, NoticeChannel, Status
from services.gateway.problems import RETRY_AFTER, problem


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ObjectionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"channel": "app", "reason": "I do not want my posts used for AI training."}]}
    )

    reason: str | None = Field(default=None, max_length=2000, description="Optional, free text.")
    channel: Literal[PERSON_CHANNELS] = Field(default=Channel.API, description="Where the person objected.")
    notice_version: str | None = Field(default=None, max_length=256, description="The notice version the person last saw.")


class ObjectionReceipt(BaseModel):
    model_config = _examples(
        {
            "objection_id": "0b9e6c0e-7f1f-4c1e-9a55-5c3f0e3e9d11",
            "user_id": "u-42",
            "status": "received",
            "received_at": "2025-05-27T10:00:01Z",
        }
    )

    objection_id: str
    user_id: str
    status: Literal[Status.RECEIVED]
    received_at: str = Field(description="RFC 3339, UTC")


class HistoryItem(BaseModel):
    objection_id: str
    kind: Literal[tuple(Kind)]
    channel: str = Field(description="web, app, email, api or import")
    received_at: str = Field(description="When the request was made (RFC 3339, UTC); for imports, the original date.")
    reason: str | None = None
    notice_version: str | None = Field(
        default=None, description="The notice version the person last saw: as they said, else the latest notice sent to them by then."
    )
    enforced_at: str | None = Field(default=None, description="When ingest started keeping the posts out (objections only).")
    purged_at: str | None = Field(default=None, description="When the stored posts were deleted from the training store.")
    rows_purged: int | None = Field(default=None, description="How many stored posts the purge deleted.")


class NoticeItem(BaseModel):
    notice_id: str
    notice_version: str = Field(description="Which text was sent.")
    channel: Literal[tuple(NoticeChannel)]
    sent_at: str = Field(description="When it was sent (RFC 3339, UTC).")
    country: str = Field(description="The country it was sent for (ISO 3166-1 alpha-2).")


class ObjectionStatus(BaseModel):
    model_config = _examples(
        {
            "user_id": "u-42",
            "objected": True,
            "status": "purged",
            "history": [
                {
                    "objection_id": "0b9e6c0e-7f1f-4c1e-9a55-5c3f0e3e9d11",
                    "kind": "object",
                    "channel": "email",
                    "received_at": "2025-05-27T10:00:01Z",
                    "enforced_at": "2025-05-27T10:00:01.4Z",
                    "purged_at": "2025-05-27T10:00:02.1Z",
                    "rows_purged": 12,
                    "notice_version": "2025-05",
                }
            ],
            "notices": [
                {"notice_id": "n-1", "notice_version": "2025-05", "channel": "email", "sent_at": "2025-05-01T09:00:00Z", "country": "FR"}
            ],
        }
    )

    user_id: str
    objected: bool = Field(description="True while an objection is active.")
    status: Literal[tuple(Status)] = Field(description="The latest request's step.")
    history: list[HistoryItem] = Field(description="Every objection and withdrawal, oldest first.")
    notices: list[NoticeItem] = Field(
        default_factory=list, description="Every notice you were sent about the use of your posts for AI training, oldest first."
    )
    trained_on_by: int = Field(
        default=0,
        description="How many AI training runs read your posts before they were purged (their models learned from them).",
    )


class Conflict(BaseModel):
    detail: str
    status: ObjectionStatus


class RejectedLine(BaseModel):
    line: int = Field(description="1-based line number in the body.")
    reason: str


class ImportResult(BaseModel):
    model_config = _examples(
        {
            "accepted": 2,
            "duplicates": 1,
            "rejected": 1,
            "lines": 4,
            "rejected_lines": [{"line": 3, "reason": "bad_timestamp: 'received_at' is not an RFC 3339 date-time with a time zone"}],
            "rejected_lines_truncated": False,
        }
    )

    accepted: int = Field(description="Lines published as objection events or notices (acknowledged by the broker).")
    duplicates: int = Field(description="Lines skipped: their objection_id (notice_id) came earlier in this import.")
    rejected: int = Field(description="Invalid lines, none of them published.")
    lines: int = Field(description="Lines read, blank ones included.")
    rejected_lines: list[RejectedLine] = Field(description="Line number and reason of the first 1000 rejected lines.")
    rejected_lines_truncated: bool


UNAVAILABLE = {
    **problem(
        "The broker did not acknowledge the event: nothing was recorded, retry.",
        "the objection could not be confirmed right now (event store unavailable); please retry, with the same Idempotency-Key if you sent one: a retry is never counted twice",
    ),
    "headers": RETRY_AFTER,
}
CONFLICT = {
    "model": Conflict,
    "description": "The Idempotency-Key was used for an earlier request and a later request changed the objection "
    "since: the old receipt no longer holds. The body has the current status.",
    "content": {
        "application/json": {
            "example": {
                "detail": "this Idempotency-Key was used for an earlier request, and a later one changed your objection since: "
                "it is now 'withdrawn'; send a new request without this key",
                "status": {"user_id": "u-42", "objected": False, "status": "withdrawn", "history": [], "notices": []},
            }
        }
    },
}
STATUS_UNAVAILABLE = problem("Consent state temporarily unavailable.", "objection status is temporarily unavailable, please retry")
