"""Our GGUF output as llama.cpp sees it: the tokenizer metadata of a real model survives an
export byte for byte. (That llama.cpp itself runs a converted model is checked by
bench/check_llama_cpp_gguf.py, since llama-cpp-python is a benchmark extra.)"""

from __future__ import annotations

import numpy as np
import pytest

from opengemma.checkpoint.gguf_reader import GGUFFile


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
