"""Fixtures of the evaluation tests: a tiny random Gemma 3 checkpoint whose tokenizer both
opengemma and transformers read identically, so both backends score the very same ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# the normal pieces of the tiny vocabulary: single characters only, so SentencePiece's BPE and
# the BPE that transformers converts from tokenizer.model cannot merge differently
TINY_CHARS = "▁etaoinsrhldcumfpg"


@dataclass
class TinyModel:
    path: Path  # config.json + model.safetensors + tokenizer.model + tokenizer_config.json
    reference: torch.nn.Module  # the transformers model the files were saved from


def _tiny_tokenizer(path: Path, embedded_path: Path) -> None:
    from tests.tiny import VOCAB

    from opengemma.tokenizer import Tokenizer

    full = Tokenizer.from_gguf(embedded_path).model_proto
    proto = type(full)()
    proto.CopyFrom(full)
    del proto.pieces[VOCAB:]
    normal = [p for p in proto.pieces if p.type == 1]  # NORMAL
    assert len(normal) == len(TINY_CHARS)
    for rank, (piece, char) in enumerate(zip(normal, TINY_CHARS, strict=True)):
        piece.piece, piece.score = char, -float(rank + 1)
    (path / "tokenizer.model").write_bytes(proto.SerializeToString())
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "add_bos_token": True,
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_path) -> TinyModel:
    from tests.tiny import build_reference, family_config, save_reference

    path = tmp_path_factory.mktemp("tiny_eval_gemma3")
    reference = build_reference(family_config("gemma3"), seed=0)
    with torch.no_grad():  # a smaller embedding: varied greedy text instead of one repeated token
        reference.model.embed_tokens.weight.mul_(0.1)
    save_reference(reference, path)
    _tiny_tokenizer(path, embedded_path)
    return TinyModel(path, reference)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model):
    import opengemma

    return opengemma.load(str(tiny_model.path), dtype="float32")


def _reference_nll(model, ids: list[int], bos: int, context: int, stride: int) -> tuple[float, int]:
    """(summed NLL in nats, scored tokens) by the recipe of the transformers guide "Perplexity
    of fixed-length models", with a BOS at the head of every window: labels -100 on positions
    already scored, the loss computed by the transformers model itself."""
    span, total, count, prev_end = context - 1, 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + span, len(ids))
        trg_len = end - prev_end
        input_ids = torch.tensor([[bos] + ids[begin:end]])
        labels = input_ids.clone()
        labels[:, : input_ids.shape[1] - trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=labels).loss
        total += float(loss) * trg_len
        count += trg_len
        prev_end = end
        if end == len(ids):
            break
    return total, count


@pytest.fixture(scope="session")
def reference_nll():
    return _reference_nll


QUESTIONS = [
    ("Which one is a fruit?", ["apple", "stone", "river"], 0),
    ("The sky at noon is", ["green", "blue", "loud"], 1),
    ("Two plus two is", [" four", " nine", " zero", " one"], 0),
    ("Cats say", ["meow", "moo"], 0),
    ("A hot drink:", ["tea", "ice", "snow"], 0),
    ("Opposite of up:", ["left", "down", "in"], 1),
    ("Héllo in French café style:", ["bonjour", "hola"], 0),
    ("", ["empty context", "still scored"], 1),
]
STOPS = ["\n", "]", "</"]


def _write_task(root: Path) -> Path:
    """A multiple-choice task (YAML + JSONL) in `root`, loadable with include_path=root."""
    data = root / "tiny_mc.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS
        )
    )
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "Q: {{question}}\\nA:"\n'
        'doc_to_target: "{{choices[answer]}}"\n'
        f"generation_kwargs:\n  until: {json.dumps(STOPS)}\n  max_gen_toks: 12\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return root


@pytest.fixture()
def eval_task(tmp_path) -> tuple[Path, list, list[str]]:
    """(folder with tiny_mc.yaml + tiny_gen.yaml + data, the questions, the stop strings)."""
    return _write_task(tmp_path), QUESTIONS, STOPS
