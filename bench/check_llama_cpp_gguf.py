"""llama.cpp (llama-cpp-python, the `bench` extra) runs a GGUF written by `opengemma convert`.

A tiny random Gemma 3 is built with transformers, converted to GGUF by opengemma, and run by
llama.cpp; its logits must match transformers' within 1% of the largest logit.

    .venv/bin/python bench/check_llama_cpp_gguf.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.checkpoint.conftest import tiny_tokenizer_proto  # noqa: E402
from tests.tiny import build_reference, family_config, random_ids, save_reference  # noqa: E402

from opengemma.checkpoint.convert import convert  # noqa: E402


def main() -> int:
    import llama_cpp

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tiny"
        # llama.cpp derives the query scale from head_dim and the local RoPE base (10k) itself
        ref = build_reference(family_config("gemma3", query_pre_attn_scalar=16))
        save_reference(ref, src)
        (src / "tokenizer.model").write_bytes(tiny_tokenizer_proto().SerializeToString())
        out = convert(src, Path(tmp) / "t.gguf", "gguf", dtype="f32").path
        ids = random_ids(16)
        llm = llama_cpp.Llama(str(out), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
        llm.eval(ids[0].tolist())
        got = torch.tensor(np.array(llm.scores[: ids.shape[1]]), dtype=torch.float32)
        with torch.no_grad():
            want = ref(ids).logits[0]
    err = (got - want).abs().max().item() / want.abs().max().item()
    print(f"llama.cpp vs transformers on our GGUF: max |diff| = {err:.2%} of the largest logit")
    return 0 if err < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
