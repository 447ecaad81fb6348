"""The on-disk checkpoint format.

A checkpoint is a folder ``cp-<id>`` in the checkpoint directory::

    cp-00000042/
        w0.state.msgpack        worker 0: sessions by key group, analyzer states, metadata
        w0.<name>.npy           worker 0: one numpy array per matrix / window ring
        w1.state.msgpack ...
        MANIFEST.json           written last: source position, counters, every file's
                                size and crc32

Every file goes to a temporary name, is fsynced and renamed; the manifest is written
by the coordinator only when every worker has acknowledged its files, so a folder
without a manifest, or whose files do not match it, is incomplete and is skipped.
A manifest is untrusted data (see :func:`verify`): one naming a file outside its
folder, a link, a FIFO, or lacking what a restore reads is skipped the same way.
Nothing is pickled: arrays are ``.npy`` (read with ``allow_pickle=False``), the rest
msgpack and JSON.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from cluster.errors import CheckpointError
from cluster.outputs import atomic_write_bytes, fsync_dir

log = logging.getLogger("bspump-cluster.checkpoint")

FORMAT = 1
MANIFEST = "MANIFEST.json"
_PREFIX = "cp-"


def folder_name(cp_id: int) -> str:
    """``cp-00000042``."""
    return f"{_PREFIX}{cp_id:08d}"


def _write(path: Path, data: bytes) -> dict[str, int]:
    # The folder is fsynced once, by ShardWriter.close, after every rename of the shard.
    atomic_write_bytes(path, data, sync_dir=False)
    return {"size": len(data), "crc32": zlib.crc32(data)}


def _read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path``; CheckpointError for anything else.

    A symbolic link is not followed (it may point anywhere), and a FIFO or device is
    opened without blocking and refused: reading one would hang the run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: not a regular file (a symbolic link)") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        return f.read()


@dataclass
class ShardWriter:
    """Writes one worker's files into a checkpoint folder."""

    folder: Path
    worker: int
    files: dict[str, dict[str, int]] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)

    def put_array(self, name: str, array: np.ndarray) -> None:
        """Store an array as ``w<k>.<name>.npy``."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        fname = f"w{self.worker}.{name}.npy"
        self.files[fname] = _write(self.folder / fname, buf.getvalue())

    def put_object(self, name: str, obj: Any) -> None:
        """Store a msgpack-serialisable object (written by :meth:`close`)."""
        self.objects[name] = obj

    def close(self) -> dict[str, dict[str, int]]:
        """Write the objects file, fsync the folder; return every file's size and crc32."""
        fname = f"w{self.worker}.state.msgpack"
        data = msgpack.packb(self.objects, use_bin_type=True)
        self.files[fname] = _write(self.folder / fname, data)
        fsync_dir(self.folder)
        return self.files


COORDINATOR_STATE = "coordinator.state.msgpack"


def write_coordinator_state(folder: Path, state: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The coordinator's own state (e.g. anomaly history) into a checkpoint folder.

    Returns the file's entry for the manifest's ``files``.
    """
    meta = _write(folder / COORDINATOR_STATE, msgpack.packb(state, use_bin_type=True))
    fsync_dir(folder)
    return {COORDINATOR_STATE: meta}


def read_coordinator_state(folder: Path) -> dict[str, Any]:
    """What :func:`write_coordinator_state` wrote (empty when the checkpoint has none)."""
    path = folder / COORDINATOR_STATE
    try:
        state = msgpack.unpackb(_read_regular(path), raw=False, strict_map_key=False)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, msgpack.UnpackException) as e:
        raise CheckpointError(f"{path}: unreadable: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a map")
    return state


class ShardReader:
    """Reads the files one old worker wrote into a (verified) checkpoint."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.folder = folder
        self.worker = worker
        path = folder / f"w{worker}.state.msgpack"
        try:
            self.objects: dict[str, Any] = msgpack.unpackb(
                _read_regular(path), raw=False, strict_map_key=False)
        except (OSError, ValueError, msgpack.UnpackException) as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None

    def get_object(self, name: str) -> Any:
        """An object stored with ``put_object``, or None."""
        return self.objects.get(name)

    def get_array(self, name: str) -> np.ndarray | None:
        """An array stored with ``put_array``, or None."""
        path = self.folder / f"w{self.worker}.{name}.npy"
        try:
            data = _read_regular(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None
        try:
            result: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None
        return result


@dataclass
class Checkpoint:
    """A checkpoint folder and, when it is complete, its manifest."""

    id: int
    path: Path
    manifest: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        """Manifest present and every file matches it."""
        return self.manifest is not None and self.problem is None

    def size(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last: from now on the checkpoint counts as complete."""
    atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=1).encode())


# What a restore reads from a manifest, beyond the files: checked before it is used.
_INTAKE = ("watermark", "max_time", "next_boundary")
_COUNTERS = ("records_read", "dead", "late", "sessions_ended", "window_rows",
             "events_processed")
_MAX_WORKERS = 1 << 20  # as many as there can be key groups


def _is_int(x: Any, minimum: int = 0, maximum: int | None = None) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool) and x >= minimum
            and (maximum is None or x <= maximum))


def _is_plain_name(name: Any) -> bool:
    """A file name directly inside a folder: no separator, not ``.``/``..``, not absolute."""
    return (isinstance(name, str) and name not in ("", ".", "..")
            and "/" not in name and "\\" not in name and "\0" not in name)


def _structure_problem(m: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a manifest (decoded JSON), or None."""
    files = m.get("files")
    if not isinstance(files, dict):
        return "manifest: files is missing" if files is None else \
            "manifest: files is not an object"
    for name, meta in files.items():
        if not _is_plain_name(name):
            return f"manifest names {name!r}, not a file of the checkpoint folder"
        if not (isinstance(meta, dict) and _is_int(meta.get("size"))
                and _is_int(meta.get("crc32"), 0, 0xFFFFFFFF)):
            return f"manifest: files[{name!r}] is not {{size, crc32}}"
    if not _is_int(m.get("workers"), 1, _MAX_WORKERS):
        return "manifest: workers is not a positive integer"
    for w in range(m["workers"]):
        if f"w{w}.state.msgpack" not in files:
            return f"manifest: w{w}.state.msgpack of worker {w} is not listed"
    if not _is_int(m.get("key_groups"), 1, _MAX_WORKERS):
        return "manifest: key_groups is not a positive integer"
    if not isinstance(m.get("pipeline"), str):
        return "manifest: pipeline is not a text"
    for part, keys, check, kind in (("intake", _INTAKE, _is_number, "a number"),
                                    ("counters", _COUNTERS, _is_int, "an integer")):
        section = m.get(part)
        if not isinstance(section, dict):
            return f"manifest: {part} is missing" if section is None else \
                f"manifest: {part} is not an object"
        for key in keys:
            if not check(section.get(key)):
                return f"manifest: {part}.{key} is not {kind}"
    outputs = m.get("outputs")
    if not isinstance(outputs, dict):
        return "manifest: outputs is missing" if outputs is None else \
            "manifest: outputs is not an object"
    for name, length in outputs.items():
        if not _is_plain_name(name):
            return f"manifest: outputs names {name!r}, not a result file"
        if not _is_int(length):
            return f"manifest: outputs[{name!r}] is not a length"
    if "position" not in m:
        return "manifest: position is missing"
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _file_problem(folder: Path, name: str, meta: dict[str, int], checksums: bool) -> str | None:
    """What is wrong with one file the manifest lists, or None."""
    path = folder / name
    try:
        if checksums:
            data = _read_regular(path)
            size = len(data)
        else:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return f"{name} is not a regular file"
            size = st.st_size
    except FileNotFoundError:
        return f"{name} is missing"
    except CheckpointError:
        return f"{name} is not a regular file"
    except OSError as e:
        return f"{name} is unreadable: {e.strerror}"
    if size != meta["size"]:
        return f"{name} has {size} bytes, the manifest says {meta['size']}"
    if checksums and zlib.crc32(data) != meta["crc32"]:
        return f"{name} fails its checksum"
    return None


def verify(cp: Checkpoint, checksums: bool = True) -> Checkpoint:
    """Validate a checkpoint as data; sets ``cp.manifest`` when complete, else ``cp.problem``.

    The manifest is untrusted input (anyone who can write the folder wrote it): it must
    be a JSON object of this format holding everything a restore reads, with the right
    types; every file it names must be a plain name inside ``cp.path`` (never absolute,
    never ``..``), a regular file (not a link, FIFO or device), of the recorded size and,
    with ``checksums``, crc32. Each reader of checkpoints goes through here.
    """
    cp.manifest, cp.problem = None, None
    try:
        manifest = json.loads(_read_regular(cp.path / MANIFEST))
    except FileNotFoundError:
        cp.problem = "no manifest (the checkpoint was never completed)"
        return cp
    except (OSError, ValueError, CheckpointError) as e:
        cp.problem = f"manifest unreadable: {e}"
        return cp
    if not isinstance(manifest, dict):
        cp.problem = "manifest is not an object"
        return cp
    if manifest.get("format") != FORMAT:
        cp.problem = f"manifest of unknown format {manifest.get('format')!r}"
        return cp
    cp.problem = _structure_problem(manifest)
    if cp.problem is not None:
        return cp
    for name, meta in manifest["files"].items():
        cp.problem = _file_problem(cp.path, name, meta, checksums)
        if cp.problem is not None:
            return cp
    cp.manifest = manifest
    return cp


def scan(directory: Path) -> list[Checkpoint]:
    """Every checkpoint folder, oldest first (not verified)."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit():
            found.append(Checkpoint(int(p.name[len(_PREFIX):]), p))
    return sorted(found, key=lambda c: c.id)


def newest_complete(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; every newer broken one is named in the log."""
    for cp in reversed(scan(directory)):
        verify(cp)
        if cp.complete:
            return cp
        log.warning("skipping checkpoint %s: %s", cp.path, cp.problem,
                    extra={"event": "checkpoint_skipped", "path": cp.path, "problem": cp.problem})
    return None


def complete_manifests(directory: Path, limit: int) -> list[dict[str, Any]]:
    """Manifests of the ``limit`` newest complete checkpoints, newest first.

    Sizes are checked, checksums are not read, and nothing is logged: for readers that
    watch another process's checkpoints (which that process checks as it restores).
    A folder being written or pruned right now just does not count.
    """
    found: list[dict[str, Any]] = []
    try:
        for cp in reversed(scan(directory)):
            verify(cp, checksums=False)
            if cp.complete and cp.manifest is not None:
                found.append(cp.manifest)
                if len(found) == limit:
                    break
    except OSError:
        pass
    return found


def next_id(directory: Path) -> int:
    """An id above every existing folder's."""
    existing = scan(directory)
    return existing[-1].id + 1 if existing else 1


def prune(directory: Path, keep: int, newest_id: int) -> None:
    """Keep the ``keep`` newest complete checkpoints; drop older and abandoned ones."""
    complete = 0
    for cp in reversed(scan(directory)):
        if cp.id > newest_id:
            continue
        if (cp.path / MANIFEST).exists() and complete < keep:
            complete += 1
            continue
        shutil.rmtree(cp.path, ignore_errors=True)


def create_folder(directory: Path, cp_id: int) -> Path:
    """Make the folder of a new checkpoint (owner-only)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = directory / folder_name(cp_id)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700)
    return folder


def describe(cp: Checkpoint) -> Iterator[str]:
    """Lines for ``bspump-cluster checkpoints``."""
    m = cp.manifest or {}
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["created"])) \
        if isinstance(m.get("created"), (int, float)) else "-"
    state = "complete" if cp.complete else f"INCOMPLETE: {cp.problem}"
    yield (f"{cp.id:>6}  {created}  workers={m.get('workers', '-')} "
           f"key_groups={m.get('key_groups', '-')}  {cp.size() / 1e6:8.2f} MB  {state}")
    if m:
        yield f"        position={json.dumps(m.get('position'))}  " \
              f"watermark={m.get('intake', {}).get('watermark')}"
    if m.get("partition"):
        yield f"        written by {m.get('owner', '-')}" + \
              ("  finished (the partition's end)" if m.get("finished") else "")
