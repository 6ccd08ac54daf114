"""The real system (ingress under uvicorn, worker processes, real Redis) driven by the official OpenAI SDK."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import redis

from cli import main as aiorouter
from shared import keys
from tests.e2e.running_system import RunningSystem
from tests.waiting import eventually_sync

CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
key_cache_ttl = 1.0
queue_timeout = 2.0

[providers.simulated]
kind = "simulated"

[providers.unstaffed]   # no worker process serves this pool
kind = "simulated"

[[models]]
id = "e2e/unstaffed"
deployments = [{ provider = "unstaffed", upstream_model = "echo" }]

[[models]]
id = "aiorouter/echo"
owned_by = "aiorouter"
deployments = [{ provider = "simulated", upstream_model = "echo" }]

[[models]]
id = "aiorouter/lorem"
deployments = [{ provider = "simulated", upstream_model = "lorem" }]
"""

HELLO = [{"role": "user", "content": "Hello there, router!"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture(scope="module")
def system(launch_system) -> RunningSystem:  # type: ignore[no-untyped-def]
    """One ingress and two worker processes of the simulated pool, for the whole module."""
    return launch_system(CONFIG, pools=["simulated"], workers_per_pool=2)


@pytest.fixture
def client(system: RunningSystem) -> openai.OpenAI:
    return system.client()


def _error_body(exc: openai.APIStatusError) -> dict[str, object]:
    body = exc.response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- models -----------------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    """GET /v1/models lists the catalog as OpenAI Model objects."""
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"aiorouter/echo", "aiorouter/lorem", "e2e/unstaffed"}
    assert models["aiorouter/echo"].object == "model" and models["aiorouter/echo"].owned_by == "aiorouter"
    assert isinstance(models["aiorouter/echo"].created, int)


def test_models_retrieve(client: openai.OpenAI) -> None:
    """GET /v1/models/{id} returns one model, slash in the id included."""
    model = client.models.retrieve("aiorouter/lorem")
    assert model.id == "aiorouter/lorem" and model.object == "model"


def test_models_retrieve_unknown(client: openai.OpenAI) -> None:
    """An unknown model id is NotFoundError 404 invalid_request / model_not_found."""
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    error = _error_body(caught.value)
    assert caught.value.status_code == 404
    assert error["type"] == "invalid_request" and error["code"] == "model_not_found"


# --- completions ------------------------------------------------------------------------------------


def test_non_stream_completion(client: openai.OpenAI) -> None:
    """A non-stream completion is one chat.completion with the echoed text, a finish reason and usage."""
    completion = client.chat.completions.create(model="aiorouter/echo", messages=HELLO)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl")
    assert completion.model == "aiorouter/echo"
    (choice,) = completion.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content == "Hello there, router!"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion_headers(client: openai.OpenAI) -> None:
    """Completions carry X-Request-Id (echoed), API-Version, X-Provider and X-Automated-Decision."""
    raw = client.chat.completions.with_raw_response.create(
        model="aiorouter/echo", messages=HELLO, extra_headers={"X-Request-Id": "e2e-request-1"}
    )
    assert raw.headers["x-request-id"] == "e2e-request-1"
    assert raw.headers["api-version"] == "2026-06-01"
    assert raw.headers["x-provider"] == "simulated"
    assert "automatically" in raw.headers["x-automated-decision"]
    assert raw.parse().choices[0].message.content == "Hello there, router!"


def test_stream_completion(client: openai.OpenAI) -> None:
    """A stream's chunks share one id, carry the role only first, the text in order and one finish_reason."""
    chunks = list(client.chat.completions.create(model="aiorouter/echo", messages=HELLO, stream=True))
    assert chunks and {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == "aiorouter/echo" for c in chunks)
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
    assert "".join(d.content or "" for d in deltas) == "Hello there, router!"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["stop"] and chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_wire_format(system: RunningSystem) -> None:
    """On the wire a stream is bare `data: {json}` events, then `data: [DONE]`, then the end."""
    body = {"model": "aiorouter/lorem", "messages": HELLO, "stream": True, "max_tokens": 12}
    headers = {"Authorization": f"Bearer {system.api_key}"}
    with httpx.stream(
        "POST", f"{system.base_url}/chat/completions", json=body, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    events = [e for e in raw.split(b"\n\n") if e and not e.startswith(b":")]
    assert raw.endswith(b"data: [DONE]\n\n") and events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(e.startswith(b"data: {") for e in events[:-1])
    assert sum(c["choices"][0]["finish_reason"] is not None for c in chunks) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_include_usage(client: openai.OpenAI) -> None:
    """With include_usage, the last chunk has empty choices and the usage; no other chunk has usage."""
    chunks = list(
        client.chat.completions.create(
            model="aiorouter/echo", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens > 0
    assert all(c.usage is None and c.choices for c in chunks[:-1])


def test_tool_call_non_stream(client: openai.OpenAI) -> None:
    """Given tools, the answer is a tool call with an id, the function name and JSON arguments."""
    completion = client.chat.completions.create(
        model="aiorouter/echo",
        messages=[{"role": "user", "content": "Weather in Montreal?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert isinstance(orjson.loads(call.function.arguments)["location"], str)


def test_tool_call_stream(client: openai.OpenAI) -> None:
    """Streamed tool calls: id/type/name only in the first delta, index on every delta, JSON arguments."""
    chunks = list(
        client.chat.completions.create(
            model="aiorouter/echo",
            messages=[{"role": "user", "content": "Weather in Montreal?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    pieces = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces and all(p.index == 0 for p in pieces)
    assert pieces[0].id and pieces[0].type == "function" and pieces[0].function
    assert pieces[0].function.name == "get_weather"
    assert all(
        p.id is None and p.type is None and (p.function is None or p.function.name is None)
        for p in pieces[1:]
    )
    arguments = "".join((p.function.arguments or "") if p.function else "" for p in pieces)
    assert "location" in orjson.loads(arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


def test_json_object(client: openai.OpenAI) -> None:
    """response_format json_object yields content that parses as a JSON object."""
    completion = client.chat.completions.create(
        model="aiorouter/lorem", messages=HELLO, response_format={"type": "json_object"}
    )
    assert isinstance(orjson.loads(completion.choices[0].message.content or ""), dict)


def test_earlier_refusal_and_audio_turns_are_accepted(client: openai.OpenAI) -> None:
    """An assistant turn sent back as the SDK parsed it, a refusal with null content, or an audio answer
    given by its id alone, is a valid history: the next turn is answered."""
    refused = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    spoken = {"role": "assistant", "audio": {"id": "audio_abc123"}}
    for earlier in (refused, spoken):
        messages = [*HELLO, earlier, {"role": "user", "content": "Then say hello."}]
        completion = client.chat.completions.create(model="aiorouter/echo", messages=messages)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Then say hello."


# --- errors -----------------------------------------------------------------------------------------


def test_wrong_key_is_authentication_error(system: RunningSystem) -> None:
    """A well-formed but unknown key is AuthenticationError 401 authentication_error / invalid_api_key."""
    unknown = "ak-" + "A" * 43
    for key in (unknown, "not-a-key"):
        with pytest.raises(openai.AuthenticationError) as caught:
            system.client(api_key=key).chat.completions.create(model="aiorouter/echo", messages=HELLO)
        error = _error_body(caught.value)
        assert caught.value.status_code == 401
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        assert caught.value.response.headers.get("x-request-id")


def test_bad_parameter_is_bad_request(client: openai.OpenAI) -> None:
    """An out-of-range temperature is BadRequestError 400 invalid_request naming the parameter."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="aiorouter/echo", messages=HELLO, temperature=3.5)
    error = _error_body(caught.value)
    assert error["type"] == "invalid_request" and error["param"] == "temperature"


def test_known_parameters_of_the_wrong_shape_are_bad_requests(client: openai.OpenAI) -> None:
    """store, metadata and modalities of the wrong shape are BadRequestError naming the field, not ignored."""
    wrong = [
        ({"store": "yes"}, "store"),
        ({"metadata": {"team": 7}}, "metadata.team"),
        ({"modalities": ["video"]}, "modalities[0]"),
    ]
    for fields, param in wrong:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="aiorouter/echo", messages=HELLO, extra_body=fields)
        assert _error_body(caught.value)["param"] == param


def test_tool_choice_naming_an_unknown_tool(client: openai.OpenAI) -> None:
    """tool_choice naming a tool that is not in tools is a 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="aiorouter/echo",
            messages=HELLO,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )
    assert _error_body(caught.value)["type"] == "invalid_request"


def test_unknown_model_is_not_found_even_when_streaming(client: openai.OpenAI) -> None:
    """An unknown model is NotFoundError 404 model_not_found, as an HTTP error even with stream=true."""
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-nonexistent", messages=HELLO, stream=stream)
        error = _error_body(caught.value)
        assert error["type"] == "invalid_request" and error["code"] == "model_not_found"
        assert error["param"] == "model"


def test_unsupported_api_version(client: openai.OpenAI) -> None:
    """An unknown API-Version header is 400 unsupported_api_version."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="aiorouter/echo", messages=HELLO, extra_headers={"API-Version": "1999-01-01"}
        )
    assert _error_body(caught.value)["code"] == "unsupported_api_version"


def test_revoked_key_stops_working(system: RunningSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key revoked with `aiorouter keys revoke` is refused by the running ingress within a few seconds."""
    monkeypatch.setenv("REDIS_URL", system.redis_url)
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    created = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--account", "e2e", "--json"],
        env={**system.env},
        capture_output=True,
        check=True,
    )
    key = orjson.loads(created.stdout)
    victim = system.client(api_key=key["secret"])
    assert victim.chat.completions.create(model="aiorouter/echo", messages=HELLO).choices
    assert aiorouter(["keys", "revoke", key["key_id"]]) == 0

    def refused() -> bool:
        try:
            victim.chat.completions.create(model="aiorouter/echo", messages=HELLO)
        except openai.AuthenticationError:
            return True
        return False

    eventually_sync(refused, within=10, interval=0.2)


def test_no_worker_in_time_is_queue_timeout(system: RunningSystem, client: openai.OpenAI) -> None:
    """A pool without workers answers 503 queue_timeout with Retry-After, and the job leaves the queue."""
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="e2e/unstaffed", messages=HELLO, stream=stream)
        error = _error_body(caught.value)
        assert caught.value.status_code == 503 and error["type"] == "service_unavailable"
        assert error["code"] == "queue_timeout"
        assert int(caught.value.response.headers["retry-after"]) >= 1
    connection = redis.Redis.from_url(system.redis_url)
    try:
        assert connection.llen(keys.rq_queue_key("unstaffed")) == 0
    finally:
        connection.close()


def test_concurrent_streams_stay_separate(system: RunningSystem) -> None:
    """Twenty streams at once through two workers each get exactly their own text, in order."""
    client = system.client(timeout=60)

    def ask(number: int) -> str:
        prompt = f"stream number {number} " + "word " * 20
        chunks = client.chat.completions.create(
            model="aiorouter/echo", messages=[{"role": "user", "content": prompt}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == prompt, (number, text)
        return text

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert len(set(answers)) == 20


def test_rq_info_shows_the_pool(system: RunningSystem) -> None:
    """`rq info` (rq's own CLI) sees the pool's queue and its workers while the system runs."""
    rq = Path(sys.executable).with_name("rq")
    result = subprocess.run(
        [str(rq), "info", "--url", system.redis_url], capture_output=True, text=True, timeout=30, check=True
    )
    assert "simulated" in result.stdout
    assert "2 workers" in result.stdout or result.stdout.count("simulated") >= 3, result.stdout
