"""Native CPU kernels, compiled on first use for this machine (`-O3 -march=native`).

The C sources (every *.c file here) ship with the package; one shared library is built once into
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

_SOURCES = sorted(Path(__file__).parent.glob("*.c"))
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
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC",
               *map(str, _SOURCES), "-o", str(out), "-lm"]  # fmt: skip
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
    digest = hashlib.sha256(os.uname().machine.encode())
    for src in _SOURCES:
        digest.update(src.name.encode() + src.read_bytes())
    digest = digest.hexdigest()[:16]
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
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    return lib


_vp, _lg, _it = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
SIGNATURES = {  # C function -> (return type, argument types)
    # q8.c: int8 activations and Q8_0 block weights
    "q8_quantize": (None, [_vp, _vp, _vp, _lg, _lg]),
    "q8_dequantize": (None, [_vp, _vp, _vp, _lg, _lg, _it]),
    "q8_0_quantize": (None, [_vp, _vp, _lg, _lg]),
    "q8_0_dequantize_bf16": (None, [_vp, _vp, _lg, _lg, _it]),
    "q8_0_gather": (None, [_vp, _vp, _vp, _lg, _lg]),
    "q8_0_gemv": (None, [_vp, _vp, _vp, _vp, _lg, _lg, _lg, _it]),
    "q8_0_linear": (None, [_vp, _vp, _vp, _vp, _vp, _lg, _lg, _lg, _it]),
    # gguf_blocks.c: GGUF block decoding to float32 / to Q8_0 blocks; 0, or -1 = not native
    "gguf_dequantize": (_it, [_it, _vp, _lg, _lg, _vp, _it]),
    "gguf_to_q8_0": (_it, [_it, _vp, _lg, _lg, _vp, _it]),
    # decode.c: a whole decode step
    "decode_step": (_it, [_vp, _vp, _vp, _lg, _vp, _vp, _it]),
}
