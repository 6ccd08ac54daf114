"""deploy/requirements.lock, which the Dockerfile installs, pins every dependency pyproject.toml declares,
within the declared range, and the image installs the code with --no-deps on top of it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "requirements.lock"


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    """Each of pyproject.toml's runtime dependencies has one exact pin that its specifier admits."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in {LOCK.name}: re-run pip-compile"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} in {LOCK.name} is outside {requirement.specifier}: re-run pip-compile"
        )


def test_dockerfile_installs_the_lock_then_the_code_without_resolving_again() -> None:
    """The image installs requirements.lock, then the package with --no-deps, and copies every package."""
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "pip install --requirement requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    for package in ("cli", "shared", "ingress", "workers"):
        assert f"COPY {package} ./{package}" in dockerfile
