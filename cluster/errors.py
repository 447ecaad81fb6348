"""The exception tree of bspump-cluster."""


class ClusterError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(ClusterError):
    """The configuration is broken; the message names the file, section and key."""


class LayoutError(ClusterError):
    """The shard layout cannot be built from the given workers and key groups."""


class RecordError(ClusterError):
    """One input record cannot be processed; it goes to the dead letters."""


class SharedMemoryError(ClusterError):
    """A shared-memory segment cannot be created or attached."""


class CheckpointError(ClusterError):
    """A checkpoint is incomplete, corrupt or cannot be written."""


class WorkerDied(ClusterError):
    """A worker process ended without being asked to."""


class StartRefused(ClusterError):
    """The run cannot start without harming another run or earlier results; nothing was touched."""


class OutputError(ClusterError):
    """A result file cannot be written safely (a link, FIFO or device at its path)."""


class ContractError(ClusterError):
    """A message, manifest or figures file does not have its contract's shape or version;
    the message names the field."""
