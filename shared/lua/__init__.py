"""The Lua scripts behind everything that must be atomic in Redis, kept as ``.lua`` files.

A :class:`LuaScript` reads its file once, without its comments and indentation (:func:`compact`), and
knows its SHA-1; each call is one ``EVALSHA``.  A server that
does not know the script yet (first use, restart, ``SCRIPT FLUSH``) answers ``NOSCRIPT``: the script is
then sent with ``SCRIPT LOAD`` and the call repeated, once.

A :class:`ScriptCall` is one call not yet made: :func:`run_together` makes several in one round trip
(``EVALSHA`` each, in order; only a call the server did not know is repeated, alone), and
:meth:`ScriptCall.command` turns one into an ``EVAL`` to queue among other commands of a pipeline that
cannot repeat anything (it carries the source, so it never meets ``NOSCRIPT``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import NoScriptError

from shared.redis_commands import Command


def compact(source: str) -> str:
    """``source`` without its whole-line comments and its indentation, each line kept (empty) so that
    a Lua error's line number is the file's.  An ``EVAL`` carries the source in every round trip that
    cannot repeat a call (a final frame's settlement, for one), and Redis hashes it each time to find
    the compiled script: half the bytes is half that work, on the one thread Redis has."""
    lines = (line.strip() for line in source.split("\n"))
    return "\n".join("" if line.startswith("--") else line for line in lines)


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> LuaScript:
        """The script ``shared/lua/<name>.lua``."""
        source = compact(resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8"))
        return cls(name=name, source=source, sha=hashlib.sha1(source.encode()).hexdigest())

    @classmethod
    def compose(cls, name: str, *parts: str) -> LuaScript:
        """The script ``shared/lua/<name>.lua`` with each of ``parts`` (other scripts' names) before it
        as a local function of that name taking ``(KEYS, ARGV)``: one atomic script that runs several,
        each exactly as when called alone, on the keys and arguments the glue hands it."""
        functions = [f"local function {part}(KEYS, ARGV)\n{cls.load(part).source}\nend\n" for part in parts]
        source = "".join(functions) + cls.load(name).source
        return cls(name=name, source=source, sha=hashlib.sha1(source.encode()).hexdigest())

    async def __call__(self, redis: aredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: LuaScript
    keys: list[str]
    args: list[Any]

    async def run(self, redis: aredis.Redis) -> Any:
        return await self.script(redis, self.keys, self.args)

    def command(self) -> Command:
        """This call as one ``EVAL`` command (see :func:`shared.redis_commands.replay`)."""
        return (("EVAL", self.script.source, len(self.keys), *self.keys, *self.args), {})


async def run_together(redis: aredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """The replies of several script calls made in one round trip, in order.

    Each call is atomic on its own, not the group.  A call the server answered ``NOSCRIPT`` is loaded
    and made again alone (the others already ran, and must not run twice); any other error is raised.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies = await pipe.execute(raise_on_error=False)
    results: list[Any] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, NoScriptError):
            reply = await call.run(redis)
        elif isinstance(reply, Exception):
            raise reply
        results.append(reply)
    return results
