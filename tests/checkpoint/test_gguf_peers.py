"""Our GGUF output as llama.cpp sees it: the tokenizer metadata of a real model survives an
export byte for byte, and llama.cpp (the benchmark extra) runs a converted model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opengemma.checkpoint.gguf_reader import GGUFFile
from tests.tiny import random_ids


@pytest.mark.slow
def test_tokenizer_metadata_matches_llama_cpp_converter(embedded_path, tmp_path):
    """Re-exporting the embedded model's vocabulary reproduces llama.cpp's own arrays and ids."""
    from gguf import GGUFWriter

    from opengemma.checkpoint.gguf_writer import _add_tokenizer
    from opengemma.config import PRESETS
    from opengemma.tokenizer import Tokenizer

    src = GGUFFile(embedded_path)
    proto = Tokenizer.from_gguf(src).model_proto
    out = tmp_path / "vocab.gguf"
    w = GGUFWriter(out, "gemma3")
    _add_tokenizer(w, proto, PRESETS["gemma3-270m"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = GGUFFile(out).metadata
    for key, value in src.metadata.items():
        if key.startswith("tokenizer.ggml."):
            if key == "tokenizer.ggml.scores":
                np.testing.assert_array_equal(np.float32(ours[key]), np.float32(value))
            else:
                assert ours[key] == value, key


@pytest.mark.slow
def test_llama_cpp_runs_our_gguf(reference, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")  # the benchmark extra; the only skip here
    from opengemma.checkpoint.convert import convert

    # llama.cpp derives the query scale from head_dim and the local RoPE base (10k) itself
    src, ref = reference("gemma3", query_pre_attn_scalar=16)
    out = convert(src, tmp_path / "t.gguf", "gguf", dtype="f32").path
    ids = random_ids(16)
    llm = llama_cpp.Llama(str(out), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    llm.eval(ids[0].tolist())
    got = torch.tensor(np.array(llm.scores[: ids.shape[1]]), dtype=torch.float32)
    with torch.no_grad():
        want = ref(ids).logits[0]
    assert (got - want).abs().max().item() < 1e-2 * want.abs().max().item()
