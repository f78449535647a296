"""Kernel variants: each against exact block arithmetic, all giving the same bits, and a build for
one set of CPU features never loaded on a CPU without them (features masked by the environment).

The variants this CPU can run are built into the cache on first use (a few seconds each); the
others are checked to be refused.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from opengemma.kernels import KernelUnavailable, build, cpu, load_variant
from opengemma.quantized_layers import BLOCK_BYTES, QK, quantize_q8, quantize_q8_0, split_q8_0

RUNNABLE = [v.name for v in build.runnable(cpu.detected_features())]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def libs():
    return {name: load_variant(name) for name in RUNNABLE}


def _linear(lib, x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    R, K = x.shape
    xq = torch.empty(R, K, dtype=torch.int8)
    xs = torch.empty(R, K // QK, dtype=torch.float32)
    out = torch.empty(R, blocks.shape[0], dtype=torch.float32)
    lib.q8_0_linear(x.data_ptr(), xq.data_ptr(), xs.data_ptr(), blocks.data_ptr(), out.data_ptr(),
                    R, blocks.shape[0], K, 1)  # fmt: skip
    return out


def _exact(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x @ W.T in exact block arithmetic: activations quantized per block of 32, each block's
    integer dot product exact (int64), times the two scales, summed in float64."""
    xq, xs = quantize_q8(x)
    wq, ws = split_q8_0(blocks)
    R, K = xq.shape
    dots = torch.einsum("rjk,njk->rnj", xq.reshape(R, -1, QK).long(),
                        wq.reshape(wq.shape[0], -1, QK).long())  # fmt: skip
    return (dots.double() * xs.double()[:, None, :] * ws.double()[None]).sum(-1)


def test_this_cpu_runs_the_portable_build_and_its_best_variant_first():
    assert RUNNABLE[-1] == "generic"
    order = [v.name for v in build.VARIANTS]
    assert RUNNABLE == sorted(RUNNABLE, key=order.index)


@pytest.mark.parametrize("rows", [1, 3, 5])
@pytest.mark.parametrize("width", [32, 64, 96, 160, 672])  # 1, 2, 3, 5, 21 blocks: every tail
def test_each_variant_matches_exact_block_arithmetic_and_the_others(libs, rows, width):
    torch.manual_seed(rows * 1000 + width)
    x = torch.randn(rows, width) * torch.logspace(-3, 2, width)  # scales over five decades
    blocks = quantize_q8_0(torch.randn(37, width) * 0.05)
    exact = _exact(x, blocks)
    results = {name: _linear(lib, x, blocks) for name, lib in libs.items()}
    for name, out in results.items():
        bound = 1e-5 * (exact.abs().max() + 1e-30)
        assert (out.double() - exact).abs().max() <= bound, name
    first = next(iter(results.values()))
    for name, out in results.items():  # the portable build computes the vector code's lanes
        assert torch.equal(out, first), name


def test_each_variant_quantizes_q8_0_as_the_gguf_package(libs):
    """The portable float16 rounding (no F16C) against numpy's, on scales that round up, to
    subnormal halves and to infinity."""
    torch.manual_seed(0)
    w = torch.randn(64, 96)
    w[0] *= 1e-6  # subnormal float16 scales
    w[1] *= 1e-9
    w[2, :32] = 65504.0 * 127  # a scale past float16's largest: infinity
    w[3] = 0.0
    expected = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0)
    for name, lib in libs.items():
        out = torch.empty(64, 96 // QK * BLOCK_BYTES, dtype=torch.uint8)
        lib.q8_0_quantize(w.data_ptr(), out.data_ptr(), 64, 96)
        assert np.array_equal(out.numpy(), expected), name


def test_each_variant_decodes_gguf_blocks_identically(libs):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(4, 256 // 256 * 210), dtype=np.uint8)  # Q6_K rows
    data[:, -2:] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)  # a finite scale
    expected = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q6_K)
    for name, lib in libs.items():
        out = np.empty((4, 256), dtype=np.float32)
        assert lib.gguf_dequantize(14, data.ctypes.data, 4, 256, out.ctypes.data, 1) == 0
        assert np.array_equal(out, expected), name


def test_masked_features_leave_only_the_variants_the_cpu_still_has(monkeypatch):
    monkeypatch.setenv(cpu.MASK_ENV, "sse4_2,ssse3,popcnt")
    assert [v.name for v in build.runnable(cpu.cpu_features())] == ["generic"]
    for name in ("avx512-vnni", "avx2"):
        with pytest.raises(KernelUnavailable, match="lacks: .*avx2"):
            load_variant(name)
    monkeypatch.setenv(cpu.MASK_ENV, "avx512f,avx512_vnni,made_up")  # cannot add features
    assert cpu.cpu_features() <= cpu.detected_features()


def test_feature_lists_of_each_system_are_read():
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\nCPU part : 0xd0c\n"
    assert "asimddp" in cpu._from_cpuinfo(arm)
    x86 = "model name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512_vnni\n"
    assert cpu._from_cpuinfo(x86) == {"fpu", "sse2", "avx2", "avx512_vnni"}
    assert cpu._from_cpuinfo("") == frozenset()


def test_cache_key_follows_compiler_flags_and_sources(monkeypatch):
    avx2, generic = build.BY_NAME["avx2"], build.BY_NAME["generic"]
    key = build.cache_key(avx2, "gcc 12")
    assert key == build.cache_key(avx2, "gcc 12")
    assert key != build.cache_key(avx2, "gcc 13") != build.cache_key(generic, "gcc 12")
    monkeypatch.setattr(build, "sources_hash", lambda: "edited")
    assert key != build.cache_key(avx2, "gcc 12")


def _subprocess_kernel(env: dict) -> dict:
    code = ("import json, opengemma.kernels as k; k.native();"
            "maps = open('/proc/self/maps').read();"
            "print(json.dumps({'info': k.kernel_info(), 'maps': maps}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_prebuilt_library_for_other_features_is_never_loaded(tmp_path):
    """A kernels directory (an image, a shared volume) holding a build for features this CPU
    (simulated by masking) lacks: the process picks the portable build and never maps the other
    library; with the features present it takes the better one."""
    best = build.BY_NAME[RUNNABLE[0]]
    fast = build.build(best, tmp_path)
    portable = build.build(build.BY_NAME["generic"], tmp_path)
    env = {"OPENGEMMA_KERNELS_DIR": str(tmp_path), "OPENGEMMA_CACHE": str(tmp_path / "cache")}
    masked = _subprocess_kernel({**env, cpu.MASK_ENV: "sse2"})
    assert masked["info"]["variant"] == "generic" and masked["info"]["source"] == "prebuilt"
    assert str(portable) in masked["maps"] and str(fast) not in masked["maps"]
    full = _subprocess_kernel(env)
    assert full["info"]["variant"] == best.name and str(fast) in full["maps"]
    # a manifest that lies about the sources (a stale build) is not taken either
    meta = fast.with_suffix(".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "sources": "0" * 64}))
    assert build.find_built(tmp_path, best) is None


def test_a_library_built_as_another_variant_is_refused(tmp_path):
    import opengemma.kernels as kernels

    lib = build.build(build.BY_NAME["generic"], tmp_path)
    with pytest.raises(KernelUnavailable, match="holds the generic kernels"):
        kernels._bind(lib, build.BY_NAME[RUNNABLE[0]] if len(RUNNABLE) > 1 else build.VARIANTS[0])
    assert isinstance(ctypes.CDLL(str(lib)).og_kernel_variant, ctypes._CFuncPtr)


def test_info_system_reports_features_and_the_variant(monkeypatch, capsys):
    from opengemma.cli import main

    assert main(["info", "--system", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kernel"]["variant"] in RUNNABLE
    assert report["runnable_variants"] == RUNNABLE
    assert set(report["features"]) <= cpu.detected_features()


def test_the_cpu_image_builds_the_kernels_and_ships_them_without_a_compiler():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = [s for s in text.split("\nFROM ")[1:]]
    assert len(stages) == 2 and stages[0].startswith("python:3.11-slim AS build")
    build_stage, final = stages
    assert "gcc" in build_stage and "opengemma build-kernels --variants all" in build_stage
    assert "gcc" not in final and "COPY --from=build /opt/venv /opt/venv" in final
    assert "libgomp1" in final  # the OpenMP runtime the libraries link against
    assert "i.get('source') == 'prebuilt'" in final  # the image build fails without them
