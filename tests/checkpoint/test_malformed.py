"""Hostile and damaged files: each is refused with a CheckpointError naming the file, without a
large allocation, and `opengemma info` reports it in one line with exit status 1."""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch

from opengemma.checkpoint import CheckpointError, load_checkpoint
from opengemma.cli import main
from tests.checkpoint import malformed as M

ALLOC_LIMIT = 8 * 1024 * 1024  # bytes: a refused file may cost a little parsing, never its claims


def _hf_dir(root: Path, name: str, config: dict | None = None, index: dict | None = None) -> Path:
    d = root / name
    d.mkdir()
    cfg = {"model_type": "gemma3_text", "vocab_size": M.VOCAB, "hidden_size": M.HIDDEN,
           "intermediate_size": M.FFN, "num_hidden_layers": 1, "num_attention_heads": M.HEADS,
           "num_key_value_heads": M.KV, "head_dim": M.HEAD_DIM, "sliding_window": 8}  # fmt: skip
    (d / "config.json").write_text(json.dumps(config if config is not None else cfg))
    if index is not None:
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d


class _Exploit:
    """Pickles to a call of os.system: the classic model-file code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _dir_cases(root: Path) -> dict[str, Path]:
    """Malformed Hugging Face directories and .ckpt files."""
    out = {}
    outside = root / "outside.safetensors"
    outside.write_bytes(M.st_bytes(M._ok_header(), b"\0" * 24))
    out["index_parent_escape"] = _hf_dir(
        root, "esc", index={"weight_map": {"a": "../outside.safetensors"}}
    )
    out["index_absolute_path"] = _hf_dir(root, "abs", index={"weight_map": {"a": str(outside)}})
    link = _hf_dir(root, "link", index={"weight_map": {"a": "shard.safetensors"}})
    (link / "shard.safetensors").symlink_to(outside)
    out["index_symlink_escape"] = link
    out["index_not_json"] = _hf_dir(root, "badidx")
    (out["index_not_json"] / "model.safetensors.index.json").write_text("{")
    out["config_layers_absurd"] = _hf_dir(root, "layers", {"model_type": "gemma", "vocab_size": 8,
        "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 10**9,
        "num_attention_heads": 1})  # fmt: skip
    out["config_not_json"] = _hf_dir(root, "cfgjson")
    (out["config_not_json"] / "config.json").write_text("{'model_type': 'gemma'")
    out["config_not_gemma"] = _hf_dir(root, "llama", {"model_type": "llama"})
    wrong = _hf_dir(root, "wrongshape")
    (wrong / "model.safetensors").write_bytes(M.st_bytes(
        {"model.embed_tokens.weight": {"dtype": "F32", "shape": [M.VOCAB, 3],
                                        "data_offsets": [0, M.VOCAB * 12]}},
        b"\0" * (M.VOCAB * 12)))  # fmt: skip
    out["tensor_shape_not_config"] = wrong
    ints = _hf_dir(root, "int8")
    (ints / "model.safetensors").write_bytes(M.st_bytes(
        {"model.norm.weight": {"dtype": "I8", "shape": [M.HIDDEN], "data_offsets": [0, M.HIDDEN]}},
        b"\0" * M.HIDDEN))  # fmt: skip
    out["int8_tensor"] = ints
    marker = root / "pwned"
    bad = root / "exploit.ckpt"
    torch.save(
        {"model_state_dict": {"embedder.weight": torch.zeros(2)}, "x": _Exploit(marker)}, bad
    )
    out["ckpt_pickled_code"] = bad
    notorch = root / "plain.ckpt"
    with zipfile.ZipFile(notorch, "w") as z:
        z.writestr("hello.txt", "not a torch archive")
    out["ckpt_not_torch_zip"] = notorch
    trunc = root / "trunc.ckpt"
    good = root / "good.ckpt"
    torch.save({"model_state_dict": {"embedder.weight": torch.zeros(64, 8)}}, good)
    trunc.write_bytes(good.read_bytes()[:300])
    out["ckpt_truncated"] = trunc
    out["ckpt_not_a_state_dict"] = root / "list.ckpt"
    torch.save([torch.zeros(2)], out["ckpt_not_a_state_dict"])
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("malformed")
    cases = {f"gguf_{n}": M.write_gguf_case(n, root) for n in M.GGUF_CASES}
    for name, data in M.ST_CASES.items():
        d = _hf_dir(root, f"st_{name}")
        (d / "model.safetensors").write_bytes(data)
        cases[f"safetensors_{name}"] = d
    cases.update(_dir_cases(root))
    return cases


def test_corpus_is_large():
    assert len(M.GGUF_CASES) + len(M.ST_CASES) >= 30


def test_valid_seed_loads(tmp_path):
    """The corpus' base file is a valid model: each case fails because of its one defect."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(M.GGUFSpec().build())
    ckpt = load_checkpoint(path)
    assert ckpt.config.hidden_size == M.HIDDEN and len(ckpt.tensors) == len(M.model_tensors())


def _refusal(path: Path) -> str | None:
    """None when `path` is refused properly, else what went wrong."""
    tracemalloc.start()
    try:
        load_checkpoint(path)
        return "loaded without error"
    except CheckpointError as exc:
        if path.name not in str(exc):
            return f"message does not name the file: {exc}"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return f"{peak} bytes allocated before refusing" if peak > ALLOC_LIMIT else None


def test_every_malformed_file_is_refused_cheaply(corpus):
    problems = {name: p for name, path in corpus.items() if (p := _refusal(path))}
    assert not problems


def test_pickled_code_never_runs(corpus, tmp_path):
    with pytest.raises(CheckpointError, match="never pickled code"):
        load_checkpoint(corpus["ckpt_pickled_code"])
    assert not (corpus["ckpt_pickled_code"].parent / "pwned").exists()


def test_info_prints_one_line_error(corpus, capsys):
    for name, path in corpus.items():
        code = main(["info", str(path)])
        err = capsys.readouterr().err
        assert code == 1, name
        assert err.startswith("opengemma: error: ") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err


# case -> the metadata key its error must name
KEY_CASES = {
    "alignment_uint64": "general.alignment", "alignment_int32": "general.alignment",
    "alignment_float": "general.alignment", "alignment_wrong_type": "general.alignment",
    "architecture_not_string": "general.architecture", "rope_base_string": "gemma3.rope.freq_base",
    "bos_id_float": "tokenizer.ggml.bos_token_id",
    "add_bos_not_bool": "tokenizer.ggml.add_bos_token",
    "tokens_not_array": "tokenizer.ggml.tokens", "tokens_array_of_numbers": "tokenizer.ggml.tokens",
    "scores_array_of_strings": "tokenizer.ggml.scores",
    "vocab_arrays_misaligned": "tokenizer.ggml.token_type",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_known_key_of_wrong_type_is_named(case, tmp_path):
    path = M.write_gguf_case(case, tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert KEY_CASES[case] in str(err.value) and path.name in str(err.value)


def test_gguf_reader_agrees_on_alignment_type(tmp_path):
    """gguf's own reader refuses a non-UINT32 general.alignment too (the rule comes from it)."""
    from gguf import GGUFReader

    path = M.write_gguf_case("alignment_uint64", tmp_path)
    with pytest.raises(ValueError, match="alignment"):
        GGUFReader(path)
