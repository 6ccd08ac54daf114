"""The orjson rq serializer."""

from __future__ import annotations

from shared.serialization import OrjsonSerializer


def test_rq_payload_round_trip() -> None:
    """rq's (func, instance, args, kwargs) tuple comes back as a list rq unpacks the same way."""
    payload = ("workers.completion.run_completion", None, ({"request_id": "r", "body": {"n": 1}},), {})
    data = OrjsonSerializer.dumps(payload)
    assert isinstance(data, bytes) and not data.startswith(b"\x80")  # JSON, never pickle
    func, instance, args, kwargs = OrjsonSerializer.loads(data)
    assert (func, instance, args, kwargs) == (payload[0], None, [payload[2][0]], {})
