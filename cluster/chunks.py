"""What intake makes of a source batch: per-worker chunks, and the records it refused.

A batch's accepted rows are cut into :class:`Chunk` s where the watermark crosses a
tick boundary; a chunk's data goes to the workers first, then its watermark, so a
worker never sees a watermark that overtakes data it has not received.
:func:`cut` does the ordering by worker and the cutting, for every intake path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# take(rows, times): one worker's payload for those rows (a list of records, raw lines,
# or an EventBatch whose times are ``times``).
Take = Callable[[np.ndarray, np.ndarray], Any]


@dataclass
class Chunk:
    """Per-worker data, then (optionally) a watermark to send to every worker."""

    times: list[list[float]]
    events: list[list[Any]]
    watermark: float | None = None


def empty_chunk(workers: int) -> Chunk:
    """A chunk with no data for any of ``workers`` and no watermark."""
    return Chunk([[] for _ in range(workers)], [[] for _ in range(workers)])


@dataclass
class Rejected:
    """A record that does not enter the pipeline: a dead letter or a late event."""

    record: Any
    reason: str
    event_time: float | None = None


@dataclass
class IntakeResult:
    """What one source batch turned into."""

    chunks: list[Chunk] = field(default_factory=list)
    dead: list[Rejected] = field(default_factory=list)
    late: list[Rejected] = field(default_factory=list)
    accepted: int = 0
    # Change in the number of held records (see cluster.jumps): a batch's records are
    # accepted + dead + late + held; a release or a refusal moves held ones on.
    held: int = 0


def cut(n_workers: int, times: np.ndarray, workers: np.ndarray, take: Take,
        keep: np.ndarray, cuts: list[int], marks: list[float], result: IntakeResult,
        as_lists: bool) -> None:
    """Append to ``result`` the chunks of rows ``keep`` split at ``cuts`` (watermark ``marks``).

    ``times`` and ``workers`` are per row of the batch; ``cuts`` are positions in
    ``keep`` where a chunk starts, and ``marks[k]`` is the watermark sent after chunk
    ``k`` (the last chunk has none when there are as many marks as cuts). Rows are
    ordered by worker once (stable, so each worker's rows stay in input order) and
    taken once; every chunk is then a slice of a worker's block. Times go as lists with
    per-record payloads (``as_lists``), as arrays inside EventBatches.
    """
    owner = workers[keep]
    order = np.argsort(owner, kind="stable")
    ordered = keep[order]
    payload = take(ordered, times[ordered])
    ordered_times = times[ordered]
    ends = np.cumsum(np.bincount(owner, minlength=n_workers))
    starts = ends - np.bincount(owner, minlength=n_workers)
    bounds = np.array([0, *cuts, len(keep)])
    # Where each chunk bound falls inside each worker's block (positions in keep).
    edges = [int(starts[w]) + np.searchsorted(order[starts[w]:ends[w]], bounds)
             for w in range(n_workers)]
    for k in range(len(bounds) - 1):
        chunk = empty_chunk(n_workers)
        for w in range(n_workers):
            s, e = int(edges[w][k]), int(edges[w][k + 1])
            if e > s:
                t = ordered_times[s:e]
                chunk.times[w] = t.tolist() if as_lists else t
                chunk.events[w] = payload[s:e]
        if k < len(marks):
            chunk.watermark = marks[k]
        result.chunks.append(chunk)
    result.accepted += len(keep)
