"""Exit codes of every bspump-cluster process, in one table.

``bspump-cluster run`` exits with the code of the run; its coordinator, workers and
partition tasks use the same codes, so a code means one thing wherever it is read.

====  ==================================================================================
code  meaning
====  ==================================================================================
0     done: the input ended, every record is accounted for, every result is on disk
1     failed: an error stopped the run (the log names it)
2     broken config: nothing was started; the message names file, section and key
3     a worker died and could not be restarted (checkpoints off, or max_restarts used)
4     the ledger did not close, or a result file is not on disk as recorded
5     refused at start: another run holds the folders, the HTTP port is taken, or a
      folder cannot be written; nothing was deleted or truncated
128+N stopped by signal N (130: Ctrl-C, 143: SIGTERM)
====  ==================================================================================
"""

from __future__ import annotations

import signal
import sys
from typing import IO

from cluster.errors import ClusterError, ConfigError, StartRefused

OK = 0
FAILED = 1
CONFIG = 2
WORKER_DIED = 3
LEDGER = 4
REFUSED = 5
STOPPED = 128 + signal.SIGTERM

MEANING = {
    OK: "finished",
    FAILED: "failed",
    CONFIG: "broken config",
    WORKER_DIED: "a worker died",
    LEDGER: "the ledger did not close or results are missing",
    REFUSED: "refused at start",
}


def outcome(code: int) -> str:
    """What an exit code of a run means, in a few words."""
    if code in MEANING:
        return MEANING[code]
    if code > 128:
        return f"stopped by signal {code - 128}"
    return "failed"


def describe_exit(code: int) -> str:
    """How a child process ended: ``exit code 3`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def report_error(error: ClusterError, stream: IO[str] | None = None) -> int:
    """Print a refusal the way every process prints it; its exit code.

    A broken config exits 2, a refused start 5, any other cluster error 1.
    """
    out = stream if stream is not None else sys.stderr
    if isinstance(error, ConfigError):
        print(f"bspump-cluster: config error: {error}", file=out)
        return CONFIG
    if isinstance(error, StartRefused):
        print(f"bspump-cluster: not started: {error}", file=out)
        return REFUSED
    print(f"bspump-cluster: {error}", file=out)
    return FAILED
