"""``bspump-cluster``: run a config on every core, print its shard layout."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cluster import checkpoint, supervisor
from cluster.config import ClusterSettings, Config, load_cluster_settings
from cluster.errors import ClusterError, ConfigError
from cluster.layout import Layout


def _settings(args: argparse.Namespace) -> ClusterSettings:
    cfg = Config.load(args.config)
    return load_cluster_settings(cfg, Path(args.config), workers=getattr(args, "workers", None),
                                 output_dir=getattr(args, "output_dir", None))


def cmd_run(args: argparse.Namespace) -> int:
    """Start the coordinator and the workers; wait for the end of the input."""
    settings = _settings(args)
    return supervisor.run(settings, in_process=args.in_process, fresh=args.fresh)


def cmd_layout(args: argparse.Namespace) -> int:
    """Print which key groups each worker owns (and, with --key, where keys go)."""
    settings = _settings(args)
    layout = Layout(settings.workers, settings.key_groups)
    print(f"pipeline {settings.pipeline_id} ({settings.pipeline}), "
          f"shard key {settings.routing.shard_key.describe()}")
    print(layout.describe())
    for key in args.key or ():
        print(f"key {key!r}: key group {layout.key_group(key)}, worker {layout.worker_of(key)}")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List checkpoints: id, time, workers, key groups, size, position; verify one."""
    settings = _settings(args)
    if settings.checkpoint_dir is None:
        print("checkpoints are off in this config (checkpoint_dir = none)")
        return 0
    found = checkpoint.scan(settings.checkpoint_dir)
    if args.verify is not None:
        match = [c for c in found if c.id == args.verify]
        if not match:
            print(f"no checkpoint {args.verify} in {settings.checkpoint_dir}", file=sys.stderr)
            return 1
        cp = checkpoint.verify(match[0])
        for line in checkpoint.describe(cp):
            print(line)
        return 0 if cp.complete else 1
    print(f"{len(found)} checkpoints in {settings.checkpoint_dir}")
    for cp in found:
        checkpoint.verify(cp, checksums=False)
        for line in checkpoint.describe(cp):
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    ap = argparse.ArgumentParser(prog="bspump-cluster", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config on a coordinator and N workers")
    run.add_argument("config", help="the cluster config (INI)")
    run.add_argument("--workers", "-w", type=int, help="worker processes (default: config, "
                                                      "else the number of cores)")
    run.add_argument("--output-dir", "-o", help="where results go (default: config, else ./out)")
    run.add_argument("--in-process", action="store_true",
                     help="run coordinator and one shard in one process (debugging)")
    run.add_argument("--fresh", action="store_true",
                     help="ignore and delete existing checkpoints; start from the beginning")
    run.set_defaults(func=cmd_run)
    cps = sub.add_parser("checkpoints", help="list (and verify) the checkpoints of a config")
    cps.add_argument("config")
    cps.add_argument("--output-dir", "-o", help="the run's output folder (default: config)")
    cps.add_argument("--verify", type=int, metavar="ID",
                     help="check every file of checkpoint ID against its manifest")
    cps.set_defaults(func=cmd_checkpoints)
    lay = sub.add_parser("layout", help="print the shard layout of a config")
    lay.add_argument("config")
    lay.add_argument("--workers", "-w", type=int)
    lay.add_argument("--key", action="append", help="show where this key goes (repeatable)")
    lay.set_defaults(func=cmd_layout)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bspump-cluster`` command."""
    logging.basicConfig(level=logging.INFO, format="bspump-cluster: %(message)s",
                        stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as e:
        print(f"bspump-cluster: config error: {e}", file=sys.stderr)
        return supervisor.EXIT_CONFIG
    except ClusterError as e:
        print(f"bspump-cluster: {e}", file=sys.stderr)
        return supervisor.EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
