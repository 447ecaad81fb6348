"""Messages between the coordinator and workers: msgpack lists tagged by kind.

Down (coordinator to one worker, one ordered channel per worker, so control is
ordered with data):

- ``[DATA, times, events]``: a batch of events and their event times
- ``[DATA_RAW, times, lines]``: the same, each event an undecoded JSON object (bytes)
- ``[DATA_COLS, times bytes, columns]``: the same as numpy columns (``EventBatch.to_wire``)
- ``[WATERMARK, seq, watermark]``: event time has reached ``watermark``; ack it
- ``[END, seq, last_time, folder]``: end of input; close everything, report, exit
  (a partition task passes a checkpoint folder for the final state, else None)
- ``[STOP]``: stop now without a final report
- ``[BARRIER, checkpoint id, folder]``: write the shard's state into ``folder``, ack it
- ``[RESTORE, folder, old workers]``: load this shard's part of a checkpoint (first message)

Up (every worker to the coordinator, one shared channel):

- ``[HELLO, worker, pid, segments]``: booted; ``segments`` lists shared arrays
- ``[ACK, worker, seq, watermark, report]``: done with everything before ``seq``
- ``[DONE, worker, seq, report, files]``: end of input processed (files: the final
  state's checkpoint files, or None)
- ``[OUTPUT, worker, text]``: whole lines the worker's analyzers printed
- ``[FAILED, worker, message]``: the worker cannot go on
- ``[CHECKPOINTED, worker, checkpoint id, files, report]``: state written; files' sizes, crc32
- ``[RESTORED, worker, report]``: checkpoint loaded
- ``[HEARTBEAT, worker, events]``: alive (sent after a second without another message);
  a worker silent for ``worker_timeout`` is taken for stopped or wedged

A ``report`` maps ``"analyzers"`` to each analyzer's news; a TimeWindowAnalyzer's is
``{"keys": [...], "closed": [[period, slot], ...]}`` with, when they happened,
``"rows": [[row, key], ...]`` (rows given to new keys, in order) and ``"segment":
[name, shape, dtype]`` (the ring moved to a bigger segment; the coordinator maps it
and removes the previous name). The coordinator applies a report before it merges.

Nothing is pickled: a crafted message cannot run code.
"""

from __future__ import annotations

from typing import Any

import msgpack

DATA = 1
WATERMARK = 2
END = 3
STOP = 4
BARRIER = 5
RESTORE = 6
DATA_RAW = 7
DATA_COLS = 8

HELLO = 10
ACK = 11
DONE = 12
OUTPUT = 13
FAILED = 14
CHECKPOINTED = 15
RESTORED = 16
HEARTBEAT = 17


def _default(obj: Any) -> Any:
    # numpy scalars and sets show up in user events; anything else becomes its string.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def pack(message: list[Any]) -> bytes:
    """Encode one message."""
    return msgpack.packb(message, use_bin_type=True, default=_default)


def unpack(data: bytes | memoryview) -> list[Any]:
    """Decode one message."""
    result: list[Any] = msgpack.unpackb(data, raw=False, strict_map_key=False,
                                        use_list=True)
    return result
