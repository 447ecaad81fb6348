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
Nothing is pickled: arrays are ``.npy`` (read with ``allow_pickle=False``), the rest
msgpack and JSON.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
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
    fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        raise
    os.replace(path.with_name(path.name + ".tmp"), path)
    return {"size": len(data), "crc32": zlib.crc32(data)}


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


class ShardReader:
    """Reads the files one old worker wrote into a (verified) checkpoint."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.folder = folder
        self.worker = worker
        path = folder / f"w{worker}.state.msgpack"
        try:
            self.objects: dict[str, Any] = msgpack.unpackb(
                path.read_bytes(), raw=False, strict_map_key=False)
        except (OSError, ValueError, msgpack.UnpackException) as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None

    def get_object(self, name: str) -> Any:
        """An object stored with ``put_object``, or None."""
        return self.objects.get(name)

    def get_array(self, name: str) -> np.ndarray | None:
        """An array stored with ``put_array``, or None."""
        path = self.folder / f"w{self.worker}.{name}.npy"
        if not path.exists():
            return None
        try:
            result: np.ndarray = np.load(path, allow_pickle=False)
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

    def readers(self) -> list[ShardReader]:
        """One reader per worker of the run that wrote it."""
        assert self.manifest is not None
        return [ShardReader(self.path, w) for w in range(int(self.manifest["workers"]))]


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last: from now on the checkpoint counts as complete."""
    atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=1).encode())


def verify(cp: Checkpoint, checksums: bool = True) -> Checkpoint:
    """Check manifest and files; sets ``cp.manifest`` or ``cp.problem``."""
    mpath = cp.path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        cp.problem = "no manifest (the checkpoint was never completed)"
        return cp
    except (OSError, ValueError) as e:
        cp.problem = f"manifest unreadable: {e}"
        return cp
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        cp.problem = f"manifest of unknown format {manifest.get('format')!r}" \
            if isinstance(manifest, dict) else "manifest is not an object"
        return cp
    for name, meta in (manifest.get("files") or {}).items():
        path = cp.path / name
        try:
            data = path.read_bytes() if checksums else None
            size = len(data) if data is not None else path.stat().st_size
        except OSError:
            cp.problem = f"{name} is missing"
            return cp
        if size != meta["size"]:
            cp.problem = f"{name} has {size} bytes, the manifest says {meta['size']}"
            return cp
        if data is not None and zlib.crc32(data) != meta["crc32"]:
            cp.problem = f"{name} fails its checksum"
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
        log.warning("skipping checkpoint %s: %s", cp.path, cp.problem)
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
        if "created" in m else "-"
    state = "complete" if cp.complete else f"INCOMPLETE: {cp.problem}"
    yield (f"{cp.id:>6}  {created}  workers={m.get('workers', '-')} "
           f"key_groups={m.get('key_groups', '-')}  {cp.size() / 1e6:8.2f} MB  {state}")
    if m:
        yield f"        position={json.dumps(m.get('position'))}  " \
              f"watermark={m.get('intake', {}).get('watermark')}"
    if m.get("partition"):
        yield f"        written by {m.get('owner', '-')}" + \
              ("  finished (the partition's end)" if m.get("finished") else "")
