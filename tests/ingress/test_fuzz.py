"""A bounded fuzz test of the HTTP API: generated chat completion requests and admin API calls never get
a 5xx, and every 4xx is the JSON error envelope.

Everything runs in this process on the test Redis: the ingress app with its lifespan, and a real worker
with the simulated provider, so that what the ingress accepts also reaches a provider.  One event loop
(an ``asyncio.Runner``) lives across the examples; hypothesis is derandomized with a fixed number of
examples, so a run is the same every time and bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingress.app import create_app
from tests.ingress.conftest import create_funded_key, make_settings
from tests.workers.conftest import running_worker

pytestmark = pytest.mark.redis

ADMIN_TOKEN = "fuzz-admin-token-" + "x" * 32
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Api:
    """The app in-process on one event loop that outlives each example."""

    runner: asyncio.Runner
    client: httpx.AsyncClient
    api_key: str

    def call(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with asyncio.timeout(30):
                return await self.client.request(method, path, **options)

        return self.runner.run(send())


@pytest.fixture
def api(redis_url: str, clean_redis: redis.Redis) -> Iterator[Api]:
    """The ingress (admin API on, no practical rate limit) and one simulated worker, in this process."""
    config = make_settings(
        redis_url,
        admin_token=ADMIN_TOKEN,
        queue_timeout=10.0,
        worker_dead_after=4.0,  # the loop pauses between examples while hypothesis draws the next
        plans={"developer": {"requests_per_minute": 1_000_000}},
    )
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()

        async def start() -> Api:
            app = create_app(config)
            await stack.enter_async_context(app.router.lifespan_context(app))
            await stack.enter_async_context(running_worker(config, concurrency=8))
            redis_client = aredis.Redis.from_url(redis_url)
            stack.push_async_callback(redis_client.aclose)
            key, _ = await create_funded_key(redis_client, config)
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://ingress.test")
            stack.push_async_callback(client.aclose)
            return Api(runner, client, key)

        try:
            yield runner.run(start())
        finally:
            runner.run(stack.aclose())


def assert_clean(response: httpx.Response) -> None:
    """No 5xx; a 4xx is the envelope; a stream carries no server-error event."""
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text[:500]
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"] and error["type"] != "api_error"
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.split("\n"):
            if line.startswith("data: {") and '"error"' in line:
                assert orjson.loads(line[6:])["error"]["type"] != "api_error", line


# --- strategies -------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
schema_keys = st.sampled_from(
    ["type", "properties", "items", "minItems", "minimum", "enum", "const", "anyOf", "oneOf", "$ref", "$defs"]
)
schema_types = st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null"])
schemas = st.recursive(
    st.fixed_dictionaries(
        {"type": schema_types}, optional={"minimum": json_scalars, "minItems": json_scalars}
    ),
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(st.text(max_size=6), inner, max_size=3)}
        ),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner},
            optional={"minItems": st.one_of(st.integers(-2, 12), st.integers(10**3, 10**12), json_scalars)},
        ),
        st.fixed_dictionaries({"anyOf": st.one_of(st.lists(inner, max_size=2), inner)}),
        st.dictionaries(schema_keys, st.one_of(inner, json_values), max_size=3),
        st.fixed_dictionaries({"$ref": st.sampled_from(["#", "#/properties", "#/$defs/a", "x"])}),
    ),
    max_leaves=12,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.one_of(st.just("function"), json_scalars),
            "function": st.one_of(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["f", "get_x", "bad name", ""]), "parameters": schemas}
                ),
                json_values,
            ),
        }
    ),
    max_size=2,
)
contents = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "refusal", "x"]), "text": st.text(max_size=10)}
        ),
        max_size=2,
    ),
    json_values,
)


def mostly(good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about four times in five, else ``junk``: deep enough paths get exercised."""
    return st.integers(0, 4).flatmap(lambda pick: junk if pick == 4 else good)


good_messages = st.lists(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=30)}),
    min_size=1,
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "robot"])},
        optional={"content": contents, "tool_call_id": json_scalars, "name": json_scalars},
    ),
    max_size=3,
)
good_tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "get_x"]), "parameters": schemas}
            ),
        }
    ),
    min_size=1,
    max_size=2,
)
optional_fields = {
    "stream": mostly(st.booleans(), json_scalars),
    "max_tokens": mostly(st.integers(1, 40), st.one_of(st.integers(10**9, 10**20), json_scalars)),
    "temperature": mostly(st.floats(0, 2), json_scalars),
    "stop": mostly(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=4), json_values),
    "stream_options": mostly(st.fixed_dictionaries({"include_usage": st.booleans()}), json_values),
    "tools": mostly(good_tools, st.one_of(tools, json_values)),
    "tool_choice": mostly(st.sampled_from(["auto", "none", "required"]), json_values),
    "response_format": mostly(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["json_object", "json_schema", "text"]),
                "json_schema": st.fixed_dictionaries({"name": st.just("r"), "schema": schemas}),
            }
        ),
        json_values,
    ),
    "n": mostly(st.just(1), json_scalars),
    "logit_bias": mostly(st.dictionaries(st.integers(0, 99).map(str), st.integers(-100, 100)), json_values),
    "provider": mostly(st.just({}), json_values),
    "extra": json_values,
}
chat_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["aiorouter/echo", "aiorouter/lorem"]), "messages": good_messages},
    optional=optional_fields,
)
malformed_bodies = st.one_of(
    st.fixed_dictionaries(
        {"model": st.one_of(st.sampled_from(["aiorouter/echo"]), json_values)},
        optional={"messages": st.one_of(messages, json_values), **optional_fields},
    ).map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=64),
    st.integers(1, 2000).map(
        lambda depth: b'{"model":"aiorouter/echo","x":' + b"[" * depth + b"]" * depth + b"}"
    ),
)
JSON_HEADERS = {"Content-Type": "application/json"}


@FUZZ
@given(body=chat_bodies)
@example(body={"model": "aiorouter/echo", "messages": [{"role": "user", "content": "x"}], "tools": [
    {"type": "function", "function": {"name": "f", "parameters": {"type": "integer", "minimum": "x"}}}
]})  # fmt: skip
def test_chat_completions_never_answers_5xx(api: Api, body: dict[str, Any]) -> None:
    """Generated chat requests (valid model and messages, parameters and tool schemas of any shape) are
    answered below 500, errors in the envelope."""
    headers = {"Authorization": f"Bearer {api.api_key}", **JSON_HEADERS}
    assert_clean(api.call("POST", "/v1/chat/completions", content=json.dumps(body), headers=headers))


@FUZZ
@given(raw=malformed_bodies)
def test_malformed_chat_bodies_never_answer_5xx(api: Api, raw: bytes) -> None:
    """Bodies that are not chat requests (any JSON, bytes, nesting up to 2000 deep) are answered below
    500, errors in the envelope."""
    headers = {"Authorization": f"Bearer {api.api_key}", **JSON_HEADERS}
    assert_clean(api.call("POST", "/v1/chat/completions", content=raw, headers=headers))


# --- the admin API ------------------------------------------------------------------------------------

ACCOUNT = "acct-test"
path_ids = st.one_of(
    st.just(ACCOUNT), st.text(min_size=1, max_size=12).map(lambda text: quote(text, safe=""))
)
query_values = st.one_of(
    st.text(max_size=12), st.integers(-(10**12), 10**12).map(str), st.dates().map(str), st.just("0001-01-01")
)
admin_bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["name", "plan", "id", "status", "amount_usd", "amount_micros", "reason"]),
        st.one_of(
            json_values,
            st.sampled_from(
                ["1e999999", "1_000", "١٢", "0.5", "-1", "NaN", "developer", "suspended", "active"]
            ),
        ),
        max_size=4,
    ).map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=32),
)


@st.composite
def admin_calls(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    account, key = draw(path_ids), draw(path_ids)
    method, path = draw(
        st.sampled_from(
            [
                ("GET", "/admin/plans"),
                ("POST", "/admin/accounts"),
                ("GET", "/admin/accounts"),
                ("GET", f"/admin/accounts/{account}"),
                ("PATCH", f"/admin/accounts/{account}"),
                ("POST", f"/admin/accounts/{account}/dashboard-token"),
                ("POST", f"/admin/accounts/{account}/keys"),
                ("GET", f"/admin/accounts/{account}/keys"),
                ("DELETE", f"/admin/accounts/{account}/keys/{key}"),
                ("POST", f"/admin/accounts/{account}/keys/{key}/revoke"),
                ("POST", f"/admin/accounts/{account}/credits"),
                ("GET", f"/admin/accounts/{account}/credits"),
                ("GET", f"/admin/accounts/{account}/usage"),
                ("GET", f"/admin/accounts/{account}/usage/records"),
                ("GET", "/admin/usage/records"),
                ("GET", "/admin/pools"),
                ("GET", "/admin/breakers"),
            ]
        )
    )
    query = draw(st.dictionaries(st.sampled_from(["offset", "limit", "start", "end", "days"]), query_values))
    body = draw(admin_bodies) if method in ("POST", "PATCH") else None
    return method, path, query, body


@FUZZ
@given(call=admin_calls())
@example(call=("POST", f"/admin/accounts/{ACCOUNT}/credits", {}, b'{"amount_usd": "1e999999"}'))
@example(call=("GET", f"/admin/accounts/{ACCOUNT}/usage", {"end": "0001-01-01"}, None))
def test_admin_api_never_answers_5xx(api: Api, call: tuple[str, str, dict[str, str], bytes | None]) -> None:
    """Any generated admin API call is answered below 500, errors in the envelope."""
    method, path, query, body = call
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    assert_clean(api.call(method, path, params=query, content=body, headers=headers))
