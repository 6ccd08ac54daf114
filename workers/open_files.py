"""A worker's slots within its process' open-file limit: each running job may hold an upstream
connection, and a worker that runs out of descriptors fails calls instead of queueing them."""

from __future__ import annotations

import logging

from shared.open_files import raised_open_file_limit

log = logging.getLogger(__name__)

FILES_BESIDES_JOBS = 64  # descriptors a worker needs besides its jobs' upstream connections


def slots_within_open_files(concurrency: int) -> int:
    """``concurrency``, lowered to what the open-file limit leaves once its soft limit is raised as far as
    the hard limit allows (where the platform has such limits)."""
    wanted = concurrency + FILES_BESIDES_JOBS
    soft = raised_open_file_limit(wanted)
    if soft is None or soft >= wanted:
        return concurrency
    slots = max(1, soft - FILES_BESIDES_JOBS)
    log.warning(
        "concurrency %d does not fit the open-file limit (%d): running at most %d jobs",
        concurrency,
        soft,
        slots,
    )
    return slots
