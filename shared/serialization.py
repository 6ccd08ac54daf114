"""orjson on the wire and in Redis; the rq serializer built on it (never pickle)."""

from __future__ import annotations

from typing import Any

import orjson

dumps = orjson.dumps
loads = orjson.loads


class OrjsonSerializer:
    """rq serializer: rq stores ``(func_name, instance, args, kwargs)``; orjson turns the tuple into a
    list, which rq unpacks the same way."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    @staticmethod
    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)
