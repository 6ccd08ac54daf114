"""The servers refuse to start on a redis-py or rq release outside the tested range, with one clear line."""

from __future__ import annotations

import pytest

from cli import main
from shared import tested_versions


def test_worker_refuses_an_untested_redis_py(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With redis-py 7 installed, `aiorouter worker` exits non-zero naming the tested range, no traceback."""
    real = tested_versions.metadata.version
    monkeypatch.setattr(
        tested_versions.metadata, "version", lambda name: "7.4.0" if name == "redis" else real(name)
    )
    assert main(["worker", "--pool", "simulated"]) != 0
    error = capsys.readouterr().err
    assert "redis 7.4.0 is installed; AIOrouter is tested on redis>=8,<9" in error
    assert "Traceback" not in error


def test_ingress_refuses_an_untested_rq(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With rq 4 installed, `aiorouter ingress` exits non-zero before it binds a port."""
    real = tested_versions.metadata.version
    monkeypatch.setattr(
        tested_versions.metadata, "version", lambda name: "4.0.0" if name == "rq" else real(name)
    )
    assert main(["ingress", "--port", "1"]) != 0
    assert "rq 4.0.0 is installed; AIOrouter is tested on rq>=3,<4" in capsys.readouterr().err
