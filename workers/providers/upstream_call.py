"""What every HTTP provider adapter shares: the deadlines of one upstream call, and the conversion of
:mod:`workers.providers.upstream_http`'s errors and upstream error statuses into our errors (the boundary:
nothing above an adapter knows how the upstream is reached).

    connect error, no free connection  UpstreamUnavailable (503)
    connect timeout                    UpstreamTimeout (503), "connect timeout expired"
    first-token / idle / total         UpstreamTimeout (503), naming the deadline that expired
    400/404/413/422                    UpstreamBadRequest (400, upstream message; the upstream's own
                                       ``code`` and ``param`` when it gives them, see client_error_fields)
    429, 5xx (+ adapter extras)        UpstreamUnavailable (503) with the upstream Retry-After (whole
                                       seconds, at most a day; one that is no number nor date is dropped)
    401/403, other 4xx                 UpstreamError (500: our configuration is wrong)
    connection cut, or not HTTP,       UpstreamUnavailable (nothing reached the client: fallback is safe)
      before content
    connection cut after content       UpstreamError (500)
    an encoded (compressed) body       UpstreamError (500: the upstream ignored accept-encoding: identity)
"""

from __future__ import annotations

import asyncio
import functools
import math
import zlib
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from shared.errors import (
    AIORouterError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    codes_of_other_statuses,
)
from shared.settings import DEADLINE_GRACE, Timeouts
from shared.usage import OK
from workers.providers.upstream_http import (
    ConnectError,
    ConnectionCut,
    ConnectTimeout,
    EncodedBody,
    ResponseTooLarge,
)

BAD_REQUEST_STATUSES = frozenset({400, 404, 413, 422})
MAX_ERROR_TEXT = 500


class Deadlines:
    """The first-token, idle and total deadlines of one upstream call, on the event loop's clock; of a
    ``whole_answer`` call (one JSON answer, nothing before it is complete), the answer and total ones."""

    def __init__(
        self, timeouts: Timeouts, loop: asyncio.AbstractEventLoop, *, whole_answer: bool = False
    ) -> None:
        self._loop = loop
        self._timeouts = timeouts
        self._total = loop.time() + timeouts.total
        self._started = self._last_seen = loop.time()
        self.whole_answer = whole_answer
        self.first_token_seen = False

    def seen(self) -> None:
        """The upstream sent something now: the idle deadline counts from here."""
        self._last_seen = self._loop.time()

    def next_deadline(self) -> float:
        if self.whole_answer:
            return min(self._total, self._started + self._timeouts.answer)
        if self.first_token_seen:
            return min(self._total, self._last_seen + self._timeouts.idle)
        return min(self._total, self._started + self._timeouts.first_token)

    def which_expired(self) -> str:
        if self._loop.time() >= self._total - 0.001:
            return "total"
        if self.whole_answer:
            return "answer"
        return "idle" if self.first_token_seen else "first-token"


class DeadlineTimer:
    """Expires an ``asyncio.Timeout`` entered with no deadline at the call's next deadline, without moving
    a loop timer on every line (each move reschedules one, on a path that runs once per streamed line):
    one check runs at the deadline the clock gave when it was armed; if the upstream was seen since, it
    re-arms for the later deadline, else it expires the Timeout.  Only this check expires it: two timers
    due in one pass run in no order one could rely on (uvloop's have millisecond resolution).

    A check that finds the deadline passed has not seen everything yet: a pass of the event loop runs its
    due timers before it polls the sockets, so a line that came in time (just before the deadline, or
    while the loop itself was stalled) may wait unread.  The check grants the call :attr:`_GRACE` seconds
    to read it, once, and expires the call only if no line came by then: a deadline is never early, and
    at most that much late."""

    _GRACE = DEADLINE_GRACE  # seconds a call found overdue gets to show a line it may have sent in time

    def __init__(self, clock: Deadlines, timer: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
        self._clock = clock
        self._timer = timer
        self._loop = loop
        self._check: asyncio.TimerHandle | None = None
        self._granted = False  # a grace was given since the upstream was last seen in time

    def move(self) -> None:
        """Arm the check at the clock's next deadline now (which may be earlier)."""
        self._arm(self._clock.next_deadline())

    def close(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None

    def _arm(self, when: float) -> None:
        self.close()
        self._check = self._loop.call_at(when, self._on_check)

    def _on_check(self) -> None:
        self._check = None
        deadline = self._clock.next_deadline()
        now = self._loop.time()
        if now < deadline:  # seen since (or the loop's clock ran the check a little early)
            self._granted = False
            self._arm(deadline)
        elif not self._granted:
            self._granted = True  # let the loop read what may have come in time
            self._arm(now + self._GRACE)
        else:
            self._timer.reschedule(now)  # expired: the Timeout cancels the call on the next pass


@asynccontextmanager
async def call_scope(name: str, clock: Deadlines) -> AsyncIterator[DeadlineTimer]:
    """The scope of one upstream call: its deadlines enforced by a :class:`DeadlineTimer` (yielded: an
    adapter moves it when the first token came), its transport errors and expired deadlines raised as
    our errors (:func:`upstream_errors`)."""
    with upstream_errors(name, clock):
        async with asyncio.timeout_at(None) as timeout:  # expired by the timer only
            timer = DeadlineTimer(clock, timeout, asyncio.get_running_loop())
            timer.move()
            try:
                yield timer
            finally:
                timer.close()


BODY_END_WAIT = 0.1
"""Seconds the body's end may follow the answer's last event (OpenAI's ``[DONE]``, Anthropic's
``message_stop``): read by then, the connection is kept for the next call; an upstream that holds the
body open past it costs the connection, not the answer."""


async def read_to_the_end(events: AsyncIterator[bytes]) -> None:
    """Read what is left of a body after its answer's last event, for at most :data:`BODY_END_WAIT`."""
    try:
        async with asyncio.timeout(BODY_END_WAIT):
            async for _ in events:
                pass
    except TimeoutError:
        pass


def cut_error(name: str, clock: Deadlines) -> AIORouterError:
    """The upstream closed the connection or the stream before it finished."""
    if clock.first_token_seen:
        return UpstreamError(f"Provider {name!r} cut the stream mid-way.")
    return UpstreamUnavailable(f"Provider {name!r} closed the connection before answering.")


@contextmanager
def upstream_errors(name: str, clock: Deadlines) -> Iterator[None]:
    """Convert the deadlines' timeouts and transport errors raised inside the block into our errors."""
    try:
        yield
    except TimeoutError as exc:  # the block's asyncio.timeout: the call's next deadline passed
        raise UpstreamTimeout(f"Provider {name!r}: {clock.which_expired()} timeout expired.") from exc
    except ConnectTimeout as exc:
        raise UpstreamTimeout(f"Provider {name!r}: connect timeout expired.") from exc
    except ConnectError as exc:
        raise UpstreamUnavailable(f"Provider {name!r} is unreachable.") from exc
    except ResponseTooLarge as exc:
        if clock.whole_answer:  # a JSON answer too large: as large again on a retry or elsewhere
            raise UpstreamError(f"Provider {name!r}: {exc}.") from exc
        raise cut_error(name, clock) from exc
    except ConnectionCut as exc:  # the connection broke: before the response, or mid-stream
        raise cut_error(name, clock) from exc
    except EncodedBody as exc:
        raise UpstreamError(f"Provider {name!r}: {exc}; AIOrouter reads identity bodies only.") from exc


def status_error(
    name: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    unavailable: Collection[int] = (429,),
) -> AIORouterError:
    """Our error for an upstream error status, from the response's (case-insensitive) headers and body."""
    readable = readable_body(headers, body)
    message = message_of_body(status, readable)
    if status in BAD_REQUEST_STATUSES:
        code, param = client_error_fields(readable)
        return UpstreamBadRequest(message, code=code, param=param)
    if status in unavailable or status >= 500:
        retry_after = retry_after_seconds(headers.get("retry-after"))
        return UpstreamUnavailable(
            f"Provider {name!r} is unavailable (HTTP {status}).",
            headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
        )
    if status in (401, 403):
        return UpstreamError(f"Provider {name!r} rejected our credentials (HTTP {status}).")
    return UpstreamError(f"Provider {name!r} answered HTTP {status}: {message}")


MAX_CODE_CHARS = 64
"""An upstream's error ``code`` longer than this is not relayed (ours stands): codes are short words."""


def client_error_fields(body: bytes) -> tuple[str | None, str | None]:
    """The ``code`` and ``param`` of an OpenAI-shaped error body, relayed with the client's 400 so that a
    client can branch on them (``context_length_exceeded``) as it would at OpenAI: strings only, a code of
    at most :data:`MAX_CODE_CHARS`, a param cut as ours are; None where the upstream gives none."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, param = error.get("code"), error.get("param")
    relayed = isinstance(code, str) and 0 < len(code) <= MAX_CODE_CHARS and code not in _reserved_codes()
    return (code if relayed else None, param if isinstance(param, str) and param else None)


@functools.cache
def _reserved_codes() -> frozenset[str]:
    """Codes an upstream's 400 does not pass on: ours for other outcomes (a 400 that said
    ``rate_limit_exceeded`` would count as our own refusal) and the usage records' success status."""
    return codes_of_other_statuses(UpstreamBadRequest.status) | {OK}


MAX_RETRY_AFTER = 86_400
"""Seconds: the longest wait an upstream's ``Retry-After`` may pass on to our clients."""


def retry_after_seconds(value: str | None) -> int | None:
    """An upstream's ``Retry-After`` as whole seconds from now, within ``[0, MAX_RETRY_AFTER]``: a number
    of seconds (rounded up) or an HTTP date; None when absent or neither (it is not passed on)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    if seconds >= MAX_RETRY_AFTER:
        return MAX_RETRY_AFTER
    return math.ceil(seconds) if seconds > 0 else 0


MAX_ERROR_BODY = 64 * 1024
"""Bytes an error body is inflated to at most, when an upstream compressed it anyway."""


def readable_body(headers: Mapping[str, str], body: bytes) -> bytes:
    """An error body as it reads: one gzip- or deflate-encoded despite ``accept-encoding: identity``
    inflated (to :data:`MAX_ERROR_BODY` bytes at most), another encoding's named instead of shown."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        # gzip's header, or deflate as zlib data (RFC 9110) or, as some servers send it, raw
        for wbits in (16 + zlib.MAX_WBITS,) if "gzip" in encoding else (zlib.MAX_WBITS, -zlib.MAX_WBITS):
            try:
                return zlib.decompressobj(wbits).decompress(body, MAX_ERROR_BODY)
            except zlib.error:
                continue
    return f"(a {encoding[:40]}-encoded body)".encode()


def message_of_body(status: int, body: bytes) -> str:
    try:
        return message_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:MAX_ERROR_TEXT] or f"HTTP {status}"


def message_of(body: Any) -> str:
    """The human message of an upstream error body (OpenAI's and Anthropic's shapes), shortened."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:MAX_ERROR_TEXT]
    if isinstance(error, str):
        return error[:MAX_ERROR_TEXT]
    return orjson.dumps(body).decode()[:MAX_ERROR_TEXT]
