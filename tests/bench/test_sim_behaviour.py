"""The model-name grammar of the simulated upstream."""

from __future__ import annotations

import pytest

from bench.sim_behaviour import DEFAULT_TOKENS, BadBehaviour, Behaviour, parse_behaviour


def test_plain_name_means_defaults() -> None:
    """A model name without options gives the default, instant, successful behaviour."""
    assert parse_behaviour("sim") == Behaviour()
    assert parse_behaviour("sim").tokens == DEFAULT_TOKENS


def test_timings_are_read_in_milliseconds() -> None:
    """Timing options are milliseconds and become seconds; a non-stream waits for the whole generation."""
    behaviour = parse_behaviour("sim?tokens=5&latency_ms=50&ttft_ms=10&itl_ms=2.5")
    assert (behaviour.tokens, behaviour.latency_s, behaviour.ttft_s) == (5, 0.05, 0.01)
    assert behaviour.itl_s == pytest.approx(0.0025)
    assert behaviour.generation_s == pytest.approx(0.01 + 4 * 0.0025)


def test_failure_options_and_flags() -> None:
    """Status, retry_after, cut and the bare flags are all understood."""
    behaviour = parse_behaviour("sim?status=503&retry_after=2&cut=3&hang&bad_json&tools")
    assert behaviour.status == 503
    assert behaviour.retry_after == 2.0
    assert behaviour.cut == 3
    assert behaviour.hang and behaviour.bad_json and behaviour.tools


@pytest.mark.parametrize(
    "model",
    ["sim?tokenz=3", "sim?tokens=many", "sim?tokens=-1", "sim?status=42", "sim?hang=5", "sim?cut=1.5"],
)
def test_bad_options_are_refused(model: str) -> None:
    """Unknown options, non-numbers, negatives, impossible statuses and valued flags are refused."""
    with pytest.raises(BadBehaviour):
        parse_behaviour(model)
