"""Atomic output for writers: build into a temporary sibling, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from opengemma.checkpoint.errors import CheckpointError


def check_destination(dst: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing output unless asked; the parent must exist."""
    if not dst.parent.is_dir():
        raise CheckpointError(f"cannot write {dst}: the folder {dst.parent} does not exist")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} already exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_path(dst: Path, overwrite: bool, is_dir: bool) -> Iterator[Path]:
    """Yield a temporary path next to `dst`; on success it replaces `dst`, on error it is removed.

    Readers never see a half-written file or directory.
    """
    check_destination(dst, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    target = tmp if is_dir else tmp / dst.name
    try:
        yield target
        _default_modes(target)
        if dst.exists():
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            else:
                dst.unlink()
        os.replace(target, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _default_modes(path: Path) -> None:
    """Give the output the permissions a plain `open`/`mkdir` would (temp dirs are 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
