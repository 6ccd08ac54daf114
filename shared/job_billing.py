"""What a completion job carries for billing, from the ingress that admitted it to the worker that ends it.

The ingress (:mod:`ingress.admission`) reserves the request's worst-case cost and puts a
:class:`JobBilling` in ``CompletionJob.extra[EXTRA_KEY]``: the reservation, the model's prices at
admission (so the worker charges what was quoted, whatever its own settings say), when it was admitted,
and the tokens the account's token limit counted for it.  The worker (:mod:`workers.settlement`)
settles the reservation to the tokens actually used and refunds the tokens it did not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import credits
from shared.credits import Reservation
from shared.jobs import CompletionJob
from shared.settings import ModelEntry

EXTRA_KEY = "billing"


@dataclass(frozen=True, slots=True)
class JobBilling:
    reservation: Reservation
    input_price_per_m: float  # USD per million tokens
    output_price_per_m: float
    admitted_at: float  # unix seconds
    counted_tokens: int = 0  # tokens the account's token limit counted for the request
    token_interval_us: int = 0  # µs one token weighs in that limit; 0 = the plan limits no tokens
    cached_input_price_per_m: float | None = None  # None: cached prompt tokens cost the input price

    @classmethod
    def for_model(
        cls,
        reservation: Reservation,
        model: ModelEntry,
        *,
        admitted_at: float,
        counted_tokens: int = 0,
        token_interval_us: int = 0,
    ) -> JobBilling:
        return cls(
            reservation=reservation,
            input_price_per_m=model.input_price_per_m,
            output_price_per_m=model.output_price_per_m,
            admitted_at=admitted_at,
            counted_tokens=counted_tokens if token_interval_us > 0 else 0,
            token_interval_us=token_interval_us,
            cached_input_price_per_m=model.cached_input_price_per_m,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """Micro-USD the tokens cost at the prices quoted at admission (what settling charges, as far as
        the account's credit goes: ``shared/lua/credit_settle.lua``)."""
        return credits.tokens_cost(
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            input_price_per_m=self.input_price_per_m,
            output_price_per_m=self.output_price_per_m,
            cached_input_price_per_m=self.cached_input_price_per_m,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "reservation": self.reservation.to_wire(),
            "input_price_per_m": self.input_price_per_m,
            "output_price_per_m": self.output_price_per_m,
            "admitted_at": self.admitted_at,
            "counted_tokens": self.counted_tokens,
            "token_interval_us": self.token_interval_us,
            "cached_input_price_per_m": self.cached_input_price_per_m,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobBilling:
        return cls(
            reservation=Reservation.from_wire(data["reservation"]),
            input_price_per_m=float(data["input_price_per_m"]),
            output_price_per_m=float(data["output_price_per_m"]),
            admitted_at=float(data["admitted_at"]),
            counted_tokens=int(data.get("counted_tokens", 0)),
            token_interval_us=int(data.get("token_interval_us", 0)),
            cached_input_price_per_m=_price_or_none(data.get("cached_input_price_per_m")),
        )

    @classmethod
    def of_job(cls, job: CompletionJob) -> JobBilling | None:
        """The job's billing, or None for a job admitted without one (or with a malformed one)."""
        data = job.extra.get(EXTRA_KEY)
        if not isinstance(data, dict):
            return None
        try:
            return cls.from_wire(data)
        except (KeyError, TypeError, ValueError):
            return None


def _price_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
