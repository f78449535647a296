"""The kernel loader's build and cache logic on the machines it meets: no compiler, a cache it
cannot write, and two processes building the same variant into an empty cache at once.

Each case loads afresh (the loaded library is put back afterwards) with only the cache under
test: $OPENGEMMA_CACHE points into tmp_path and no prebuilt folder is searched. The portable
`generic` build is the one variant tried, so at most one library is compiled per test.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import opengemma.kernels as kernels
from opengemma.kernels import build

VARIANT = build.BY_NAME["generic"]


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A loader that has not loaded yet, trying `generic` with tmp_path/cache as its cache."""
    monkeypatch.setattr(kernels, "_lib", False)
    monkeypatch.setattr(kernels, "_info", {"variant": None, "reason": "not loaded yet"})
    monkeypatch.setattr(kernels, "prebuilt_dirs", lambda: [])  # only the cache is under test
    monkeypatch.setenv("OPENGEMMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENGEMMA_KERNEL", VARIANT.name)
    monkeypatch.delenv("OPENGEMMA_NO_NATIVE", raising=False)
    return tmp_path / "cache" / "kernels"


def _files(folder: Path) -> list[str]:
    """Every entry under `folder` (hidden temporary ones included), relative to it."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _real_compiler() -> str:
    cc = build.compiler()
    if cc is None or shutil.which(cc) is None:
        pytest.fail(f"these tests compile the kernels: {build.INSTALL_HINT}", pytrace=False)
    return shutil.which(cc)


@pytest.mark.parametrize("how", ["CC names a missing program", "no compiler on PATH"])
def test_without_a_compiler_the_loader_falls_back_and_says_why(fresh, monkeypatch, tmp_path, how):
    if how == "CC names a missing program":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-gcc"))
    else:
        monkeypatch.delenv("CC", raising=False)
        (tmp_path / "empty-bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.warns(UserWarning, match="using PyTorch fallbacks.*apt-get install gcc"):
        assert kernels.native() is None
    info = kernels.kernel_info()
    assert info["variant"] is None
    assert "generic: " in info["reason"] and "apt-get install gcc" in info["reason"]
    if how == "CC names a missing program":
        assert "no-such-gcc ($CC) is not found" in info["reason"]
    else:
        assert "no C compiler found" in info["reason"]
    with pytest.raises(kernels.KernelUnavailable, match="cannot be built: .*apt-get install gcc"):
        kernels.load_variant(VARIANT.name)
    assert _files(fresh) == []


def _read_only(folder: Path, monkeypatch) -> None:
    """Make `folder` refuse new entries. Permissions do not bind root (CI runs as root), so
    there the file system's answer to a read-only folder, EACCES, is given by mkdtemp, which
    every write into the folder goes through."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real = tempfile.mkdtemp

        def mkdtemp(suffix=None, prefix=None, dir=None):  # noqa: A002 (tempfile's name)
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(suffix, prefix, dir)

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def test_a_read_only_cache_falls_back_and_leaves_nothing(fresh, monkeypatch):
    _real_compiler()
    _read_only(fresh, monkeypatch)
    try:
        with pytest.warns(UserWarning, match="cannot write kernels into .*OPENGEMMA_CACHE"):
            assert kernels.native() is None
        reason = kernels.kernel_info()["reason"]
        assert str(fresh) in reason and "Permission denied" in reason
        assert _files(fresh) == []
    finally:
        fresh.chmod(0o755)


_RACER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    import opengemma.kernels as k

    lib = k.native()
    info = k.kernel_info()
    ok = False
    if lib is not None:  # the library works: Q8_0 blocks bit for bit as the gguf package's
        x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
        out = np.empty((3, 68), dtype=np.uint8)
        lib.q8_0_quantize(x.ctypes.data, out.ctypes.data, 3, 64)
        ok = bool(np.array_equal(out, quantize(x, GGMLQuantizationType.Q8_0)))
    print(json.dumps({"info": info, "works": ok}))
    """
)

# a compiler that holds each build until both processes are compiling: the builds overlap
_GATE = """#!/bin/sh
case " $* " in *" -shared "*)
  touch "$GATE_DIR/$$"; i=0
  while [ "$(ls "$GATE_DIR" | wc -l)" -lt 2 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done;;
esac
exec "$REAL_CC" "$@"
"""


def test_two_processes_building_at_once_each_load_a_whole_library(fresh, monkeypatch, tmp_path):
    """Both compile the same variant into one empty cache at the same time (the compiler
    waits for the other process): both load a library that works, and the cache holds one
    library and its manifest, nothing torn or left over. Then the cache, made read-only,
    still serves the library."""
    gate = tmp_path / "gate"
    gate.mkdir()
    wrapper = tmp_path / "gated-cc"
    wrapper.write_text(_GATE)
    wrapper.chmod(0o755)
    env = {**os.environ, "CC": str(wrapper), "REAL_CC": _real_compiler(), "GATE_DIR": str(gate),
           "OPENGEMMA_KERNELS_DIR": str(tmp_path / "no-prebuilt")}  # fmt: skip
    racers = [subprocess.Popen([sys.executable, "-c", _RACER], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(2)]  # fmt: skip
    results = []
    for p in racers:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    assert len(list(gate.iterdir())) == 2  # both processes compiled, side by side
    for r in results:
        assert r["works"] and r["info"]["variant"] == VARIANT.name, r
        assert r["info"]["source"] == "compiled"
    lib = Path(results[0]["info"]["path"])
    assert results[1]["info"]["path"] == str(lib) and lib.parent == fresh
    assert _files(fresh) == sorted([lib.name, lib.with_suffix(".json").name])
    manifest = json.loads(lib.with_suffix(".json").read_text())
    assert manifest["library"] == lib.name and manifest["sources"] == build.sources_hash()
    assert build.find_built(fresh, VARIANT) == lib

    _read_only(fresh, monkeypatch)
    try:
        assert kernels.native() is not None
        assert kernels.kernel_info()["source"] == "cache"
        assert kernels.kernel_info()["path"] == str(lib)
        assert _files(fresh) == sorted([lib.name, lib.with_suffix(".json").name])
    finally:
        fresh.chmod(0o755)
