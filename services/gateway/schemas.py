"""Request and response bodies of the HTTP API (the contract's shapes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ObjectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000, description="Optional, free text.")
    channel: Literal["web", "app", "email", "api"] = Field(default="api", description="Where the person objected.")
    notice_version: str | None = Field(default=None, max_length=256, description="The notice version the person last saw.")


class ObjectionReceipt(BaseModel):
    objection_id: str
    user_id: str
    status: Literal["received"]
    received_at: str = Field(description="RFC 3339, UTC")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "objection_id": "0b9e6c0e-7f1f-4c1e-9a55-5c3f0e3e9d11",
                    "user_id": "u-42",
                    "status": "received",
                    "received_at": "2025-05-27T10:00:01Z",
                }
            ]
        }
    )


class HistoryItem(BaseModel):
    objection_id: str
    kind: Literal["object", "withdraw"]
    channel: str
    received_at: str
    reason: str | None = None
    notice_version: str | None = None
    enforced_at: str | None = None
    purged_at: str | None = None
    rows_purged: int | None = None


class ObjectionStatus(BaseModel):
    user_id: str
    objected: bool
    status: Literal["none", "received", "enforced", "purged", "withdrawn"]
    history: list[HistoryItem]


class Problem(BaseModel):
    detail: str
