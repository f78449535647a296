"""The rest of opengemma on a tiny Gemma 4 model: its chat template (chosen from the
vocabulary), the multimodal checkpoint shape, LoRA on the new projections, the lm-eval backend,
the guard, the watermark and the server, each run end to end once."""

from __future__ import annotations

import logging

import pytest
import torch

import opengemma
from tests.checkpoint.conftest import tiny_tokenizer_proto
from tests.gemma4_tiny import build_gemma4, gemma4_config
from tests.tiny import ours_from_dir, random_ids, save_reference


def gemma4_tokenizer_proto():
    """The tiny Gemma tokenizer with Gemma 4's turn markers in place of Gemma 3's, and the
    classifier's answer words as pieces of their own."""
    proto = tiny_tokenizer_proto()
    for piece in proto.pieces:
        piece.piece = {"<start_of_turn>": "<|turn>", "<end_of_turn>": "<turn|>"}.get(
            piece.piece, piece.piece)  # fmt: skip
    proto.pieces[-2].piece, proto.pieces[-1].piece = "Yes", "No"
    return proto


@pytest.fixture(scope="module")
def g4_dir(tmp_path_factory):
    ref = build_gemma4(gemma4_config("ple-kvshare", max_position_embeddings=1024))
    path = save_reference(ref, tmp_path_factory.mktemp("g4"))
    (path / "tokenizer.model").write_bytes(gemma4_tokenizer_proto().SerializeToString())
    return path


@pytest.fixture(scope="module")
def lm(g4_dir):
    return opengemma.load(g4_dir, dtype="float32", threads=1)


def test_gemma4_chat_template_has_a_system_turn(lm):
    tok = lm.tokenizer
    assert tok.chat_style == "gemma4"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "<|turn>x"}]
    ids = opengemma.chat.chat_prompt_ids(tok, messages)
    start, end = tok.piece_to_id("<|turn>"), tok.piece_to_id("<turn|>")
    want = ("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nhi<turn|>\n"
            "<|turn>model\nok<turn|>\n<|turn>user\n<|turn>x<turn|>\n<|turn>model\n")  # fmt: skip
    assert tok.decode(ids, skip_special=False) == want
    # the typed marker is text, not a turn: exactly five real turn starts
    assert ids.count(start) == 5 and ids.count(end) == 4
    assert end in lm.stop_ids


def test_gemma3_vocabulary_keeps_the_gemma3_template(tmp_path):
    from opengemma.tokenizer import Tokenizer

    (tmp_path / "t.model").write_bytes(tiny_tokenizer_proto().SerializeToString())
    tok = Tokenizer.from_file(tmp_path / "t.model")
    assert tok.chat_style == "gemma" and tok.start_of_turn_id == tok.piece_to_id("<start_of_turn>")


def test_multimodal_checkpoint_loads_its_language_model(tmp_path, caplog):
    """A Gemma4ForConditionalGeneration checkpoint: the text decoder is taken, the vision
    tower skipped with a one-line notice, and the logits are the text model's."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    text = gemma4_config("k-eq-v")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16)  # fmt: skip
    cfg = Gemma4Config(text_config=text.to_dict(), vision_config=vision, audio_config=None)
    torch.manual_seed(0)
    full = Gemma4ForConditionalGeneration(cfg).eval()
    path = save_reference(full, tmp_path / "mm")
    with caplog.at_level(logging.WARNING, logger="opengemma.checkpoint"):
        ours = ours_from_dir(path)
    assert any("vision/audio tensors skipped" in r.getMessage() for r in caplog.records)
    ids = random_ids(20)
    with torch.no_grad():
        want = full(input_ids=ids).logits
        torch.testing.assert_close(ours(ids), want, atol=1e-4, rtol=0)


def test_lora_wraps_the_per_layer_projections(g4_dir):
    from opengemma.lora import LoRAConfig, apply_lora, parse_targets

    model = ours_from_dir(g4_dir)
    targets = parse_targets("q,v,per_layer_input_gate,per_layer_projection")
    wrapped = apply_lora(model, LoRAConfig(targets=targets))
    assert any(n.endswith("per_layer_input_gate") for n in wrapped)
    assert any(n.endswith("per_layer_projection") for n in wrapped)
    ids = random_ids(12)
    with torch.no_grad():
        base = ours_from_dir(g4_dir)(ids)
        torch.testing.assert_close(model(ids), base, atol=1e-5, rtol=0)  # B starts at zero


def test_lm_eval_backend_scores_with_gemma4(lm):
    from lm_eval.api.instance import Instance

    from opengemma.eval.lm_eval_backend import OpenGemmaEvalLM

    backend = OpenGemmaEvalLM(lm=lm, batch_size=2)
    reqs = [Instance("loglikelihood", {}, ("the cat", " sat"), 0),
            Instance("loglikelihood", {}, ("the cat", " ran"), 1)]  # fmt: skip
    out = backend.loglikelihood(reqs)
    ids = lm.tokenizer.encode("the cat sat")
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids])), -1)[0]
    cont = lm.tokenizer.encode_plain(" sat")
    want = sum(float(logp[len(ids) - len(cont) - 1 + j, t]) for j, t in enumerate(cont))
    assert out[0][0] == pytest.approx(want, abs=1e-3)


def test_guard_scores_with_gemma4(lm):
    from opengemma.safety.classifier import SafetyClassifier
    from opengemma.safety.guard import Guard

    verdict = Guard(SafetyClassifier(lm)).check_prompt("hello there")
    scores = list(verdict.scores.values())
    assert scores and all(0.0 <= p <= 1.0 for p in scores)


def test_watermark_is_detected_on_gemma4(lm):
    from opengemma.safety.watermark import detect_ids, keygen

    cfg = keygen(depth=8)
    from opengemma.generate import stream_generate
    from opengemma.safety.watermark import WatermarkProcessor
    from opengemma.sampling import Sampler, SamplingParams

    prompt = lm.tokenizer.encode("the")
    sampler = Sampler(SamplingParams(temperature=20.0, seed=1), extra=[WatermarkProcessor(cfg)],
                      prompt_len=len(prompt))  # fmt: skip
    # no stop tokens: a random tiny model ends early otherwise
    chunks = stream_generate(lm.model, lm.tokenizer, prompt, sampler, 160, [], set())
    marked = detect_ids([c.token for c in chunks], cfg)
    plain = detect_ids([int(i) for i in random_ids(120, seed=5)[0]], cfg)
    assert marked.p_value < 0.01 < plain.p_value


def test_server_answers_chat_with_gemma4(g4_dir, tmp_path):
    from openai import OpenAI

    from tests.server.conftest import ServerProcess

    server = ServerProcess("--model", str(g4_dir), log=tmp_path / "serve.log")
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="none")
        name = client.models.list().data[0].id
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
            temperature=0)  # fmt: skip
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.completion_tokens >= 1
    finally:
        server.stop()
