"""A worker's slots within its process' open-file limit: each running job may hold an upstream
connection, and a worker that runs out of descriptors fails calls instead of queueing them."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

FILES_BESIDES_JOBS = 64  # descriptors a worker needs besides its jobs' upstream connections


def slots_within_open_files(concurrency: int) -> int:
    """``concurrency``, lowered to what the open-file limit leaves once its soft limit is raised as far as
    the hard limit allows (where the platform has such limits)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return concurrency
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = concurrency + FILES_BESIDES_JOBS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return concurrency
    slots = max(1, soft - FILES_BESIDES_JOBS)
    log.warning(
        "concurrency %d does not fit the open-file limit (%d): running at most %d jobs",
        concurrency,
        soft,
        slots,
    )
    return slots
