"""The suite covers every benchmark scenario, in full and quick form."""

from __future__ import annotations

from bench.scenarios import AIOROUTER, DIRECT, FULL, QUICK, RELAY, SLOW_STREAM_CLIENTS, scenarios
from bench.sim_behaviour import parse_behaviour


def test_every_issue_scenario_is_in_the_suite() -> None:
    """Non-stream 1/16/64/256, streams 16/64, open loop, TTFT, slow streams and 2/4-worker scaling all run."""
    names = {s.name for s in scenarios(FULL)}
    assert {f"nonstream_c{c}" for c in (1, 16, 64, 256)} <= names
    assert {"stream50_c16", "stream50_c64", "open100_lat50", "ttft_c1", "slow_streams"} <= names
    assert {"scaling_nonstream_c64_w2", "scaling_nonstream_c64_w4", "scaling_stream50_c16_w4"} <= names


def test_scenario_models_match_their_expected_tokens() -> None:
    """Each scenario's upstream model produces exactly the tokens the load generator will check for."""
    for scenario in scenarios(FULL):
        assert parse_behaviour(scenario.upstream_model).tokens == scenario.tokens, scenario.name


def test_slow_streams_are_twenty_tokens_a_second_for_the_configured_time() -> None:
    """2,000 slow streams last 30 s at 20 tokens/s in full mode, and a few seconds in quick mode."""
    for timing, seconds in ((FULL, 30.0), (QUICK, QUICK.slow_stream_s)):
        (slow,) = [s for s in scenarios(timing) if s.name == "slow_streams"]
        behaviour = parse_behaviour(slow.upstream_model)
        assert behaviour.itl_s == 0.05
        assert behaviour.tokens * behaviour.itl_s == seconds
        assert (slow.clients, slow.requests_per_client, slow.stream) == (SLOW_STREAM_CLIENTS, 1, True)


def test_scaling_runs_only_through_aiorouter_and_comparisons_run_every_target() -> None:
    """Scaling needs no baseline; slow streams skip the relay; the others measure direct, aiorouter, relay."""
    for scenario in scenarios(QUICK):
        if scenario.name.startswith("scaling_"):
            expected: tuple[str, ...] = (AIOROUTER,)
        elif scenario.name == "slow_streams":
            expected = (DIRECT, AIOROUTER)
        else:
            expected = (DIRECT, AIOROUTER, RELAY)
        assert scenario.targets == expected, scenario.name
