"""The engines measured by `opengemma bench`, each driven the same way, in a child process.

A job (a JSON dict) names the engine, the model file, the thread count and the token ids; the
child loads the engine, warms it up, times `repeats` greedy generations (a timestamp per token),
optionally a batched decode and the perplexity windows, and writes a JSON result. Peers are
imported only here, only in their own child: `llama-cpp-python` and `transformers`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from opengemma.atomic import write_atomic
from opengemma.build import weight_bytes
from opengemma.errors import OpenGemmaError

# opengemma-f32: opengemma's exact float32 path on the same file (the quality reference)
ENGINES = ("opengemma", "opengemma-f32", "llama.cpp", "transformers")


class BenchmarkError(OpenGemmaError):
    """A benchmark cannot run as asked (missing input, bad option, no engine left)."""


def measure_bandwidth(threads: int, mib: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Memory read bandwidth in GB/s: a float32 sum over `mib` MiB, and a matrix-vector product
    with a float32 matrix of 640 columns (Gemma 3 270M's width) and up to 262144 rows (its
    output projection)."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    x = torch.ones(mib * (1 << 20) // 4)
    w, v = torch.ones(min(262144, mib * (1 << 20) // (4 * 640)), 640), torch.ones(1, 640)

    def rate(fn, nbytes: int) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return nbytes / statistics.median(times) / 1e9

    sum_gbs = rate(lambda: x.sum(), x.numel() * 4)
    matvec_gbs = rate(lambda: F.linear(v, w), w.numel() * 4)
    return {
        "sum_gbs": sum_gbs,
        "matvec_gbs": matvec_gbs,
        "gbs": max(sum_gbs, matvec_gbs),
        "threads": torch.get_num_threads(),
    }


class _OpenGemma:
    """opengemma through its public API: `load()`, `generate_step`, batched `model(...)`."""

    def __init__(self, job: dict[str, Any]):
        import torch

        import opengemma

        options = dict(job["load_options"])
        if job["threads"]:
            torch.set_num_threads(job["threads"])
            options.setdefault("threads", job["threads"])  # not load()'s own automatic choice
        start = time.perf_counter()
        self.lm = opengemma.load(job["model"], dtype=job["dtype"], **options)
        self.load_s = time.perf_counter() - start
        self.threads = {"decode": torch.get_num_threads(), "batch": torch.get_num_threads()}
        self.info = {"weight_bytes": weight_bytes(self.lm.model), "dtype": str(self.lm.model.dtype),
                     "decode_path": _decode_path(self.lm)}  # fmt: skip

    def generate(self, ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        from opengemma.generate import generate_step
        from opengemma.sampling import Sampler, SamplingParams

        sampler = Sampler(SamplingParams(temperature=0.0), prompt_len=len(ids))
        stamps, tokens = [], []
        t0 = time.perf_counter()
        for token in generate_step(self.lm.model, ids, sampler, n):
            stamps.append(time.perf_counter())
            tokens.append(int(token))
        return t0, stamps, tokens

    def batch_decode(self, prompts: list[list[int]], n: int) -> float:
        """Seconds for `n` greedy steps of all prompts at once (one cache per row)."""
        import torch

        from opengemma.generate import prefill

        model = self.lm.model
        caches = [model.new_cache(len(p) + n + 1) for p in prompts]
        with torch.inference_mode():
            first = [
                int(prefill(model, p, c).argmax()) for p, c in zip(prompts, caches, strict=True)
            ]
            tokens = torch.tensor(first).view(-1, 1)  # (B, 1)
            t0 = time.perf_counter()
            for _ in range(n):
                tokens = model(tokens, caches, last_only=True)[:, -1].argmax(-1, keepdim=True)
            return time.perf_counter() - t0

    def nll(self, ids: list[int]) -> float:
        """Summed negative log-likelihood (nats) of ids[1:] given their prefixes."""
        import torch
        import torch.nn.functional as F

        logits = self.lm.logits(ids)
        return float(F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum"))


class _OpenGemmaF32(_OpenGemma):
    """opengemma's float32 reference path: `load(dtype="float32")`, weights as stored."""

    def __init__(self, job: dict[str, Any]):
        super().__init__({**job, "dtype": "float32"})


class _LlamaCpp:
    """llama.cpp through llama-cpp-python's `Llama` on the same GGUF file."""

    def __init__(self, job: dict[str, Any]):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BenchmarkError(
                "llama-cpp-python is not installed; pip install 'opengemma[bench]'"
            ) from None
        if not str(job["model"]).endswith(".gguf"):
            raise BenchmarkError("llama.cpp needs a .gguf model file")
        self.job, self._ppl = job, None
        kw: dict[str, Any] = {"n_ctx": job["n_ctx"], "n_batch": 512, "verbose": False}
        if job["threads"]:
            kw.update(n_threads=job["threads"], n_threads_batch=job["threads"])
        start = time.perf_counter()
        self.llm = Llama(model_path=str(job["model"]), **kw)
        self.load_s = time.perf_counter() - start
        self.threads = {"decode": self.llm.n_threads, "batch": self.llm.n_threads_batch}
        self.info = {}

    def generate(self, ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        self.llm.reset()  # otherwise generate() reuses the cached prompt prefix
        stamps, tokens = [], []
        t0 = time.perf_counter()
        for token in self.llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0):
            stamps.append(time.perf_counter())
            tokens.append(int(token))
            if len(tokens) == n:
                break
        return t0, stamps, tokens

    def batch_decode(self, prompts: list[list[int]], n: int) -> float | None:
        return None  # the high-level Llama API decodes one sequence at a time

    def nll(self, ids: list[int]) -> float:
        import numpy as np
        from llama_cpp import Llama

        if self._ppl is None:  # logits for every position need a model built for it
            kw = {"n_ctx": self.job["ppl_window"], "n_batch": self.job["ppl_window"]}
            self._ppl = Llama(
                model_path=str(self.job["model"]),
                logits_all=True,
                verbose=False,
                n_threads=self.threads["decode"],
                **kw,
            )
        self._ppl.reset()
        self._ppl.eval(ids)
        scores = np.asarray(self._ppl.scores[: len(ids) - 1], dtype=np.float64)  # (T-1, V)
        top = scores.max(axis=1)
        lse = top + np.log(np.exp(scores - top[:, None]).sum(axis=1))
        return float((lse - scores[np.arange(len(ids) - 1), ids[1:]]).sum())


class _Transformers:
    """transformers' Gemma loading the same file (a GGUF is dequantized to float32)."""

    def __init__(self, job: dict[str, Any]):
        import torch

        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise BenchmarkError(
                "transformers is not installed; pip install transformers"
            ) from None
        if job["threads"]:
            torch.set_num_threads(job["threads"])
        path = Path(job["model"])
        gguf = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
        where = str(path.parent) if gguf else str(path)
        start = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **gguf)
        self.model.eval()
        self.load_s = time.perf_counter() - start
        self.threads = {"decode": torch.get_num_threads(), "batch": torch.get_num_threads()}
        self.info = {}

    def _generate(self, prompts: list[list[int]], n: int, streamer=None) -> None:
        import torch

        ids = torch.tensor(prompts)
        with torch.inference_mode():
            self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                streamer=streamer,
                pad_token_id=0,
            )

    def generate(self, ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        stamps, tokens = [], []

        class Stamps:  # generate() calls put() with the prompt, then once per new token
            def put(self, value) -> None:
                if value.numel() == 1:
                    stamps.append(time.perf_counter())
                    tokens.append(int(value.reshape(-1)[0]))

            def end(self) -> None:
                pass

        t0 = time.perf_counter()
        self._generate([ids], n, Stamps())
        return t0, stamps, tokens

    def batch_decode(self, prompts: list[list[int]], n: int) -> float:
        t0 = time.perf_counter()
        self._generate(prompts, 1)
        t1 = time.perf_counter()
        self._generate(prompts, n + 1)
        return (time.perf_counter() - t1) - (t1 - t0)

    def nll(self, ids: list[int]) -> float:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            logits = self.model(torch.tensor([ids])).logits[0].float()
        return float(F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum"))


_ADAPTERS = {"opengemma": _OpenGemma, "opengemma-f32": _OpenGemmaF32, "llama.cpp": _LlamaCpp,
             "transformers": _Transformers}  # fmt: skip


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _decode_path(lm) -> str:
    """Which one-token step opengemma runs: the native call, or PyTorch and why."""
    from opengemma.native_decode import native_unsupported

    if lm.model.native_decoder is not None:
        return "native step"
    if getattr(lm, "quant", "none") != "q8":
        return f"PyTorch ({lm.model.dtype})"
    lacking = native_unsupported(lm.config)
    why = f"the native step lacks {', '.join(lacking)}" if lacking else "no native kernels"
    return f"PyTorch int8 ({why})"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One engine, in this process: load, warm up, timed runs, batch decode, perplexity."""
    if job["engine"] == "bandwidth":
        return measure_bandwidth(job["threads"], job["bandwidth_mib"])
    engine = _ADAPTERS[job["engine"]](job)
    out: dict[str, Any] = {"load_s": engine.load_s, "threads": engine.threads, **engine.info}
    if job["speed"]:
        prompt, n = job["prompt_ids"], job["decode_tokens"] + 1  # +1: the prefill's token
        engine.generate(prompt[:16], 4)  # warm-up: lazy initialisation, allocator
        runs = [engine.generate(prompt, n) for _ in range(job["repeats"])]
        out["ttft_s"] = [s[0] - t0 for t0, s, _ in runs]
        out["decode_tps"] = [(len(s) - 1) / (s[-1] - s[0]) for _, s, _ in runs]
        out["tokens"] = runs[0][2]
        if job["batch_ids"]:
            secs = [
                engine.batch_decode(job["batch_ids"], job["decode_tokens"])
                for _ in range(job["repeats"])
            ]
            out["batch_tps"] = [len(job["batch_ids"]) * job["decode_tokens"] / s for s in secs if s]
        out["peak_rss"] = _peak_rss()
    if job["windows"]:
        out["nll"] = sum(engine.nll(w) for w in job["windows"])
        out["nll_tokens"] = sum(len(w) - 1 for w in job["windows"])
    return out


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1))


def _child_main(job_path: str, out_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    try:
        result = run_job(job)
    except OpenGemmaError as exc:
        result = {"error": str(exc)}
    write_json(Path(out_path), result)


if __name__ == "__main__":  # a child process: python -m opengemma.benchmark.engines JOB OUT
    _child_main(sys.argv[1], sys.argv[2])
