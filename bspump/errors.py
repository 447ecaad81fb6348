"""The errors a user's pipeline meets, and the root of the project's one exception tree.

The runtime (:mod:`cluster.errors`) adds its own errors under the same root, so a
caller catches both with one ``except``.
"""


class BSPumpError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(BSPumpError):
    """The configuration is broken; the message names the file, section and key."""


class RecordError(BSPumpError):
    """One input record cannot be processed; it goes to the dead letters."""


class CheckpointError(BSPumpError):
    """A checkpoint is incomplete, corrupt or cannot be written."""


class OutputError(BSPumpError):
    """A result file cannot be written safely (a link, FIFO or device at its path)."""
