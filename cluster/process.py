"""How a process of the cluster ties itself to the process that started it.

The supervisor starts the coordinator and the workers, a host's member starts its
partition tasks: each child asks Linux to kill it when its parent dies, so no
process is left orphaned when a supervisor or a member is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op where unsupported).

    The request holds across exec and belongs to the thread that started the child,
    so the parent must start its children from the thread that outlives them.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def child_setup() -> None:
    """``preexec_fn`` of every child: die with the parent, unblock the signals.

    The parent blocks SIGINT/SIGTERM while it starts children so none is left
    half-started; the child inherits that mask and clears it here, before exec.
    """
    die_with_parent()
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
