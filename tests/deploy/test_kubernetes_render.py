"""deploy/kubernetes renders with kustomize (`kubectl kustomize`, offline), lists every manifest in its
directory, and every rendered object validates: Kubernetes kinds against the API schemas
kubernetes-validate ships, strictly (no unknown field), KEDA's ScaledObjects against our schema of
KEDA's documented ScaledObject and redis-trigger fields (tests/deploy/schemas/scaledobject.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, command, module, run

KUBERNETES = REPO / "deploy" / "kubernetes"
SCALED_OBJECT_SCHEMA = Path(__file__).parent / "schemas" / "scaledobject.yaml"
OLDEST_KUBERNETES = "1.29.0"  # the oldest release the manifests are checked against, besides the latest
NOT_RESOURCES = {"kustomization.yaml", "secret.example.yaml"}  # the Secret is created out of band


def render(directory: Path = KUBERNETES) -> list[dict[str, Any]]:
    result = run(command("kubectl"), "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it declares properties (the API server prunes
    them, `kubectl --validate=strict` refuses them): a misspelt field must not pass silently."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


def scaled_object_errors(document: dict[str, Any]) -> list[str]:
    jsonschema = module("jsonschema")
    schema = strict(yaml.safe_load(SCALED_OBJECT_SCHEMA.read_text()))
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def kubernetes_errors(document: dict[str, Any], version: str) -> list[str]:
    validate = module("kubernetes_validate")
    try:
        validate.validate(document, version, strict=True)
    except validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def test_kustomization_lists_every_manifest_of_its_directory() -> None:
    """Every YAML file next to kustomization.yaml is one of its resources (or the example Secret), so a
    pool's file copied in and not listed fails here instead of never being applied."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - NOT_RESOURCES
    assert set(kustomization["resources"]) == on_disk


def test_the_kustomization_renders_every_object_in_the_namespace() -> None:
    """kubectl kustomize renders the namespace, the ConfigMap from aiorouter.toml, the ingress' four
    objects and three per pool, all in the aiorouter namespace with the part-of label."""
    documents = render()
    kinds = sorted(d["kind"] for d in documents)
    assert kinds.count("ScaledObject") == kinds.count("Deployment") - 1 >= 1
    assert {"Namespace", "ConfigMap", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(
        kinds
    )
    for document in documents:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "aiorouter", document["metadata"]["name"]
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aiorouter"


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_every_kubernetes_object_validates_strictly(version: str) -> None:
    """Each rendered object of a Kubernetes kind passes its API schema with unknown fields refused."""
    validate = module("kubernetes_validate")
    version = validate.latest_version() if version == "latest" else version
    errors = {
        f"{d['kind']}/{d['metadata']['name']}": kubernetes_errors(d, version)
        for d in render()
        if d["kind"] != "ScaledObject"
    }
    assert {name: e for name, e in errors.items() if e} == {}


def test_every_scaled_object_validates_against_kedas_documented_fields() -> None:
    """Each rendered ScaledObject is keda.sh/v1alpha1 and passes the ScaledObject schema strictly."""
    scaled = [d for d in render() if d["kind"] == "ScaledObject"]
    assert scaled
    for document in scaled:
        assert document["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled_object_errors(document) == [], document["metadata"]["name"]


def test_the_validators_refuse_a_broken_object() -> None:
    """The checks can fail: a misspelt ScaledObject field, a trigger value that is not a string, and a
    Deployment field of the wrong type are each reported."""
    documents = render()
    scaled = copy.deepcopy(next(d for d in documents if d["kind"] == "ScaledObject"))
    scaled["spec"]["pollingIntervall"] = 5
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 64
    scaled["spec"]["triggers"][1]["metadata"]["listname"] = "rq:queue:x"  # KEDA has no such option
    errors = scaled_object_errors(scaled)
    assert any("pollingIntervall" in e for e in errors) and any("listLength" in e for e in errors)
    assert any("listname" in e for e in errors)
    deployment = copy.deepcopy(next(d for d in documents if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "two minutes"
    assert kubernetes_errors(deployment, OLDEST_KUBERNETES)


def test_an_unlisted_resource_fails_to_render(tmp_path: Path) -> None:
    """kustomize itself refuses a kustomization naming a file that is not there (no silent skip)."""
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    result = run(command("kubectl"), "kustomize", str(tmp_path))
    assert result.returncode != 0 and "missing.yaml" in result.stderr
