"""How many jobs a worker's dequeue loop moves in one round trip, after the ``BLMOVE`` that waited for one.

The batch grows while the queue keeps up with it and follows the queue back down when it runs short:
under load a round trip takes several jobs, not one, and a burst after a lull spreads over the pool's
workers instead of landing on whichever dequeues first.
"""

from __future__ import annotations


def next_batch(batch: int, *, wanted: int, moved: int, short: bool, prefetch: int) -> int:
    """The dequeue loop's next batch of moves after one that ``wanted`` jobs and ``moved`` that many:
    twice as many (up to ``prefetch``) while the queue keeps up with the batch, else what it held (at
    least one), so that the batch follows the queue back down when it runs short."""
    if moved == wanted and not short:
        return min(prefetch, batch * 2)
    return max(1, moved)
