"""Every field an OpenAI-compatible upstream sends reaches the caller unchanged, streamed or not: the
simulated upstream's ``all_fields`` answers (every optional field of OpenAI's schemas, and unknown ones)
through the OpenAI adapter and the worker's chunk writer and assembler, over a real socket."""

from __future__ import annotations

from typing import Any

import orjson

from bench.sim_full import full_completion_body, full_usage
from bench.sim_payloads import count_prompt_tokens
from bench.upstream import Upstream
from shared.events import Frame
from tests.openai_spec import chunk_violations, completion_violations
from tests.workers.factories import completion_job
from tests.workers.test_openai_compatible import provider_for, run_complete

OWNED = ("id", "created", "model")  # the router's own: its request id, its clock, the model asked for
TOKENS = 4


def stream_chunks(frames: list[Frame]) -> list[dict[str, Any]]:
    payload = b"".join(f.payload for f in frames[1:])
    lines = [line[6:] for line in payload.split(b"\n\n") if line.startswith(b"data: ")]
    assert lines[-1] == b"[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


def upstream_non_stream(job_body: dict[str, Any], n: int) -> dict[str, Any]:
    """What the simulated upstream itself answers to the same request without streaming."""
    prompt = count_prompt_tokens(job_body["messages"])
    body: dict[str, Any] = orjson.loads(full_completion_body("m", TOKENS, prompt, n))
    return body


async def test_stream_relays_every_chunk_choice_and_delta_field(upstream: Upstream) -> None:
    """Each content chunk carries the upstream's service_tier, fingerprint, obfuscation, unknown chunk
    field, logprobs, unknown choice field, reasoning_content and unknown delta field; the usage chunk its
    token details."""
    job = completion_job(
        "hi there", upstream_model=f"sim?tokens={TOKENS}&all_fields", provider="up", include_usage=True
    )
    chunks = stream_chunks(await run_complete(job, provider_for(upstream.base_url)))
    assert all(chunk_violations(c) == [] for c in chunks)
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == TOKENS
    for number, chunk in enumerate(content):
        assert chunk["service_tier"] == "default" and chunk["system_fingerprint"] == "fp_sim_all"
        assert chunk["x_sim_chunk"] == {"future": True} and chunk["obfuscation"]
        (choice,) = chunk["choices"]
        assert choice["x_sim_choice"] == number
        assert choice["logprobs"]["content"][0]["token"] == f"w{number} "
        assert choice["logprobs"]["content"][0]["top_logprobs"][0]["bytes"] == list(f"w{number} ".encode())
        assert choice["delta"]["reasoning_content"] == f"r{number} "
        assert choice["delta"]["x_sim_delta"] == f"d{number}"
    assert "annotations" in content[-1]["choices"][0]["delta"]
    prompt = count_prompt_tokens(job.body["messages"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full_usage(prompt, TOKENS, 1)
    assert chunks[-1]["service_tier"] == "default"
    assert {c["id"] for c in chunks} == {f"chatcmpl-{job.request_id}"}
    assert {c["model"] for c in chunks} == {"aiorouter/test-model"}


async def test_non_stream_body_is_the_upstreams_own_answer_but_for_what_the_router_owns(
    upstream: Upstream,
) -> None:
    """Assembled from the stream, the body equals the upstream's own non-stream answer field for field,
    except id, created and model."""
    job = completion_job(
        "hi there", upstream_model=f"sim?tokens={TOKENS}&all_fields", provider="up", stream=False
    )
    frames = await run_complete(job, provider_for(upstream.base_url))
    body = orjson.loads(frames[-1].payload)
    assert completion_violations(body) == []
    expected = upstream_non_stream(job.body, 1)
    for name in OWNED:
        expected.pop(name)
        body.pop(name)
    assert body == expected


async def test_n_choices_are_relayed_and_billed(upstream: Upstream) -> None:
    """n=3 goes upstream; the caller gets three choices, each with one finish_reason, and the usage of all."""
    job = completion_job(
        "hi there", upstream_model=f"sim?tokens={TOKENS}", provider="up", include_usage=True, n=3
    )
    frames = await run_complete(job, provider_for(upstream.base_url))
    chunks = stream_chunks(frames)
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]]
    assert sorted(i for i, reason in finishes if reason) == [0, 1, 2]
    roles = [c["choices"][0]["index"] for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert sorted(roles) == [0, 1, 2]
    assert frames[-1].meta["usage"]["completion_tokens"] == TOKENS * 3

    job = completion_job("hi there", upstream_model=f"sim?tokens={TOKENS}", provider="up", stream=False, n=3)
    body = orjson.loads((await run_complete(job, provider_for(upstream.base_url)))[-1].payload)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {"w0 w1 w2 w3 "}
    assert body["usage"]["completion_tokens"] == TOKENS * 3
