"""deploy/compose.yaml passes `docker compose config` (Compose's own loader and schema, client-side, no
engine) and deploy/Dockerfile passes hadolint with no finding, not even a style one."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.deploy.tools import REPO, command, run

COMPOSE = REPO / "deploy" / "compose.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def compose_config(path: Path) -> tuple[int, str, str]:
    """`docker-compose config` of the file (the Compose v2 binary the test extra installs)."""
    result = run(command("docker-compose"), "-f", str(path), "config")
    return result.returncode, result.stdout, result.stderr


def test_compose_file_is_valid_and_gives_the_services_their_grace_and_health_check() -> None:
    """Compose loads the file; its worker and ingress services keep the grace rule (the shutdown grace
    plus 15 s) and the worker checks its health through `aiorouter worker-health`."""
    status, out, err = compose_config(COMPOSE)
    assert status == 0, err
    services = yaml.safe_load(out)["services"]
    assert {"redis", "ingress", "worker-simulated"} <= set(services)
    worker = services["worker-simulated"]
    assert worker["healthcheck"]["test"][:2] == ["CMD", "aiorouter"]
    assert "worker-health" in worker["healthcheck"]["test"]
    for name, variable in (("worker-simulated", "WORKER"), ("ingress", "INGRESS")):
        grace = float(services[name]["environment"][f"AIOROUTER_{variable}_SHUTDOWN_GRACE"])
        assert _seconds(services[name]["stop_grace_period"]) == grace + 15, name


def _seconds(duration: str) -> float:
    """A Compose duration as `docker compose config` writes it (``1m0s``, ``45s``) in seconds."""
    minutes, _, rest = duration.rpartition("m")
    return float(minutes or 0) * 60 + float(rest.rstrip("s") or 0)


def test_compose_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check can fail: an unknown service key is refused."""
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text().replace("    stop_grace_period: 60s", "    stop_grace_periods: 60s", 1)
    broken.write_text(text)
    shutil.copy(REPO / "deploy" / "aiorouter.example.toml", tmp_path / "aiorouter.example.toml")
    status, _, err = compose_config(broken)
    assert status != 0 and "stop_grace_periods" in err


def test_dockerfile_has_no_hadolint_finding() -> None:
    """hadolint finds nothing in deploy/Dockerfile at any level (error, warning, info, style)."""
    result = run(command("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_finding(tmp_path: Path) -> None:
    """The check can fail: a shell-form CMD and a named USER are reported."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nUSER app\nCMD python -m http.server\n")
    result = run(command("hadolint"), "--no-color", "--failure-threshold", "style", str(dockerfile))
    assert result.returncode != 0 and "DL3025" in result.stdout
