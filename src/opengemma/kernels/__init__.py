"""Native CPU kernels: one C library, built in named variants and chosen for the running CPU.

The C sources (every *.c file here) ship with the package. `kernels.build` compiles them per
variant (avx512-vnni-bf16, avx512-vnni, avx-vnni, avx2, and a portable `generic` build with no
instruction set beyond the architecture's baseline), each with a manifest naming the CPU features
it needs. At first use `native()` reads the CPU's features (`kernels.cpu`) and loads the best
variant the CPU can run, looking in order in
  1. $OPENGEMMA_KERNELS_DIR, then the package's kernels/lib/ (built ahead of time by
     `opengemma build-kernels`, e.g. in the CPU image's build stage), then
  2. the cache ~/.cache/opengemma/kernels (or $OPENGEMMA_CACHE/kernels), compiling it there on
     first use when a C compiler is present; the file name carries a hash of the variant,
     flags, compiler and sources, so a shared cache never hands one CPU's build to another.
Without a compiler or a writable cache, `native()` is None and `kernel_info()` says why.
A library is only ever loaded after its manifest says the CPU has every feature it needs.
$OPENGEMMA_KERNEL=NAME asks for one variant (refused when the CPU lacks its features),
$OPENGEMMA_NO_NATIVE=1 turns the kernels off; then callers use the (slower) PyTorch paths.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import warnings
from pathlib import Path

from opengemma.errors import OpenGemmaError
from opengemma.kernels import build as _build
from opengemma.kernels.cpu import cpu_features

_lib: ctypes.CDLL | None | bool = False  # False = not tried yet
_info: dict = {"variant": None, "reason": "not loaded yet"}


class KernelUnavailable(OpenGemmaError, OSError):
    """A requested kernel variant cannot run on this CPU or cannot be built here."""


def cache_dir() -> Path:
    root = os.environ.get("OPENGEMMA_CACHE") or Path.home() / ".cache" / "opengemma"
    return Path(root) / "kernels"


def prebuilt_dirs() -> list[Path]:
    dirs = [Path(__file__).parent / "lib"]
    if os.environ.get("OPENGEMMA_KERNELS_DIR"):
        dirs.insert(0, Path(os.environ["OPENGEMMA_KERNELS_DIR"]))
    return dirs


def _locate(variant: _build.Variant, compile_missing: bool) -> tuple[Path, str]:
    """(library path, where it came from) for `variant`, building it into the cache if need be."""
    for directory in [*prebuilt_dirs(), cache_dir()]:
        found = _build.find_built(directory, variant)
        if found is not None:
            return found, "prebuilt" if directory != cache_dir() else "cache"
    if not compile_missing:
        raise KernelUnavailable(f"no built {variant.name} kernels")
    return _build.build(variant, cache_dir()), "compiled"


def _bind(path: Path, variant: _build.Variant) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.og_kernel_variant.restype = ctypes.c_char_p
    built_as = lib.og_kernel_variant().decode()
    if built_as != variant.name:
        raise KernelUnavailable(f"{path} holds the {built_as} kernels, not {variant.name}")
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def load_variant(name: str, compile_missing: bool = True) -> ctypes.CDLL:
    """The library of variant `name`; KernelUnavailable when this CPU lacks one of its features
    (a build for other features is never loaded) or it cannot be found or built."""
    variant = _build.BY_NAME.get(name)
    if variant is None:
        names = ", ".join(_build.BY_NAME)
        raise KernelUnavailable(f"unknown kernel variant {name!r}; one of {names}")
    if variant not in _build.runnable(cpu_features()):
        missing = ", ".join(sorted(variant.requires - cpu_features())) or variant.arch
        raise KernelUnavailable(f"the {name} kernels need CPU features this CPU lacks: {missing}")
    try:
        path, _ = _locate(variant, compile_missing)
        return _bind(path, variant)
    except (OSError, subprocess.SubprocessError) as exc:
        if isinstance(exc, KernelUnavailable):
            raise
        detail = getattr(exc, "stderr", "") or str(exc)
        raise KernelUnavailable(f"the {name} kernels cannot be built: {detail}") from exc


def _load() -> tuple[ctypes.CDLL | None, dict]:
    features = cpu_features()
    wanted = os.environ.get("OPENGEMMA_KERNEL")
    candidates = [_build.BY_NAME.get(wanted)] if wanted else _build.runnable(features)
    errors: dict[str, list[str]] = {}  # reason -> the variants it stopped
    for variant in candidates:
        if variant is None or variant not in _build.runnable(features):
            errors.setdefault(f"OPENGEMMA_KERNEL={wanted} cannot run on this CPU", [])
            continue
        try:
            path, source = _locate(variant, compile_missing=True)
            return _bind(path, variant), {"variant": variant.name, "path": str(path),
                                          "source": source}  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            reason = str(getattr(exc, "stderr", "") or exc).strip()
            errors.setdefault(reason, []).append(variant.name)
    reasons = [f"{', '.join(names)}: {why}" if names else why for why, names in errors.items()]
    return None, {"variant": None, "reason": "; ".join(reasons) or "no variant for this CPU"}


def native() -> ctypes.CDLL | None:
    """The kernel library for this CPU, or None when none can be loaded or built here."""
    global _lib, _info
    if _lib is not False:
        return _lib
    if os.environ.get("OPENGEMMA_NO_NATIVE"):
        _lib, _info = None, {"variant": None, "reason": "OPENGEMMA_NO_NATIVE is set"}
        return None
    _lib, _info = _load()
    if _lib is None:
        warnings.warn(f"native kernels unavailable, using PyTorch fallbacks: {_info['reason']}",
                      stacklevel=2)  # fmt: skip
    return _lib


def kernel_info() -> dict:
    """Which variant `native()` runs (loading it if not yet), from where, and why not if none."""
    native()
    return dict(_info)


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
    "qb_gemv": (_it, [_it, _vp, _vp, _vp, _vp, _lg, _lg, _lg, _it]),  # Q8_0, Q5_0, Q4_0
    "qb_linear": (_it, [_it, _vp, _vp, _vp, _vp, _vp, _lg, _lg, _lg, _it]),
    # gguf_blocks.c: GGUF block decoding to float32 / to Q8_0 blocks; 0, or -1 = not native
    "gguf_dequantize": (_it, [_it, _vp, _lg, _lg, _vp, _it]),
    "gguf_to_q8_0": (_it, [_it, _vp, _lg, _lg, _vp, _it]),
    "gguf_gather": (_it, [_it, _vp, _vp, _vp, _lg, _lg]),
    # kquant.c: Q4_K / Q6_K blocks as stored, activations int8 per 256 (+ sums per 16)
    "q8k_quantize": (None, [_vp, _vp, _vp, _vp, _lg, _lg]),
    "kq_gemv": (_it, [_it, _vp, _vp, _vp, _vp, _vp, _lg, _lg, _lg, _it]),
    "kq_linear": (_it, [_it, _vp, _vp, _vp, _vp, _vp, _vp, _lg, _lg, _lg, _it]),
    # decode.c: a whole decode step
    "decode_step": (_it, [_vp, _vp, _vp, _lg, _vp, _vp, _it]),
}


def system_info() -> dict:
    """This machine as the kernels see it: architecture, CPU, the features that select a variant,
    the variants it can run and the one `native()` runs."""
    import platform

    from opengemma.kernels.cpu import detected_features, machine

    features = cpu_features()
    relevant = set().union(*(v.requires for v in _build.VARIANTS))
    runnable = [v.name for v in _build.runnable(features)]
    return {
        "machine": machine(),
        "cpu": _cpu_name() or platform.processor() or "unknown",
        "features": sorted(features & relevant),
        "features_masked": sorted((detected_features() - features) & relevant),
        "runnable_variants": runnable,
        "kernel": kernel_info(),
    }


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
