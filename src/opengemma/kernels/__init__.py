"""Native CPU kernels, compiled on first use for this machine (`-O3 -march=native`).

The C source ships with the package; the shared library is built once into
~/.cache/opengemma/kernels (or $OPENGEMMA_CACHE) and loaded with ctypes. Without a C compiler,
`native()` returns None and callers use the (slower) PyTorch implementations.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

_SOURCE = Path(__file__).with_name("q8.c")
_lib: ctypes.CDLL | None | bool = False  # False = not tried yet


def cache_dir() -> Path:
    root = os.environ.get("OPENGEMMA_CACHE") or Path.home() / ".cache" / "opengemma"
    return Path(root) / "kernels"


def _compile(target: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise OSError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(_SOURCE), "-o",
               str(out), "-lm"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(out, target)  # atomic: a concurrent process sees all or nothing


def native() -> ctypes.CDLL | None:
    """The compiled kernel library, or None when it cannot be built here."""
    global _lib
    if _lib is not False:
        return _lib
    if os.environ.get("OPENGEMMA_NO_NATIVE"):
        _lib = None
        return None
    digest = hashlib.sha256(_SOURCE.read_bytes() + os.uname().machine.encode()).hexdigest()[:16]
    target = cache_dir() / f"q8-{digest}.so"
    try:
        if not target.exists():
            _compile(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(
            f"native kernels unavailable, using PyTorch fallbacks: {detail}", stacklevel=2
        )
        _lib = None
        return None
    vp, lg, it = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.q8_quantize.argtypes = [vp, vp, vp, lg, lg]
    lib.q8_dequantize.argtypes = [vp, vp, vp, lg, lg, it]
    lib.q8_gemv.argtypes = [vp, vp, vp, vp, vp, lg, lg, lg, it]
    lib.q8_gather.argtypes = [vp, vp, vp, vp, lg, lg]
    lib.q8_linear.argtypes = [vp, vp, vp, vp, vp, vp, lg, lg, lg, it]
    for fn in (lib.q8_quantize, lib.q8_dequantize, lib.q8_gemv, lib.q8_gather, lib.q8_linear):
        fn.restype = None
    _lib = lib
    return lib
