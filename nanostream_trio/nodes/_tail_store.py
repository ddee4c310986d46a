"""TailFile's checkpoint file, and how it finds files again in a directory.

The checkpoint is a small JSON file: per file its path, identity (device and
inode), offset, line number, and hashes of its first bytes and of the bytes
just before the offset. The lookups find a checkpointed file again after a
restart (renamed within its directory, or copied by copytruncate) and a closed
file by its identity.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from .._exceptions import ConfigError
from ._tail_read import FINGERPRINT_BYTES, Tracked, fingerprint

CHECKPOINT_VERSION = 1
#: Rotated names with these endings are compressed copies, never read.
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".z")


def candidates(
    directory: str, accept: Callable[[str], bool]
) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files in ``directory`` whose name ``accept`` takes, with their stat.

    A name that vanishes between the listing and its ``stat`` means files are
    being renamed right now (a rotation shifting ``app.log.1`` to
    ``app.log.2``): the directory is listed again, up to :data:`_PASSES`
    times, and every file seen in any pass is given once, under the name of
    the last pass that saw it, so a file in mid-shift is not missed.
    """
    found: dict[tuple[int, int], tuple[str, os.stat_result]] = {}
    for _ in range(_PASSES):
        try:
            entries = list(os.scandir(directory or "."))
        except OSError:
            break
        moving = False
        for entry in entries:
            if not accept(entry.name) or entry.name.lower().endswith(COMPRESSED):
                continue
            try:
                info = os.stat(entry.path)
            except FileNotFoundError:
                moving = True
                continue
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[(info.st_dev, info.st_ino)] = (entry.path, info)
        if not moving:
            break
    yield from found.values()


#: Listings of a directory in which names are moving, at most (see candidates).
_PASSES = 3


def find_identity(directory: str, identity: tuple[int, int]) -> tuple[str, os.stat_result] | None:
    """The file with ``identity`` in ``directory``, if it is there."""
    for path, info in candidates(directory, lambda _: True):
        if (info.st_dev, info.st_ino) == identity:
            return path, info
    return None


def still_there(entry: dict[str, Any], identity: tuple[int, int]) -> bool:
    """Whether the checkpointed file under the name still holds what was read."""
    path = str(entry["path"])
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != identity:
            return True
        return matches(fd, entry, info.st_size, suffix=False)
    finally:
        os.close(fd)


def look_for(entry: dict[str, Any], identity: tuple[int, int]) -> tuple[str, os.stat_result] | None:
    """The file of a checkpoint entry found again in its directory: by identity (renamed),
    or a copy holding its first bytes and the bytes before its offset (copytruncate)."""
    directory = os.path.dirname(str(entry["path"]))
    copies: list[tuple[str, os.stat_result]] = []
    for path, info in candidates(directory, lambda _: True):
        here = (info.st_dev, info.st_ino)
        if here == identity:
            copies.insert(0, (path, info))
        elif info.st_size >= int(entry["offset"]) and "suffix_sha256" in entry:
            copies.append((path, info))
    for path, info in copies:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            same = (info.st_dev, info.st_ino) == identity
            if matches(fd, entry, info.st_size, suffix=not same):
                return path, info
        finally:
            os.close(fd)
    return None


def matches(fd: int, entry: dict[str, Any], size: int, *, suffix: bool) -> bool:
    """Whether the file open at ``fd`` holds what a checkpoint entry recorded: its first
    bytes (and, with ``suffix``, the bytes just before the saved offset)."""
    offset = int(entry["offset"])
    if size < offset:
        return False
    prefix = os.pread(fd, int(entry["prefix_len"]), 0)
    if fingerprint(prefix) != entry["prefix_sha256"]:
        return False
    if not suffix:
        return True
    length = int(entry.get("suffix_len", 0))
    if not length or not int(entry["prefix_len"]):
        return False
    return bool(fingerprint(os.pread(fd, length, offset - length)) == entry["suffix_sha256"])


def load_checkpoint(checkpoint: str | None, node: str) -> list[dict[str, Any]]:
    """The file entries of a checkpoint file ([] if there is none)."""
    if checkpoint is None:
        return []
    try:
        with open(checkpoint, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return []
    except ValueError as exc:
        msg = (
            f"node {node!r}: checkpoint file {checkpoint} is not valid JSON "
            f"({exc}); delete it to start over"
        )
        raise ConfigError(msg, node=node, key="checkpoint") from exc
    if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
        msg = (
            f"node {node!r}: checkpoint file {checkpoint} is not a TailFile "
            f"checkpoint of version {CHECKPOINT_VERSION}; delete it to start over"
        )
        raise ConfigError(msg, node=node, key="checkpoint")
    files: list[dict[str, Any]] = data.get("files", [])
    return files


def check_checkpoint_directory(checkpoint: str | None, node: str) -> None:
    """Fail at setup if a checkpoint file could not be written."""
    if checkpoint is None:
        return
    directory = os.path.dirname(os.path.abspath(checkpoint))
    if not os.path.isdir(directory):
        msg = (
            f"node {node!r}: the directory of checkpoint file {checkpoint} "
            f"({directory}) does not exist; create it or choose another path"
        )
        raise ConfigError(msg, node=node, key="checkpoint")
    if not os.access(directory, os.W_OK | os.X_OK):
        msg = (
            f"node {node!r}: cannot write checkpoint file {checkpoint}: "
            f"directory {directory} is not writable"
        )
        raise ConfigError(msg, node=node, key="checkpoint")


def end_hash(tracked: Tracked) -> tuple[int, str] | None:
    """Length and hash of the bytes just before ``offset`` (to recognise a copy made
    while stopped), computed once per offset."""
    cached = tracked.end_hash
    if cached is not None and cached[0] == tracked.offset:
        return cached[1], cached[2]
    if tracked.fd is None or tracked.offset == 0:
        return None
    length = min(FINGERPRINT_BYTES, tracked.offset)
    digest = fingerprint(os.pread(tracked.fd, length, tracked.offset - length))
    tracked.end_hash = (tracked.offset, length, digest)
    return length, digest


def save_checkpoint(checkpoint: str | None, source: str, files: list[dict[str, Any]]) -> None:
    """Write ``files`` to the checkpoint: to a temporary file, synced, renamed over it."""
    if checkpoint is None:
        return
    data = {"version": CHECKPOINT_VERSION, "source": source, "files": files}
    temporary = f"{checkpoint}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, checkpoint)
