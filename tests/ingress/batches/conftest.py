"""Fixtures of the Files and Batches API tests: the in-process ingress with a private file directory,
and a second account's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ingress.control import accounts
from tests.ingress.conftest import Ingress, IngressFactory


@pytest.fixture
async def files_ingress(ingress_factory: IngressFactory, tmp_path: Path) -> AsyncIterator[Ingress]:
    """The app with its files in a temporary directory and small Batch API bounds."""
    batches = {"storage_dir": str(tmp_path / "files"), "max_file_bytes": 4096, "max_files_per_account": 5}
    async with ingress_factory(batches=batches) as running:
        yield running


@pytest.fixture
async def other_key(files_ingress: Ingress) -> str:
    """An API key of a second account."""
    await accounts.create_account(files_ingress.redis, files_ingress.settings, account_id="acct-other")
    secret, _ = await accounts.create_key_for_account(
        files_ingress.redis, files_ingress.settings, "acct-other"
    )
    return secret
