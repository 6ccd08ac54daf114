"""One run of one batch line: what the driver remembers about a line in its lane (Redis hash
:func:`shared.keys.batch_inflight`), enough to tell whether it got lost and to run it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ingress.provider_preferences import NO_PREFERENCES, ProviderPreferences, parse_provider_preferences
from shared.credits import Reservation


@dataclass(frozen=True, slots=True)
class Attempt:
    index: int
    custom_id: str
    job_id: str
    pool: str
    attempt: int  # 1 for the first run
    reservation: Reservation
    model: str
    body: dict[str, Any]
    dispatched_at: float  # unix seconds
    preferences: ProviderPreferences = NO_PREFERENCES  # the line's ``provider`` field (not in ``body``)

    def to_wire(self) -> bytes:
        preferences = self.preferences
        return orjson.dumps(
            {
                "custom_id": self.custom_id,
                "job": self.job_id,
                "pool": self.pool,
                "attempt": self.attempt,
                "reservation": self.reservation.to_wire(),
                "model": self.model,
                "body": self.body,
                "at": self.dispatched_at,
                "provider": {"order": preferences.order, "allow_fallbacks": preferences.allow_fallbacks},
            }
        )

    @classmethod
    def from_wire(cls, index: int, raw: bytes) -> Attempt:
        data = orjson.loads(raw)
        return cls(
            index=index,
            custom_id=str(data["custom_id"]),
            job_id=str(data["job"]),
            pool=str(data["pool"]),
            attempt=int(data["attempt"]),
            reservation=Reservation.from_wire(data["reservation"]),
            model=str(data["model"]),
            body=dict(data["body"]),
            dispatched_at=float(data["at"]),
            preferences=parse_provider_preferences(data.get("provider")),
        )
