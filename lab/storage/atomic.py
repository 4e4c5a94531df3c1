"""Crash-safe writes: a file or a folder appears whole under its final name, or not at all.

Everything the lab writes that a user may care about (converted models, checkpoints, embeddings,
results) goes through these helpers. The recipe is the usual one: write into a temporary sibling
on the same filesystem, flush it to disk, then `os.replace` it into place (atomic on POSIX).
Folders additionally carry a `MANIFEST.json` listing each file's size and SHA-256; it is written
last, so a folder without a valid manifest is, by construction, unfinished or damaged, and a file
changed in place at the same size (zeroed, flipped bits) is caught by `folder_problem(path,
content=True)` (what loading a checkpoint does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

MANIFEST = "MANIFEST.json"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import, before any thread starts
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _default_file_mode() -> int:
    """0o666 less the process umask: the mode `open(path, "w")` would give a new file."""
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically.

    On any exception (or KeyboardInterrupt) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; a written file gets the usual mode
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {name: file_sha256(folder / name) for name in _file_sizes(folder)}


def foreign_folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` must not be replaced by a folder the lab writes, or None: it is a file, or a
    non-empty folder with no manifest (so not written by the lab: a user's notes, a run folder)."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    if read_manifest(path) is None and any(path.iterdir()):
        return f"{path} is a folder the lab did not write (no {MANIFEST}); replacing it would delete its files"
    return None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, metadata: dict | None = None, replace_foreign: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `path`, with a manifest, atomically.

    If `path` already exists it is replaced (the old one is moved aside first, then deleted), so a
    reader never sees a mix of old and new files; a folder the lab did not write is refused (a
    FileExistsError naming it) unless `replace_foreign`. On failure the temporary folder is deleted.
    """
    path = Path(path)
    problem = None if replace_foreign else foreign_folder_problem(path)
    if problem:
        raise FileExistsError(f"{problem}: choose another output folder (or pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)  # what a killed earlier write of this target left
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        manifest = {"files": _file_sizes(tmp), "sha256": _file_hashes(tmp), "metadata": metadata or {}}
        write_json_atomic(tmp / MANIFEST, manifest)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def reseal(path: str | os.PathLike) -> None:
    """Rewrite a lab folder's manifest for its files as they are now: for a maintainer who edited a
    file on purpose (a model card). Never call it to silence a damaged-file error."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(f"{path} has no {MANIFEST}: not a folder the lab wrote")
    write_json_atomic(path / MANIFEST, {**manifest, "files": _file_sizes(path), "sha256": _file_hashes(path)})


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of a folder written by `atomic_dir`, or None if it is missing or unreadable."""
    try:
        with open(Path(path) / MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def folder_problem(path: str | os.PathLike, content: bool = False) -> str | None:
    """Why the folder at `path` is not a complete `atomic_dir` output, or None if it is complete.

    Checks that the manifest exists and that every listed file exists with the listed size; with
    `content`, also that each file's SHA-256 is the listed one (manifests written before hashes
    were kept are checked by size only).
    """
    path = Path(path)
    if not path.is_dir():
        return f"{path} does not exist"
    manifest = read_manifest(path)
    if manifest is None:
        return f"{path} has no valid {MANIFEST} (an interrupted write?)"
    for name, size in manifest["files"].items():
        f = path / name
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != size:
            return f"{f} has {f.stat().st_size} bytes, expected {size} (truncated or modified)"
    if content:
        for name, digest in (manifest.get("sha256") or {}).items():
            if file_sha256(path / name) != digest:
                return f"{path / name} is damaged: its content is not what was written (SHA-256 differs from {MANIFEST})"
    return None


def remove_stale_temporaries(parent: str | os.PathLike, name: str | None = None) -> None:
    """Delete `.NAME.*.tmp` / `.old` leftovers of interrupted (killed) `atomic_dir` / `atomic_file`
    calls in `parent`; with `name`, only those of that target."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    prefix = f".{name}." if name else "."
    for p in parent.iterdir():
        if p.name.startswith(prefix) and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
