"""Python's cyclic garbage collector, set for a long-running server process.

The server processes free nearly everything they allocate by reference counting; the collector finds
next to nothing.  With Python's default thresholds it still ran all the time: measured at 2,000
concurrent streams, a worker's collections took about a sixth of its CPU (a young collection every 700
net allocations of container objects, each traversing far more than those) and its full collections
stalled the event loop for ~90 ms each, twice a second.  So each server process freezes what start-up
created (modules, classes, settings: ``gc.freeze`` leaves them out of every later collection) and
collects its youngest generation every ``gc_young_threshold`` net allocations; the older generations keep
Python's ratios to it, so they run as much less often.
"""

from __future__ import annotations

import gc


def tune_collector(young_threshold: int) -> None:
    """Freeze the objects alive now out of later collections and collect the youngest generation every
    ``young_threshold`` net container allocations; 0 leaves Python's collector as it is."""
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)
