"""Receipts this gateway handed out: replayed for a repeated Idempotency-Key, and shown as
`received` until the consent service has caught up with them."""

from __future__ import annotations

import uuid
from collections import OrderedDict

from consentry.domain.model import ObjectionEvent

_NAMESPACE = uuid.UUID("6f1c2f4e-8d3b-4c55-9a7e-2c1d0b9e5a10")


def objection_id_for(user_id: str, idempotency_key: str | None) -> str:
    """Deterministic for an Idempotency-Key, so a retry through any gateway replica carries
    the same objection_id and the consent table records it once."""
    if idempotency_key:
        return str(uuid.uuid5(_NAMESPACE, f"{user_id}\x00{idempotency_key}"))
    return str(uuid.uuid4())


class ReceiptCache:
    """Bounded, most recent first out."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._by_id: OrderedDict[str, ObjectionEvent] = OrderedDict()
        self._by_user: dict[str, list[str]] = {}
        self._capacity = capacity

    def get(self, objection_id: str) -> ObjectionEvent | None:
        return self._by_id.get(objection_id)

    def remember(self, event: ObjectionEvent) -> None:
        if event.objection_id not in self._by_id:
            self._by_user.setdefault(event.user_id, []).append(event.objection_id)
        self._by_id[event.objection_id] = event
        while len(self._by_id) > self._capacity:
            _, old = self._by_id.popitem(last=False)
            ids = self._by_user.get(old.user_id, [])
            if old.objection_id in ids:
                ids.remove(old.objection_id)
            if not ids:
                self._by_user.pop(old.user_id, None)

    def for_user(self, user_id: str) -> list[ObjectionEvent]:
        return [self._by_id[i] for i in self._by_user.get(user_id, ()) if i in self._by_id]
