"""``.aiorouter/dev.json``: where a running ``aiorouter dev`` says which Redis it uses, for other commands.

``aiorouter dev`` writes the record (its Redis URL and its pid) in the directory it was started from and
removes it when it exits.  A command run in that directory or below finds it with :func:`live_dev_record`;
a record whose pid is gone (dev was killed with SIGKILL) is stale and ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import orjson

RECORD_PATH = Path(".aiorouter") / "dev.json"


@dataclass(frozen=True, slots=True)
class DevRecord:
    redis_url: str
    pid: int
    path: Path  # the record file it was read from

    @property
    def alive(self) -> bool:
        """Whether the ``aiorouter dev`` that wrote it still runs."""
        return pid_alive(self.pid)


@contextmanager
def dev_record(redis_url: str, workdir: Path) -> Iterator[Path | None]:
    """Record ``redis_url`` and this process' pid under ``workdir`` for the block; None if unwritable."""
    path = workdir / RECORD_PATH
    content = orjson.dumps({"redis_url": redis_url, "pid": os.getpid(), "started_at": time.time()})
    try:
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(content)
        partial.replace(path)  # readers never see half a record
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        record = read_dev_record(path)
        if record is not None and record.pid == os.getpid():  # another dev may have replaced it since
            with suppress(OSError):
                path.unlink()


def read_dev_record(path: Path) -> DevRecord | None:
    """The record in ``path``, or None if it is missing or unreadable."""
    try:
        data = orjson.loads(path.read_bytes())
        return DevRecord(redis_url=str(data["redis_url"]), pid=int(data["pid"]), path=path)
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def find_dev_record(workdir: Path) -> DevRecord | None:
    """The nearest record in ``workdir`` or one of its parents, live or stale; None if there is none."""
    for directory in (workdir, *workdir.parents):
        record = read_dev_record(directory / RECORD_PATH)
        if record is not None:
            return record
    return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
