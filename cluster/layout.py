"""Shard layout: the shard total, and its split into workers as consecutive ranges."""

from __future__ import annotations

import math

__all__ = ["round_up", "split", "split_range"]


def round_up(shards: int, max_concurrency: int) -> int:
    """``shards`` rounded up to a multiple of ``max_concurrency`` (large bots must use one)."""
    if shards < 1 or max_concurrency < 1:
        raise ValueError("shards and max_concurrency must be >= 1")
    return math.ceil(shards / max_concurrency) * max_concurrency


def split(total: int, *, shards_per_worker: int | None = None, workers: int | None = None) -> list[range]:
    """Split shards ``0..total-1`` into consecutive ranges, one per worker.

    Give ``shards_per_worker`` (the last worker may get fewer) or ``workers`` (sizes differ
    by at most one, larger ranges first); with neither, one worker runs everything.
    """
    if total < 1:
        raise ValueError("total must be >= 1")
    if shards_per_worker is not None and workers is not None:
        raise ValueError("give shards_per_worker or workers, not both")
    if shards_per_worker is not None:
        if shards_per_worker < 1:
            raise ValueError("shards_per_worker must be >= 1")
        return [range(s, min(s + shards_per_worker, total)) for s in range(0, total, shards_per_worker)]
    workers = 1 if workers is None else workers
    if workers < 1:
        raise ValueError("workers must be >= 1")
    workers = min(workers, total)
    size, extra = divmod(total, workers)
    out, start = [], 0
    for i in range(workers):
        n = size + (i < extra)
        out.append(range(start, start + n))
        start += n
    return out


def split_range(shards: range, *, shards_per_worker: int | None = None, workers: int | None = None) -> list[range]:
    """:func:`split` of the consecutive ``shards`` (one host's part of the cluster) instead of ``0..total-1``."""
    return [range(r.start + shards.start, r.stop + shards.start)
            for r in split(len(shards), shards_per_worker=shards_per_worker, workers=workers)]
