"""How a process of the cluster is started by its parent, and tied to it.

The supervisor starts the coordinator and the workers, a host's member starts its
partition tasks: each child asks Linux to kill it when its parent dies, so no
process is left orphaned when a supervisor or a member is killed with SIGKILL.
Every child of a run is told the same facts of the run on its command line
(:func:`child_arguments`), which it reads back with :func:`add_child_arguments` and
:func:`child_settings`.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
from pathlib import Path

from cluster.config import ClusterSettings, Config, load_cluster_settings

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


def child_arguments(settings: ClusterSettings, run_id: str, run_dir: Path,
                    workers: int) -> list[str]:
    """The arguments every child process of a run is given (coordinator and workers)."""
    args = ["--config", str(settings.config_path), "--run-id", run_id,
            "--run-dir", str(run_dir), "--output-dir", str(settings.output_dir),
            "--workers", str(workers)]
    if settings.partition is not None:
        args += ["--partition", settings.partition]
    return args


def add_child_arguments(parser: argparse.ArgumentParser) -> None:
    """Let ``parser`` read what :func:`child_arguments` writes."""
    parser.add_argument("--config", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--partition")


def child_settings(args: argparse.Namespace) -> ClusterSettings:
    """The run's settings in a child, from the arguments :func:`child_arguments` wrote."""
    cfg = Config.load(args.config)
    return load_cluster_settings(cfg, Path(args.config), workers=args.workers,
                                 output_dir=args.output_dir, partition=args.partition)
