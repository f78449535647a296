"""opengemma.atomic: outputs appear whole or not at all, and nothing is left behind on error."""

from __future__ import annotations

import os
import stat

import pytest

from opengemma.atomic import AtomicPath, atomic_path, write_atomic


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_file_replaces_the_old_one_only_when_complete(tmp_path):
    dst = tmp_path / "out.json"
    dst.write_text("old")
    with atomic_path(dst) as tmp:
        assert tmp.name == "out.json" and tmp.parent != tmp_path  # same name: writers pick formats
        tmp.write_text("new")
        assert dst.read_text() == "old"  # readers still see the old file meanwhile
    assert dst.read_text() == "new"
    assert _listing(tmp_path) == ["out.json"]


@pytest.mark.parametrize("error", [ValueError("disk"), KeyboardInterrupt()])
def test_error_leaves_no_temporary_file_and_keeps_the_old_output(tmp_path, error):
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_path(dst) as tmp:
            tmp.write_bytes(b"half")
            raise error
    assert dst.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.bin"]


def test_error_before_anything_exists_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "new.txt"):
            raise RuntimeError
    assert _listing(tmp_path) == []


def test_folder_output_replaces_a_folder(tmp_path):
    dst = tmp_path / "report"
    dst.mkdir()
    (dst / "stale.html").write_text("x")
    with atomic_path(dst, is_dir=True) as tmp:
        (tmp / "index.html").write_text("<p>")
    assert _listing(dst) == ["index.html"]
    assert _listing(tmp_path) == ["report"]
    with pytest.raises(OSError):
        with atomic_path(dst, is_dir=True) as tmp:
            (tmp / "index.html").write_text("half")
            raise OSError("full disk")
    assert (dst / "index.html").read_text() == "<p>" and _listing(tmp_path) == ["report"]


def test_permissions_follow_umask_or_mode(tmp_path):
    old = os.umask(0o027)
    try:
        plain = write_atomic(tmp_path / "plain.txt", "a")
        folder = tmp_path / "dir"
        with atomic_path(folder, is_dir=True):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o640
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    secret = write_atomic(tmp_path / "keys.json", b"{}", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_streaming_commit_and_abort(tmp_path):
    out = AtomicPath(tmp_path / "a.jsonl")
    out.path.write_text("1\n")
    out.commit()
    dropped = AtomicPath(tmp_path / "b.jsonl")
    dropped.path.write_text("2\n")
    dropped.abort()
    assert _listing(tmp_path) == ["a.jsonl"]


def test_writers_of_the_package_leak_nothing_on_error(tmp_path, monkeypatch):
    """A disk that fills up halfway through: the package's writers (a watermark key file, a
    loss chart) leave neither a partial output nor a temporary file behind."""
    import pathlib

    from opengemma.safety.watermark import keygen
    from opengemma.tune.plot import plot_losses

    def half_then_fail(self, data, *args, **kwargs):
        with open(self, "wb") as f:
            f.write((data.encode() if isinstance(data, str) else data)[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError):
        keygen().save(tmp_path / "keys.json")
    with pytest.raises(OSError):
        plot_losses(tmp_path / "loss.png", [(1, 2.0), (2, 1.5)])
    assert _listing(tmp_path) == []
