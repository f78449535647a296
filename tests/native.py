"""The native kernels, or a test failure that says how to get them (never a silent fallback:
a test of the C kernels that ran the PyTorch path instead would compare the fallback with
itself)."""

from __future__ import annotations

import pytest


def built_kernels():
    """The loaded kernel library; fails the test when it cannot be built or loaded here."""
    from opengemma.kernels import kernel_info, native

    lib = native()
    if lib is None:
        pytest.fail(
            f"the native kernels are not available here ({kernel_info()['reason']}); they are "
            "built on first use with a C compiler: install one (Debian/Ubuntu: apt-get install "
            "gcc), or point CC at it, and unset OPENGEMMA_NO_NATIVE",
            pytrace=False,
        )
    return lib
