"""Arguments a command could not use are refused by argparse (exit status 2), before anything runs."""

from __future__ import annotations

import pytest

from cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["ingress", "--port", "99999"],
        ["ingress", "--port", "-1"],
        ["dev", "--port", "7e3"],
        ["accounts", "list", "--limit", "99999999999999999999"],
        ["accounts", "list", "--limit", "0"],
        ["accounts", "list", "--offset", "-5"],
        ["credits", "ledger", "acme", "--limit", "\u0665"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "is not a whole number from" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["notaurl", "redis://127.0.0.1:99999/0", "http://127.0.0.1:6379"])
def test_a_malformed_redis_url_is_one_line(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A REDIS_URL no client can be made from is a settings error on one line, not a traceback."""
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    assert main(["accounts", "list"]) != 0
    err = capsys.readouterr().err
    assert "not a Redis URL" in err and "Traceback" not in err and err.count("\n") == 1
