"""The private redis-py and rq APIs our code reaches into, each checked for the shape we rely on, so a
release that changes one fails here instead of returning wrong data in production."""

from __future__ import annotations

import importlib
import inspect
import json
import types
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis._parsers.base import BaseParser
from redis._parsers.encoders import Encoder
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.client import EMPTY_RESPONSE
from redis.exceptions import NoScriptError, ResponseError
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.results import Result
from rq.worker.base import BaseWorker

from shared.rq_bridge import _RQ_MODULES_RESOLVING_SERIALIZERS, memoize_serializer_lookup
from shared.serialization import OrjsonSerializer
from shared.tested_versions import TESTED_MAJORS, require_tested, untested


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_installed_releases_are_the_tested_ones() -> None:
    """The installed redis-py and rq fall in the ranges pyproject.toml pins and start-up enforces."""
    require_tested(*TESTED_MAJORS)


def test_an_untested_release_is_refused_with_the_range() -> None:
    """redis-py 7 or rq 4 would be refused at start-up, with the tested range in the message."""
    assert untested("redis", "7.4.0") == "redis 7.4.0 is installed; AIOrouter is tested on redis>=8,<9"
    assert untested("rq", "4.0.1") is not None
    assert untested("redis", "8.9.9") is None
    assert untested("rq", "not-a-version") is not None


# --- redis-py: shared/autopipeline.py ---------------------------------------------------------------


def test_parse_error_turns_an_error_reply_into_redis_py_classes() -> None:
    """BaseParser.parse_error maps Redis' error prefixes to redis-py's exception classes."""
    assert isinstance(BaseParser.parse_error("NOSCRIPT No matching script."), NoScriptError)
    error = BaseParser.parse_error("ERR unknown command")
    assert type(error) is ResponseError and str(error) == "unknown command"


def test_encoder_encodes_as_the_packer_expects() -> None:
    """Encoder(encoding, errors, decode_responses).encode gives bytes for str, int and float."""
    encoder = Encoder("utf-8", "strict", False)
    assert encoder.encode("é") == "é".encode()
    assert encoder.encode(7) == b"7"
    assert encoder.encode(1.5) == b"1.5"


def test_empty_response_is_an_option_key() -> None:
    """EMPTY_RESPONSE is the option name redis-py uses for a command's reply to a missing key."""
    assert isinstance(EMPTY_RESPONSE, str)


def test_resp3_response_callbacks_take_the_replies_hiredis_gives() -> None:
    """A RESP3 client's callbacks turn hiredis' RESP3 replies into what redis-py returns (HGETALL a dict)."""
    client = aredis.Redis(protocol=3)
    callbacks = client.response_callbacks
    assert callbacks["HGETALL"]({b"a": b"1", b"b": b"x"}) == {b"a": b"1", b"b": b"x"}
    assert callbacks["SET"](b"OK") is True
    assert callbacks["HEXISTS"](1) is True


def test_pipeline_state_the_auto_pipeline_reads() -> None:
    """An asyncio Pipeline keeps command_stack, watching, explicit_transaction, scripts, is_transaction."""
    pipe = aredis.Redis().pipeline(transaction=True)
    assert isinstance(pipe, Pipeline)
    pipe.set("k", "v")
    (args, options), *_ = pipe.command_stack
    assert args == ("SET", "k", "v") and isinstance(options, dict)
    assert pipe.watching is False and pipe.explicit_transaction is False
    assert not pipe.scripts and pipe.is_transaction is True
    assert parameters(Pipeline.__init__)[1:5] == [
        "connection_pool",
        "response_callbacks",
        "transaction",
        "shard_hint",
    ]


def test_ssl_connection_exposes_the_context_a_rediss_url_asks_for() -> None:
    """SSLConnection(**rediss_kwargs).ssl_context.get() is the TLS context the auto-pipeline uses."""
    pool = aredis.ConnectionPool.from_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=none")
    assert pool.connection_class is SSLConnection
    context = SSLConnection(**pool.connection_kwargs).ssl_context
    assert isinstance(context, RedisSSLContext)
    assert context.get().check_hostname is False


def test_sync_pipeline_command_stack_for_recording() -> None:
    """A sync Pipeline queues (args, options) pairs on command_stack, which shared/rq_bridge.py reads."""
    pipe = redis.Redis().pipeline(transaction=False)
    pipe.hset("h", "f", "v")
    ((args, options),) = pipe.command_stack
    assert args[0] == "HSET" and isinstance(options, dict)


# --- rq: workers/bookkeeping.py, workers/worker.py, shared/jobs.py, shared/keys.py ----------------------


@pytest.mark.parametrize(
    ("owner", "name", "leading"),
    [
        (Job, "prepare_for_execution", ["self", "worker_name", "pipeline"]),
        (Job, "restore", ["self", "raw_data"]),
        (Job, "set_status", ["self", "status", "pipeline"]),
        (Job, "cleanup", ["self", "ttl", "pipeline", "remove_from_queue"]),
        (Job, "get_result_ttl", ["self", "default_ttl"]),
        (Job, "_handle_failure", ["self", "exc_string", "pipeline", "worker_name"]),
        (Execution, "create", ["cls", "job", "ttl", "pipeline"]),
        (Execution, "delete", ["self", "job", "pipeline"]),
        (Execution, "heartbeat", ["self", "started_job_registry", "ttl", "pipeline"]),
        (Result, "create", ["cls", "job", "type", "ttl"]),
        (Result, "get_key", ["cls", "job_id"]),
        (IntermediateQueue, "get_intermediate_queue_key", ["cls", "queue_key"]),
        (BaseWorker, "set_state", ["self", "state", "pipeline"]),
        (BaseWorker, "heartbeat", ["self", "timeout", "pipeline"]),
        (BaseWorker, "increment_successful_job_count", ["self", "pipeline"]),
        (BaseWorker, "increment_failed_job_count", ["self", "pipeline"]),
        (BaseWorker, "increment_total_working_time", ["self", "job_execution_time", "pipeline"]),
    ],
)
def test_rq_methods_take_the_arguments_we_pass(owner: type[Any], name: str, leading: list[str]) -> None:
    """Each rq method our bookkeeping calls still takes, in order, the parameters we pass."""
    function = inspect.getattr_static(owner, name)
    if isinstance(function, classmethod):
        function = function.__func__
    assert parameters(function)[: len(leading)] == leading


def test_rq_job_private_state_we_set() -> None:
    """A Job keeps its status in _status and its return value in _result, which we set directly."""
    job = Job("j1", connection=redis.Redis())
    assert hasattr(job, "_status") and hasattr(job, "_result")


def test_rq_result_types_and_queue_keys() -> None:
    """Result.Type.SUCCESSFUL exists; Queue names its keys with the prefixes shared/keys.py asks for."""
    assert Result.Type.SUCCESSFUL and Result.Type.FAILED
    assert Queue.redis_queue_namespace_prefix == "rq:queue:"
    assert Queue.redis_queues_keys == "rq:queues"
    assert IntermediateQueue.get_intermediate_queue_key("rq:queue:p") == "rq:queue:p:intermediate"


@pytest.mark.parametrize("module_name", _RQ_MODULES_RESOLVING_SERIALIZERS)
def test_rq_modules_bind_resolve_serializer_where_we_memoize_it(module_name: str) -> None:
    """Each rq module shared/rq_bridge.py patches binds ``resolve_serializer`` at import and calls it by
    that name (so the memoized copy is the one its objects use)."""
    module = importlib.import_module(module_name)
    assert callable(module.resolve_serializer)
    assert "resolve_serializer(" in inspect.getsource(module)


def test_memoized_serializer_lookup_answers_as_rqs_own() -> None:
    """After memoize_serializer_lookup, rq resolves every kind of argument exactly as before: None, a
    class, an alias string, an unhashable object, and refuses what is no serializer."""
    from rq import job as rq_job
    from rq import serializers

    original = serializers.resolve_serializer
    memoize_serializer_lookup()
    memoize_serializer_lookup()  # idempotent: still one wrapper around rq's function
    resolve = rq_job.resolve_serializer
    assert resolve is not original and getattr(resolve, "__wrapped__", None) is original
    assert resolve(None) is original(None) is serializers.DefaultSerializer
    assert resolve(OrjsonSerializer) is OrjsonSerializer
    assert resolve("rq.serializers.JSONSerializer") is original("rq.serializers.JSONSerializer")
    unhashable = types.SimpleNamespace(dumps=json.dumps, loads=json.loads)
    unhashable.__hash__ = None  # type: ignore[assignment]
    assert resolve(unhashable) is unhashable
    with pytest.raises(NotImplementedError):
        resolve(object())
    assert Job("j2", connection=redis.Redis(), serializer=OrjsonSerializer).serializer is OrjsonSerializer
