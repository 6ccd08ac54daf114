"""rq's registry maintenance for a worker, in a thread: it is sync and may be slow, the loop must not wait.

rq's clean-up of a queue's registries is what fails the jobs of a worker that died.  rq takes a queue's
maintenance lock (``rq:clean_registries:<queue>``, 899 s) before cleaning it and deletes it after: a run
that fails midway (Redis frozen, restarting) leaves it, and no worker would clean that queue for 15
minutes.  After a failed run the worker deletes its queues' locks before the next one (another worker's
clean-up may then overlap it: rq's clean-ups are safe to repeat).
"""

from __future__ import annotations

import threading

from rq.worker.base import BaseWorker

STOP_WAIT = 5.0  # seconds stop() waits for a run in progress to end


class RegistryMaintenance:
    def __init__(self, worker: BaseWorker, every: float) -> None:
        self._worker = worker
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rq-maintenance-{worker.name}", daemon=True)

    def start(self) -> None:
        """Clean the worker's queues now, then every ``every`` seconds."""
        self._thread.start()

    def stop(self) -> None:
        """End the runs; blocks up to ``STOP_WAIT`` for the one in progress (call it off the loop)."""
        self._stop.set()
        self._thread.join(STOP_WAIT)

    def _run(self) -> None:
        worker = self._worker
        failed = False
        while not self._stop.is_set():
            try:
                if failed:
                    for queue in worker.queues:
                        queue.release_maintenance_lock()  # type: ignore[no-untyped-call]  # rq's is untyped
                worker.clean_registries()  # type: ignore[no-untyped-call]
                failed = False
            except Exception:  # keep maintaining: a bad job record must not stop the clean-up for good
                failed = True
                worker.log.warning("Worker %s: registry maintenance failed", worker.name, exc_info=True)
            self._stop.wait(self._every)
