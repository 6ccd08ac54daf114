"""deploy/kubernetes: one worker Deployment, KEDA ScaledObject and PodDisruptionBudget per pool of the
ConfigMap's settings, scaling on that pool's own rq keys with targets derived from its concurrency, and
every pod locked down (non-root, read-only root, no capabilities, RuntimeDefault seccomp, bounded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rq.registry import StartedJobRegistry

from shared import keys
from shared.settings import Settings, load_settings

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
NAME_FILE = "/tmp/aiorouter-worker-name"


def resources() -> list[dict[str, Any]]:
    """Every document of every file kustomization.yaml lists, as written (no kustomize transforms)."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d)
    return documents


def settings() -> Settings:
    return load_settings(KUBERNETES / "aiorouter.toml", env={})


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in resources() if d["kind"] == kind}


def worker_deployments() -> dict[str, dict[str, Any]]:
    """Pool name -> its worker Deployment."""
    found = {}
    for deployment in of_kind("Deployment").values():
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[:2] == ["aiorouter", "worker"]:
            found[args[args.index("--pool") + 1]] = deployment
    return found


def _env(container: dict[str, Any], name: str) -> str:
    return next(e["value"] for e in container["env"] if e["name"] == name)


def test_every_pool_has_a_worker_deployment_a_scaled_object_and_a_budget() -> None:
    """Each provider of the ConfigMap's settings is served by a Deployment that KEDA scales and a
    PodDisruptionBudget guards, all three naming the same pool."""
    pools = set(settings().providers)
    deployments = worker_deployments()
    assert set(deployments) == pools
    scaled, budgets = of_kind("ScaledObject"), of_kind("PodDisruptionBudget")
    for pool, deployment in deployments.items():
        name = deployment["metadata"]["name"]
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in deployment["spec"], "the ScaledObject owns the replica count"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items() and labels["aiorouter/pool"] == pool
        assert budgets[name]["spec"] == {"maxUnavailable": 1, "selector": budgets[name]["spec"]["selector"]}


def test_scaled_objects_watch_their_pools_rq_keys_with_targets_from_its_concurrency() -> None:
    """The triggers read the pool's queue (a list) and rq's started registry (a sorted set) under the key
    names rq uses; the targets are a quarter and three quarters of the worker's slots; KEDA polls more
    often than a queued request gives up, so the first job of an idle pool wakes it."""
    config = settings()
    scaled = of_kind("ScaledObject")
    for pool, deployment in worker_deployments().items():
        spec = scaled[deployment["metadata"]["name"]]["spec"]
        slots = config.provider(pool).concurrency
        targets = {t["metadata"]["listName"]: t["metadata"] for t in spec["triggers"]}
        assert set(targets) == {keys.rq_queue_key(pool), StartedJobRegistry.key_template.format(pool)}
        queued, running = targets[keys.rq_queue_key(pool)], targets[f"rq:wip:{pool}"]
        assert int(queued["listLength"]) == slots // 4 and int(running["listLength"]) == slots * 3 // 4
        assert {t["type"] for t in spec["triggers"]} == {"redis"}
        for trigger in targets.values():
            assert trigger["activationListLength"] == "0"
            assert (trigger["addressFromEnv"], trigger["passwordFromEnv"]) == (
                "REDIS_ADDRESS",
                "REDIS_PASSWORD",
            )
        assert spec["pollingInterval"] < config.queue_timeout
        assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]


def test_worker_probes_run_the_health_command_on_the_name_the_worker_writes() -> None:
    """Startup and readiness check the worker's liveness key, liveness only that Redis does not call it
    gone; all read the name from the file the worker's --name-file writes; no --concurrency overrides
    the provider's setting the targets derive from."""
    for deployment in worker_deployments().values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert args[args.index("--name-file") + 1] == NAME_FILE and "--concurrency" not in args
        ready = ["aiorouter", "worker-health", "--name-file", NAME_FILE]
        assert container["startupProbe"]["exec"]["command"] == ready
        assert container["readinessProbe"]["exec"]["command"] == ready
        assert container["livenessProbe"]["exec"]["command"] == [*ready, "--probe", "live"]


def test_worker_pods_get_their_shutdown_grace_plus_15_seconds() -> None:
    """Each worker pod's terminationGracePeriodSeconds is its AIOROUTER_WORKER_SHUTDOWN_GRACE plus 15 s."""
    for deployment in worker_deployments().values():
        pod = deployment["spec"]["template"]["spec"]
        grace = float(_env(pod["containers"][0], "AIOROUTER_WORKER_SHUTDOWN_GRACE"))
        assert pod["terminationGracePeriodSeconds"] == grace + 15


@pytest.mark.parametrize("name", sorted(of_kind("Deployment")))
def test_pods_are_locked_down_and_bounded(name: str) -> None:
    """Non-root with a numeric user, RuntimeDefault seccomp, no service-account token, a read-only root
    with /tmp on a bounded emptyDir, no privilege escalation, every capability dropped, and CPU and
    memory requested and limited."""
    pod = of_kind("Deployment")[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "sizeLimit" in tmp["emptyDir"]
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}


def test_the_ingress_has_a_budget_and_http_probes() -> None:
    """The ingress is evicted one pod at a time and probed on /readyz (readiness) and /healthz (liveness)."""
    assert of_kind("PodDisruptionBudget")["aiorouter-ingress"]["spec"]["maxUnavailable"] == 1
    container = of_kind("Deployment")["aiorouter-ingress"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_ingress_pod_gets_its_shutdown_grace_plus_its_pre_stop_pause_plus_15_seconds() -> None:
    """The ingress pod's terminationGracePeriodSeconds is its AIOROUTER_INGRESS_SHUTDOWN_GRACE plus the
    preStop pause plus 15 s: open streams end with an error event before the SIGKILL could cut them."""
    pod = of_kind("Deployment")["aiorouter-ingress"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = float(_env(container, "AIOROUTER_INGRESS_SHUTDOWN_GRACE"))
    pause_command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause_command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] == grace + float(pause_command[1]) + 15
