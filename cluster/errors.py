"""The exception tree of bspump-cluster: bspump's errors and the runtime's own.

The errors a user's pipeline meets (:class:`ConfigError`, :class:`RecordError`,
:class:`CheckpointError`, :class:`OutputError`) are defined in :mod:`bspump.errors`;
they are the same classes here. :class:`ClusterError` is their root, so
``except ClusterError`` catches every error raised on purpose, from either package.
"""

from bspump.errors import BSPumpError, CheckpointError, ConfigError, OutputError, RecordError

ClusterError = BSPumpError

__all__ = [
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "ContractError",
    "LayoutError",
    "OutputError",
    "RecordError",
    "SharedMemoryError",
    "StartRefused",
    "WorkerDied",
]


class LayoutError(ClusterError):
    """The shard layout cannot be built from the given workers and key groups."""


class SharedMemoryError(ClusterError):
    """A shared-memory segment cannot be created or attached."""


class WorkerDied(ClusterError):
    """A worker process ended without being asked to."""


class StartRefused(ClusterError):
    """The run cannot start without harming another run or earlier results; nothing was touched."""


class ContractError(ClusterError):
    """A message, manifest or figures file does not have its contract's shape or version;
    the message names the field."""
