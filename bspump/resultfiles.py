"""Result files a pipeline writes: JSON for a line, opened and cut back safely.

Result files hold user ids: they are created owner-only (``[cluster] file_mode``,
default 0600), and never opened through a symbolic link, which could point a write
or a truncation at any file the user may write. The file sink writes through these
functions, and so does the runtime's :mod:`cluster.outputs`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from bspump.config import Config
from bspump.errors import OutputError

FILE_MODE = 0o600


def json_default(obj: Any) -> Any:
    """What JSON holds for a value it has no type for: text, a number, a list."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=json_default)


def dumps(obj: Any) -> str:
    """JSON for a result line; anything JSON cannot hold becomes its closest text."""
    try:
        return _encoder.encode(obj).decode()
    except (TypeError, ValueError, OverflowError):
        # Keys JSON cannot have, huge integers...: the standard library is more lenient.
        return json.dumps(obj, default=json_default, ensure_ascii=False)


def _open_result(path: Path, flags: int, mode: int) -> int:
    """Open a result file without following a link or blocking on a FIFO; a descriptor.

    Anything but a regular file (a link, FIFO, device, folder) is refused with an
    OutputError naming the path.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{path}: is a symbolic link; result files are not written "
                              "through links (remove it or choose another output_dir)") from None
        if e.errno in (errno.ENXIO, errno.EISDIR):
            raise OutputError(f"{path}: not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{path}: not a regular file")
    return fd


def open_append(path: Path, mode: int = FILE_MODE) -> IO[str]:
    """Open a result file for appending: created with ``mode``, never through a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_result(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.fchmod(fd, mode)  # a file from an earlier run may have looser bits
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
    except BaseException:
        os.close(fd)
        raise


def truncate_result(path: Path, length: int) -> None:
    """Cut a result file to at most ``length`` bytes, never through a link."""
    fd = _open_result(path, os.O_WRONLY, FILE_MODE)
    try:
        os.ftruncate(fd, min(length, os.fstat(fd).st_size))
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_file_mode(cfg: Config) -> int:
    """``[cluster] file_mode``: octal permission bits of the files a run writes."""
    raw = cfg.get("cluster", "file_mode")
    if raw is None:
        return 0o600
    try:
        mode = int(raw, 8)
    except ValueError:
        raise cfg.error("cluster", "file_mode", f"expected octal permissions such as 0600, "
                        f"got {raw!r}") from None
    if not 0 <= mode <= 0o777 or not mode & 0o600 == 0o600:
        raise cfg.error("cluster", "file_mode", f"expected 0600..0777 with the owner's read "
                        f"and write bits, got {raw!r}")
    return mode


def load_npy(path: Path) -> np.ndarray:
    """Load an ``.npy`` file without ever unpickling."""
    result: np.ndarray = np.load(path, allow_pickle=False)
    return result
