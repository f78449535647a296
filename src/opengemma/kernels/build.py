"""Named builds of the kernel library, each for a stated set of CPU features.

A variant's compiler flags enable exactly the instruction sets of its `requires` (never
-march=native), so a library built on one machine runs on any CPU that has those features. Each
built library has a manifest next to it (same name, .json): the variant, the features it needs,
the compiler and flags, and the hash of the C sources it was built from. A loader reads the
manifest before the library, and takes it only when the sources are the shipped ones and the CPU
has every feature it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from opengemma.atomic import AtomicPath, write_atomic
from opengemma.kernels.cpu import machine

SOURCE_DIR = Path(__file__).parent
SOURCES = sorted(SOURCE_DIR.glob("*.c"))
HEADERS = sorted(SOURCE_DIR.glob("*.h"))
SUFFIX = ".dll" if sys.platform == "win32" else ".so"

# x86-64 micro-architecture levels as /proc/cpuinfo names their features (abm = lzcnt)
_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"})
_V3 = _V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str  # the machine() it runs on; "any" for the portable build
    flags: tuple[str, ...]
    requires: frozenset[str]


# best first: a CPU runs the first one whose `requires` it has
VARIANTS = (
    Variant("avx512-vnni-bf16", "x86_64", ("-march=x86-64-v4", "-mavx512vnni", "-mavx512bf16"),
            _V4 | {"avx512_vnni", "avx512_bf16"}),
    Variant("avx512-vnni", "x86_64", ("-march=x86-64-v4", "-mavx512vnni"), _V4 | {"avx512_vnni"}),
    Variant("avx-vnni", "x86_64", ("-march=x86-64-v3", "-mavxvnni"), _V3 | {"avx_vnni"}),
    Variant("avx2", "x86_64", ("-march=x86-64-v3",), _V3),
    # no -march beyond the architecture's baseline (compilers may default to a higher level)
    Variant("generic", "any", (), frozenset()),
)  # fmt: skip
BY_NAME = {v.name: v for v in VARIANTS}
COMMON_FLAGS = ("-O3", "-mtune=generic", "-shared", "-fPIC")


def variant_flags(variant: Variant) -> tuple[str, ...]:
    if variant.name == "generic" and machine() == "x86_64":
        return ("-march=x86-64",)
    return variant.flags


def runnable(features: frozenset[str]) -> list[Variant]:
    """The variants this machine's architecture and `features` can run, best first."""
    arch = machine()
    return [v for v in VARIANTS if v.arch in (arch, "any") and v.requires <= features]


def sources_hash() -> str:
    digest = hashlib.sha256()
    for src in (*SOURCES, *HEADERS):
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    return digest.hexdigest()


INSTALL_HINT = "install one (Debian/Ubuntu: apt-get install gcc) or point CC at one"


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which(
        "clang")  # fmt: skip


def _check_compiler(cc: str | None) -> str:
    """`cc` when it names a program that runs; else OSError saying how to get one."""
    if cc is None:
        raise OSError(f"no C compiler found (gcc, cc or clang on PATH, or $CC): {INSTALL_HINT}")
    if shutil.which(cc) is None:
        origin = " ($CC)" if os.environ.get("CC") == cc else ""
        raise OSError(f"the C compiler {cc}{origin} is not found or cannot run: {INSTALL_HINT}")
    return cc


def compiler_id(cc: str) -> str:
    """The compiler's identity for a cache key: its path, version and target."""
    parts = [cc]
    for arg in ("--version", "-dumpmachine"):
        try:
            out = subprocess.run([cc, arg], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        parts.append((out.splitlines() or [""])[0].strip())
    return " ".join(parts)


def cache_key(variant: Variant, cc_id: str) -> str:
    """The name part that changes whenever sources, compiler, flags or variant do."""
    text = json.dumps([variant.name, sorted(variant.requires), variant_flags(variant),
                       COMMON_FLAGS, cc_id, sources_hash()])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_name(variant: Variant, key: str) -> str:
    return f"opengemma-kernels-{variant.name}-{key}{SUFFIX}"


def _run_compiler(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)


def build(variant: Variant, directory: Path, cc: str | None = None) -> Path:
    """Compile `variant` into `directory` (atomically, with its manifest); returns the library.

    Raises OSError without a compiler or a writable `directory`, subprocess.CalledProcessError
    when compilation fails. Processes building the same variant at once each write whole files
    under temporary names and rename them into place: the library and its manifest appear whole,
    and a process only ever loads a complete library."""
    cc = _check_compiler(cc or compiler())
    cc_id = compiler_id(cc)
    key = cache_key(variant, cc_id)
    target = Path(directory) / library_name(variant, key)
    flags = [*COMMON_FLAGS, *variant_flags(variant), f'-DOG_VARIANT="{variant.name}"']
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = AtomicPath(target)  # removed on any failure below
    except OSError as exc:
        why = exc.strerror or exc
        raise OSError(f"cannot write kernels into {target.parent} ({why}): use a writable "
                      "folder (the cache: set OPENGEMMA_CACHE)") from exc  # fmt: skip
    with out as tmp:
        base = [cc, *flags, *map(str, SOURCES), "-o", str(tmp), "-lm"]
        try:
            _run_compiler([*base[:1], "-fopenmp", *base[1:]])
            openmp = True
        except subprocess.CalledProcessError:  # e.g. Apple clang: no OpenMP; one thread
            _run_compiler(base)
            openmp = False
    manifest = {
        "variant": variant.name, "requires": sorted(variant.requires), "arch": machine(),
        "flags": [*flags, *(["-fopenmp"] if openmp else [])], "compiler": cc_id,
        "sources": sources_hash(), "library": target.name,
    }  # fmt: skip
    # the manifest last: a loader takes a library only through its manifest
    write_atomic(target.with_suffix(".json"), json.dumps(manifest, indent=1) + "\n")
    return target


def find_built(directory: Path, variant: Variant) -> Path | None:
    """A library of `variant` in `directory` built from the shipped sources, per its manifest."""
    digest = sources_hash()
    for meta in sorted(Path(directory).glob(f"opengemma-kernels-{variant.name}-*.json")):
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        lib = meta.with_name(str(info.get("library", "")))
        if (info.get("variant") == variant.name and info.get("sources") == digest
                and set(info.get("requires", ())) <= variant.requires
                and info.get("arch") in (machine(), None) and lib.is_file()):  # fmt: skip
            return lib
    return None
