"""What this CPU can run: its instruction-set features, read without executing any of them.

Linux lists them in /proc/cpuinfo ("flags" on x86, "Features" on ARM), macOS in sysctl; elsewhere
(Windows, unknown systems) the set is empty, which selects the portable kernels. The set is in
Linux's spelling (avx2, avx512_vnni, f16c, ...) whatever the source.

$OPENGEMMA_CPU_FEATURES masks the set (a comma- or space-separated list: only features both
detected and listed count), to run a CPU's narrower kernels or to simulate an older CPU; it can
never add a feature the CPU lacks.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys

MASK_ENV = "OPENGEMMA_CPU_FEATURES"

# macOS sysctl names -> Linux /proc/cpuinfo names, where they differ
_DARWIN_NAMES = {
    "avx1.0": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi1": "bmi1", "bmi2": "bmi2",
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "ssse3": "ssse3", "popcnt": "popcnt",
    "movbe": "movbe", "xsave": "xsave", "cx16": "cx16", "lahf": "lahf_lm", "lzcnt": "abm",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512cd": "avx512cd",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
}  # fmt: skip


def machine() -> str:
    """The CPU architecture, normalised: x86_64, aarch64, or what platform reports."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _from_cpuinfo(text: str) -> frozenset[str]:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _from_sysctl() -> frozenset[str]:
    words: set[str] = set()
    for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features"):
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                                 timeout=5, check=False).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        words.update(w.lower() for w in out.split())
    return frozenset(_DARWIN_NAMES[w] for w in words if w in _DARWIN_NAMES)


@functools.cache
def detected_features() -> frozenset[str]:
    """The features the operating system reports for this CPU (empty when it reports none)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                return _from_cpuinfo(f.read())
        except OSError:
            return frozenset()
    if sys.platform == "darwin" and machine() == "x86_64":
        return _from_sysctl()
    return frozenset()


def cpu_features() -> frozenset[str]:
    """The features kernels may use here: the detected ones, masked by $OPENGEMMA_CPU_FEATURES."""
    found = detected_features()
    mask = os.environ.get(MASK_ENV)
    if mask is None:
        return found
    return found & frozenset(mask.replace(",", " ").split())
