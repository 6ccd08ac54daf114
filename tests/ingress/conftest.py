"""Ingress test fixtures: the app in-process (with its lifespan) on the test Redis, an API key, a fake
worker on the same Redis, and a raw ASGI driver for disconnect and body-streaming cases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aredis
from starlette.applications import Starlette
from starlette.types import Message

from ingress.api_keys import ApiKeyRecord
from ingress.app import create_app
from ingress.control import accounts
from shared import credits
from shared.settings import Settings, settings_from_mapping
from tests.ingress.fake_worker import FakeWorker

MODEL = "aiorouter/echo"
MESSAGES = [{"role": "user", "content": "hello"}]


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    """Test settings: short timeouts so failure paths resolve within a couple of seconds."""
    raw: dict[str, Any] = {
        "redis_url": redis_url,
        "queue_timeout": 2.0,
        "stream_ping_interval": 5.0,
        "worker_heartbeat_interval": 0.2,
        "worker_dead_after": 1.0,
        "key_cache_ttl": 0.3,
        **overrides,
    }
    return settings_from_mapping(raw, env={})


@dataclass
class Ingress:
    app: Starlette
    client: httpx.AsyncClient
    redis: aredis.Redis
    worker: FakeWorker
    api_key: str
    record: ApiKeyRecord
    settings: Settings

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            **(extra or {}),
        }

    async def chat(
        self, body: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        body = body if body is not None else {"model": MODEL, "messages": MESSAGES}
        return await self.client.post("/v1/chat/completions", json=body, headers=self.headers(headers))

    def chat_task(
        self, body: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> asyncio.Task[httpx.Response]:
        return asyncio.create_task(self.chat(body, headers))


IngressFactory = Callable[..., contextlib.AbstractAsyncContextManager[Ingress]]

TEST_CREDIT_MICROS = 100 * 1_000_000


async def create_funded_key(redis: aredis.Redis, settings: Settings) -> tuple[str, ApiKeyRecord]:
    """A key on the account ``acct-test`` (developer plan), which holds 100 USD of credit."""
    await accounts.create_account(redis, settings, account_id="acct-test", plan="developer")
    await credits.add_credit(redis, "acct-test", TEST_CREDIT_MICROS, reason="test fixture")
    return await accounts.create_key_for_account(redis, settings, "acct-test")


@pytest.fixture
def ingress_factory(redis_url: str, aredis_client: aredis.Redis, clean_redis: redis.Redis) -> IngressFactory:
    """Start the app in-process with settings overrides: ``async with ingress_factory(queue_timeout=1)``
    (and ``tracer=``, an :class:`ingress.tracing.RequestTracer`)."""

    @contextlib.asynccontextmanager
    async def start(tracer: Any = None, **overrides: Any) -> AsyncIterator[Ingress]:
        settings = make_settings(redis_url, **overrides)
        app = create_app(settings, tracer=tracer)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingress.test") as client:
                key, record = await create_funded_key(aredis_client, settings)
                worker = FakeWorker(aredis_client, clean_redis)
                await worker.heartbeat()
                yield Ingress(app, client, aredis_client, worker, key, record, settings)

    return start


@pytest.fixture
async def ingress(ingress_factory: IngressFactory) -> AsyncIterator[Ingress]:
    """The app with default test settings."""
    async with ingress_factory() as running:
        yield running


@dataclass
class AsgiCall:
    """One request driven straight through ASGI: the test decides the body chunks and when the client
    disconnects, and sees every message the app sends."""

    app: Starlette
    path: str
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    method: str = "POST"
    sent: list[Message] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    body_sent: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> Message:
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.body_sent.set()

    async def run(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 40000),
            "server": ("ingress.test", 80),
        }
        await self.app(scope, self.receive, self.send)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def asgi_chat(ingress: Ingress, body: dict[str, Any], chunk_size: int | None = None) -> AsgiCall:
    raw = orjson.dumps(body)
    size = chunk_size or len(raw)
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    headers = [(k.lower().encode(), v.encode()) for k, v in ingress.headers().items()]
    return AsgiCall(ingress.app, "/v1/chat/completions", headers, chunks)
