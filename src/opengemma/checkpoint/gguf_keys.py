"""GGUF metadata keys opengemma reads or writes, and the value types each must have.

The reader checks every key listed here that a file holds (a hostile file cannot pass a string
where a count belongs), and that the vocabulary arrays line up item for item. The writer and the
loader share the `opengemma.*` keys from here.
"""

from __future__ import annotations

# GGUF value types (gguf.GGUFValueType)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
UINT64, INT64, FLOAT64 = 10, 11, 12
TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32",
              6: "FLOAT32", 7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64",
              12: "FLOAT64"}  # fmt: skip
INTEGER = frozenset({UINT8, INT8, UINT16, INT16, UINT32, INT32, UINT64, INT64})
NUMBER = INTEGER | {FLOAT32, FLOAT64}

# Fields llama.cpp derives from the architecture instead of reading; opengemma writes them so
# configs that differ from the published models survive a round trip.
QPAS_KEY = "opengemma.query_pre_attn_scalar"
LOCAL_BASE_KEY = "opengemma.rope_local_freq_base"

# architectures whose `{arch}.*` keys below are checked
ARCHS = ("gemma", "gemma2", "gemma3", "gemma4", "gemma-embedding")
# EmbeddingGemma's two sentence-transformers Dense layers (2_Dense, 3_Dense), as llama.cpp's
# converter names them; not decoder tensors (opengemma.embed reads them)
EMBED_HEAD_TENSORS = ("dense_2.weight", "dense_3.weight")

# key -> allowed scalar value types; "{arch}" stands for general.architecture
SCALARS: dict[str, frozenset[int]] = {
    "general.architecture": frozenset({STRING}),
    "general.name": frozenset({STRING}),
    "general.alignment": frozenset({UINT32}),  # gguf's own reader accepts nothing else
    "general.file_type": INTEGER,
    "general.quantization_version": INTEGER,
    "{arch}.context_length": INTEGER,
    "{arch}.embedding_length": INTEGER,
    "{arch}.block_count": INTEGER,
    "{arch}.feed_forward_length": INTEGER | {ARRAY},  # Gemma 4: once per layer
    "{arch}.attention.head_count": INTEGER,
    "{arch}.attention.head_count_kv": INTEGER | {ARRAY},  # Gemma 4: once per layer
    "{arch}.attention.key_length_swa": INTEGER,
    "{arch}.attention.value_length_swa": INTEGER,
    "{arch}.attention.shared_kv_layers": INTEGER,
    "{arch}.embedding_length_per_layer_input": INTEGER,
    "{arch}.expert_count": INTEGER,
    "{arch}.expert_used_count": INTEGER,
    "{arch}.expert_feed_forward_length": INTEGER,
    "{arch}.rope.freq_base_swa": NUMBER,
    "{arch}.rope.dimension_count": INTEGER,
    "{arch}.rope.dimension_count_swa": INTEGER,
    "{arch}.attention.key_length": INTEGER,
    "{arch}.attention.value_length": INTEGER,
    "{arch}.attention.sliding_window": INTEGER,
    "{arch}.attention.layer_norm_rms_epsilon": NUMBER,
    "{arch}.rope.freq_base": NUMBER,
    "{arch}.rope.scaling.factor": NUMBER,
    "{arch}.attn_logit_softcapping": NUMBER,
    "{arch}.final_logit_softcapping": NUMBER,
    "{arch}.pooling_type": INTEGER,
    "{arch}.dense_2_feat_in": INTEGER,
    "{arch}.dense_2_feat_out": INTEGER,
    "{arch}.dense_3_feat_in": INTEGER,
    "{arch}.dense_3_feat_out": INTEGER,
    "tokenizer.ggml.model": frozenset({STRING}),
    "tokenizer.ggml.bos_token_id": INTEGER,
    "tokenizer.ggml.eos_token_id": INTEGER,
    "tokenizer.ggml.unknown_token_id": INTEGER,
    "tokenizer.ggml.padding_token_id": INTEGER,
    "tokenizer.ggml.add_bos_token": frozenset({BOOL}),
    "tokenizer.ggml.add_eos_token": frozenset({BOOL}),
    QPAS_KEY: NUMBER,
    LOCAL_BASE_KEY: NUMBER,
}

# key -> allowed element types of an array
ARRAYS: dict[str, frozenset[int]] = {
    "tokenizer.ggml.tokens": frozenset({STRING}),
    "tokenizer.ggml.scores": frozenset({FLOAT32, FLOAT64}),
    "tokenizer.ggml.token_type": INTEGER,
    "tokenizer.ggml.merges": frozenset({STRING}),
}

# arrays that describe the same vocabulary item by item: their lengths must agree
ALIGNED = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def type_name(vtype: int) -> str:
    return TYPE_NAMES.get(vtype, str(vtype))
