"""A process' open-file limit, raised toward what it needs: the ingress sizes its client connections by
it, a worker its jobs (each may hold an upstream connection)."""

from __future__ import annotations


def raised_open_file_limit(wanted: int) -> int | None:
    """The soft open-file limit after raising it toward ``wanted`` as far as the hard limit allows; None
    when there is no limit (or the platform has no such limits)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else soft
