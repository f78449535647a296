"""Refuse to clobber outputs, then write them atomically (opengemma.atomic)."""

from __future__ import annotations

from pathlib import Path

from opengemma.atomic import AtomicPath, atomic_path
from opengemma.checkpoint.errors import CheckpointError


def check_destination(dst: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing output unless asked; the parent must exist."""
    if not dst.parent.is_dir():
        raise CheckpointError(f"cannot write {dst}: the folder {dst.parent} does not exist")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} already exists; pass --force to replace it")


def checked_atomic_path(dst: Path, overwrite: bool, is_dir: bool) -> AtomicPath:
    """A temporary path replacing `dst` on success, removed on error; readers never see a
    half-written file or directory. Refuses an existing `dst` unless `overwrite`."""
    check_destination(dst, overwrite)
    return atomic_path(dst, is_dir=is_dir)
