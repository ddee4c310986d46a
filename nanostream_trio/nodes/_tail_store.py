"""TailFile's saved positions, and how it finds files again in a directory.

``TailFile.snapshot()`` returns :func:`saved_state` of its files: per file an
:func:`entry` with its path, identity (device and inode), offset, line number,
and hashes of its first bytes and of the bytes just before the offset, plain
data that the pipeline's checkpoint store pickles. The lookups find a saved file
again after a restart (renamed within its directory, or copied by
copytruncate) and a closed file by its identity.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from .._exceptions import ConfigError
from ._tail_read import FINGERPRINT_BYTES, Known, Tracked, fingerprint

#: Version of the state ``TailFile.snapshot()`` returns; ``restore`` refuses others.
STATE_VERSION = 1
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


def entry(tracked: Tracked, lineno: int) -> dict[str, Any]:
    """The saved position of ``tracked``: after line ``lineno``, at its ``offset``."""
    prefix = tracked.prefix[: min(len(tracked.prefix), tracked.offset)]
    saved: dict[str, Any] = {
        "path": tracked.path,
        "identity": list(tracked.identity),
        "offset": tracked.offset,
        "lineno": lineno,
        "prefix_len": len(prefix),
        "prefix_sha256": fingerprint(prefix),
    }
    end = end_hash(tracked)
    if end is not None:
        saved["suffix_len"], saved["suffix_sha256"] = end
    return saved


#: The identity of a :func:`truncated_entry`: no file has it, only copies match.
NO_FILE = (-1, -1)


def truncated_entry(known: Known) -> dict[str, Any] | None:
    """An entry for content read from a file since truncated whose copy (copytruncate) has
    not been found yet; None if too little is known of the bytes before its offset."""
    held = known.pos - known.offset  # the partial line after the offset
    end = known.suffix[: len(known.suffix) - held] if held < len(known.suffix) else b""
    if not end:
        return None
    prefix = known.prefix[: min(len(known.prefix), known.offset)]
    return {
        "path": known.path,
        "identity": list(NO_FILE),
        "offset": known.offset,
        "lineno": known.lineno,
        "prefix_len": len(prefix),
        "prefix_sha256": fingerprint(prefix),
        "suffix_len": len(end),
        "suffix_sha256": fingerprint(end),
    }


def saved_state(
    source: str, files: list[dict[str, Any]], truncated: list[dict[str, Any]]
) -> dict[str, Any]:
    """What ``TailFile.snapshot()`` returns: the entries of its files, and of truncated
    content whose copy is still looked for."""
    return {"version": STATE_VERSION, "source": source, "files": files, "truncated": truncated}


def entries(saved: Any, node: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The file entries of a :func:`saved_state`, by identity (also checks it is one).

    Raises:
        ConfigError: ``saved`` is not a TailFile state of :data:`STATE_VERSION`.
    """
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        msg = (
            f"node {node!r}: the checkpoint holds no TailFile state of version "
            f"{STATE_VERSION} for this node (got {type(saved).__name__}); was another node "
            "given this name? Rename one, or start without the checkpoint"
        )
        raise ConfigError(msg, node=node, key="checkpoint")
    files: list[dict[str, Any]] = saved.get("files", [])
    return {identity(file): file for file in files}


def identity(saved: dict[str, Any]) -> tuple[int, int]:
    """The (device, inode) of a saved file entry."""
    device, inode = saved["identity"]
    return int(device), int(inode)
