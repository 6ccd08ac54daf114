"""The Lua scripts behind everything that must be atomic in Redis, kept as ``.lua`` files.

A :class:`LuaScript` reads its file once and knows its SHA-1; each call is one ``EVALSHA``.  A server that
does not know the script yet (first use, restart, ``SCRIPT FLUSH``) answers ``NOSCRIPT``: the script is
then sent with ``SCRIPT LOAD`` and the call repeated, once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> LuaScript:
        """The script ``shared/lua/<name>.lua``."""
        source = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return cls(name=name, source=source, sha=hashlib.sha1(source.encode()).hexdigest())

    async def __call__(self, redis: aredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
