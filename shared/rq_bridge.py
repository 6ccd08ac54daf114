"""Run rq's own bookkeeping code without blocking an event loop.

rq's methods take a ``pipeline`` argument and only queue commands on it.  We hand them a
:func:`recording_pipeline` (a sync redis-py pipeline whose client refuses to connect), collect what rq
queued (:func:`recorded`), and replay it on an asyncio pipeline (:func:`shared.redis_commands.replay`):
one round trip, and the keys, fields and TTLs are exactly rq's, so ``rq info``, rq-dashboard and rq's
registry clean-up keep telling the truth.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from redis.client import Pipeline

from shared.redis_commands import Command


class _NoConnectionPool(redis.ConnectionPool):
    """A pool that fails loudly if rq ever tries real I/O through a recording client."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a recording client must not talk to Redis; pass a pipeline to rq instead")


RECORDING_CLIENT = redis.Redis(connection_pool=_NoConnectionPool())
"""A sync client for rq objects that only ever record (it holds no connection and no state)."""


def recording_pipeline() -> Pipeline:
    return RECORDING_CLIENT.pipeline(transaction=False)


def recorded(pipeline: Pipeline) -> list[Command]:
    """The commands rq queued on a recording pipeline."""
    return [(tuple(args), dict(options)) for args, options in pipeline.command_stack]


_RQ_MODULES_RESOLVING_SERIALIZERS = ("rq.job", "rq.queue", "rq.registry", "rq.results")


def memoize_serializer_lookup() -> None:
    """Let rq look up each serializer once, not once per ``Job``, registry, ``Result`` or ``Queue``.

    rq's ``resolve_serializer`` checks its argument against a runtime ``Protocol`` with ``isinstance``,
    which walks the protocol's members on every call: on a worker's job path (a dozen rq objects per job)
    it was a tenth of the CPU spent starting a job.  The answer depends only on the argument, so a
    memoized copy (unhashable arguments go to rq's own) answers the same, once.  rq's modules bind the
    function at import; each name is replaced where rq uses it (``tests/shared/test_private_apis.py``
    checks they are still there).  Idempotent; called at start-up by the ingress and the worker."""
    import importlib

    from rq import serializers

    original = getattr(serializers.resolve_serializer, "__wrapped__", serializers.resolve_serializer)
    cached = functools.lru_cache(maxsize=32)(original)

    @functools.wraps(original)
    def resolve(serializer: Any = None) -> Any:
        try:
            return cached(serializer)
        except TypeError:  # unhashable: rq's own lookup
            return original(serializer)

    for name in _RQ_MODULES_RESOLVING_SERIALIZERS:
        module = importlib.import_module(name)
        if getattr(module.resolve_serializer, "__wrapped__", None) is not original:
            setattr(module, "resolve_serializer", resolve)  # noqa: B010  (a module's attribute, by name)
