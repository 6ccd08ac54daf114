"""The settings files shipped in deploy/ load, commented-out examples included."""

from __future__ import annotations

import re
from pathlib import Path

from shared.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_COMMENTED_SETTING = re.compile(r"^# (\[.*\]|[a-z_]+ = .*)$")


def _uncommented(text: str) -> str:
    """The file with every commented-out table header and `key = value` line switched on."""
    return "\n".join(_COMMENTED_SETTING.sub(r"\1", line) for line in text.splitlines())


def test_example_file_loads_with_the_simulated_models() -> None:
    """deploy/aiorouter.example.toml loads as is and serves the simulated models."""
    settings = load_settings(DEPLOY / "aiorouter.example.toml", env={})
    assert set(settings.providers) == {"simulated"}
    assert {"aiorouter/echo", "aiorouter/lorem"} <= set(settings.models)


def test_example_file_commented_providers_are_valid(tmp_path: Path) -> None:
    """Uncommenting the DeepSeek and Qwen examples gives OpenAI-compatible providers keyed from the env."""
    path = tmp_path / "aiorouter.toml"
    path.write_text(_uncommented((DEPLOY / "aiorouter.example.toml").read_text()))
    env = {"DEEPSEEK_API_KEY": "sk-deepseek", "DASHSCOPE_API_KEY": "sk-dashscope"}
    settings = load_settings(path, env=env)
    assert settings.provider("deepseek").kind == "openai"
    assert settings.provider("deepseek").api_key == "sk-deepseek"
    assert settings.provider("deepseek").upstream_stream == "as_requested"
    assert settings.provider("dashscope").api_key == "sk-dashscope"
    assert settings.models["deepseek-v4-pro"].deployments[0].provider == "deepseek"
    assert settings.models["qwen3-235b"].deployments[0].provider == "dashscope"
    assert "2026-01-01" in settings.api_versions


def test_kubernetes_settings_load() -> None:
    """The ConfigMap's TOML loads and names a pool for every model."""
    settings = load_settings(DEPLOY / "kubernetes" / "aiorouter.toml", env={})
    assert {"aiorouter/echo", "deepseek-v4-pro", "qwen3-235b"} <= set(settings.models)
    assert settings.provider("deepseek").api_key == ""  # read from the Secret's env var at run time


def test_uncommenting_leaves_prose_comments_alone() -> None:
    """Only settings lines are switched on; prose comments stay comments."""
    text = '# The key is read from the env.\n# [providers.x]\n# kind = "openai"\n'
    assert _uncommented(text) == '# The key is read from the env.\n[providers.x]\nkind = "openai"'


def _seconds(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match is not None, pattern
    return float(match.group(1))


def test_deploy_manifests_give_workers_their_shutdown_grace_plus_a_margin() -> None:
    """Kubernetes and Compose wait the worker's shutdown grace plus 15 s before killing it, so streams
    the grace lets finish are not cut by the orchestrator."""
    for manifest in sorted((DEPLOY / "kubernetes").glob("worker-*.yaml")):
        pod = manifest.read_text()
        grace = _seconds(r'AIOROUTER_WORKER_SHUTDOWN_GRACE\s+value: "(\d+)"', pod)
        assert _seconds(r"terminationGracePeriodSeconds: (\d+)", pod) >= grace + 15
    compose = (DEPLOY / "compose.yaml").read_text()
    grace = _seconds(r'\n      AIOROUTER_WORKER_SHUTDOWN_GRACE: "(\d+)"', compose)
    assert _seconds(r"\n    stop_grace_period: (\d+)s", compose) >= grace + 15
    assert load_settings(env={"AIOROUTER_WORKER_SHUTDOWN_GRACE": "105"}).worker_shutdown_grace == 105.0
    assert load_settings(env={"AIOROUTER_INGRESS_SHUTDOWN_GRACE": "40"}).ingress_shutdown_grace == 40.0
