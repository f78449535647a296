"""Atomic output: every file or folder opengemma writes appears whole or not at all.

    with atomic_path(dst) as tmp:      # tmp: a path next to dst, with dst's file name
        write_something(tmp)           # on success tmp replaces dst; on any error it is removed
    write_atomic(dst, "text")          # the same for a str or bytes

The temporary path lives in a fresh hidden folder beside `dst` (same file system, so the final
rename is atomic for files) and keeps `dst`'s name, so writers that pick a format from the
extension (matplotlib, safetensors) work unchanged. Nothing is left behind on error, however the
writer fails (an exception, KeyboardInterrupt, a full disk). The output gets the permissions a
plain `open` / `mkdir` would give it, unless `mode` says otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["AtomicPath", "atomic_path", "write_atomic"]


class AtomicPath:
    """A temporary `path` next to `dst`: `commit()` renames it onto `dst`, `abort()` drops it.

    Use it as a context manager (commit on success, abort on error), or call the two methods
    when the writing outlives one block (a streaming writer).
    """

    def __init__(self, dst: str | os.PathLike[str], *, is_dir: bool = False,
                 mode: int | None = None) -> None:  # fmt: skip
        self.dst = Path(dst)
        self.is_dir, self.mode = is_dir, mode
        self._folder = Path(
            tempfile.mkdtemp(prefix=f".{self.dst.name}.", suffix=".partial", dir=self.dst.parent)
        )
        self.path = self._folder / self.dst.name
        try:  # created with the default permissions (umask applies), as open/mkdir would
            if is_dir:
                os.mkdir(self.path, 0o777)
            else:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except BaseException:
            self.abort()
            raise

    def commit(self) -> Path:
        """Move the finished output onto `dst` (replacing what was there); returns `dst`."""
        try:
            if self.mode is not None:
                os.chmod(self.path, self.mode)
            if self.dst.is_dir() and not self.dst.is_symlink():
                shutil.rmtree(self.dst)  # a folder cannot be renamed onto a non-empty one
            elif self.is_dir and self.dst.exists():
                self.dst.unlink()
            os.replace(self.path, self.dst)
        finally:
            self.abort()
        return self.dst

    def abort(self) -> None:
        """Remove the temporary output (after a commit: only the empty temporary folder)."""
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_path(dst: str | os.PathLike[str], *, is_dir: bool = False,
                mode: int | None = None) -> AtomicPath:  # fmt: skip
    """A context manager yielding a temporary path that replaces `dst` when the block succeeds.

    `is_dir`: the output is a folder (created empty); otherwise a file (created empty).
    `mode`: permissions of the output (default: those of a plain open/mkdir).
    """
    return AtomicPath(dst, is_dir=is_dir, mode=mode)


def write_atomic(dst: str | os.PathLike[str], data: str | bytes,
                 mode: int | None = None) -> Path:  # fmt: skip
    """Write `data` (str as UTF-8) to `dst` atomically; returns `dst` as a Path."""
    with atomic_path(dst, mode=mode) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(dst)
