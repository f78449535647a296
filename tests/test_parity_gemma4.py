"""Gemma 4 text models against transformers, on tiny random checkpoints saved by transformers
itself and read by the production loader: one model per feature combination, prompts five
times the sliding window, logits compared at every position."""

from __future__ import annotations

import pytest
import torch

from opengemma.quantized_layers import quantize_model
from tests.gemma4_tiny import CASES, build_gemma4, gemma4_config
from tests.tiny import build_reference, family_config, ours_from_dir, random_ids, save_reference

CAUSAL = [c for c in CASES if c != "bidirectional"]
N = 40  # five sliding windows of 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """case -> (transformers model, checkpoint directory)."""
    from tests.checkpoint.conftest import tiny_tokenizer_proto

    out = {}
    for case in CASES:
        ref = build_gemma4(gemma4_config(case))
        path = save_reference(ref, tmp_path_factory.mktemp(case))
        (path / "tokenizer.model").write_bytes(tiny_tokenizer_proto().SerializeToString())
        out[case] = (ref, path)
    return out


@pytest.mark.parametrize("case", CAUSAL)
def test_logits_match_transformers(case, models):
    ref, path = models[case]
    ids = random_ids(N)
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours_from_dir(path)(ids)
    assert expected.abs().max() > 5.0  # logits of a magnitude where bugs show
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_the_features_are_present(models):
    """Each case really exercises what it is named for (the loader read the fields)."""
    cfg = {case: ours_from_dir(path).config for case, (_, path) in models.items()}
    a = cfg["ple-kvshare"]
    assert a.hidden_size_per_layer_input == 32 and a.double_wide_mlp
    assert [a.kv_source(i) for i in range(6)] == [0, 1, 2, 1, 1, 2]
    assert a.layer_intermediate(4) == 2 * a.layer_intermediate(0)
    assert a.final_logit_softcap == 30.0
    assert cfg["moe"].num_experts == 4 and cfg["moe"].top_k_experts == 2
    c = cfg["k-eq-v"]
    assert c.layer_k_eq_v(2) and c.layer_head_dim(2) == 64 and c.layer_kv_heads(2) == 1
    assert c.layer_head_dim(0) == 32 and c.layer_kv_heads(0) == 2
    assert all(r.rope_partial_factor == 0.25 and r.norm_offset == 0.0 for r in cfg.values())
    assert cfg["bidirectional"].use_bidirectional_attention


def _bidirectional_masks(T: int, window: int) -> dict[str, torch.Tensor]:
    """Additive masks for transformers' Gemma 4 layers: global layers see every key, sliding
    layers the keys less than window // 2 + 1 away on either side (transformers' own bounds
    for use_bidirectional_attention='all')."""
    q = torch.arange(T)[:, None]
    k = torch.arange(T)[None, :]
    near = (q - k).abs() < window // 2 + 1
    blocked = torch.tensor(float("-inf"))
    return {
        "full_attention": torch.zeros(1, 1, T, T),
        "sliding_attention": torch.where(near, 0.0, blocked)[None, None],
    }


def test_bidirectional_matches_transformers_with_its_masks(models):
    ref, path = models["bidirectional"]
    ids = random_ids(N)
    with torch.no_grad():
        expected = ref(ids, attention_mask=_bidirectional_masks(N, 8)).logits
        causal = ref(ids).logits
        got = ours_from_dir(path)(ids)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert (got - causal).abs().max() > 1.0  # early positions see later tokens


def _greedy_cached(model, ids: torch.Tensor, steps: int):
    """Greedy continuation through the KV cache: (tokens, logits of each decode step)."""
    cache = model.new_cache(ids.shape[1] + steps)
    logits = model(ids, cache)[:, -1:]
    tokens, step_logits = [], []
    for _ in range(steps):
        nxt = logits[0, -1].argmax()
        tokens.append(int(nxt))
        logits = model(nxt.view(1, 1), cache)
        step_logits.append(logits[0, -1])
    return tokens, torch.stack(step_logits)


@pytest.mark.parametrize("case", CAUSAL)
def test_cached_decode_equals_full_forward_and_transformers(case, models):
    """Prompt past the window, then 24 greedy tokens through the cache (ring caches wrap, the
    shared layers read the producers' caches): every step's logits equal a full forward over
    the sequence so far and transformers' logits; transformers' argmax is our token."""
    ref, path = models[case]
    ours = ours_from_dir(path)
    prompt = random_ids(20, seed=3)
    with torch.no_grad():
        tokens, steps = _greedy_cached(ours, prompt, 24)
        seq = torch.cat([prompt, torch.tensor([tokens])], dim=1)
        full = ours(seq)[0, prompt.shape[1] : -1]
        expected = ref(seq).logits[0, prompt.shape[1] : -1]
    torch.testing.assert_close(steps[:-1], full, atol=1e-4, rtol=0)
    torch.testing.assert_close(full, expected, atol=1e-4, rtol=0)
    assert expected.argmax(-1).tolist() == tokens[1:]


@pytest.mark.parametrize("case", CAUSAL)
def test_batched_decode_rows_at_their_own_positions(case, models):
    _, path = models[case]
    ours = ours_from_dir(path)
    prompts = [random_ids(n, seed=n) for n in (13, 22)]
    with torch.no_grad():
        caches = [ours.new_cache(40) for _ in prompts]
        last = [ours(p, c)[0, -1].argmax() for p, c in zip(prompts, caches, strict=True)]
        seqs = [torch.cat([p[0], t.view(1)]) for p, t in zip(prompts, last, strict=True)]
        for _ in range(12):  # both rows advance together, each at its own position
            batch = torch.stack([s[-1:] for s in seqs])  # (2, 1)
            logits = ours(batch, caches)
            for b in range(2):
                full = ours(seqs[b][None])[0, -1]
                torch.testing.assert_close(logits[b, -1], full, atol=1e-4, rtol=0)
                seqs[b] = torch.cat([seqs[b], logits[b, -1].argmax().view(1)])


def _routes(model, ids) -> list[torch.Tensor]:
    """The sorted expert ids (T, k) every MoE layer chose for `ids`."""
    seen: list[torch.Tensor] = []
    hooks = [layer.router.register_forward_hook(lambda m, i, o: seen.append(o[1].sort(-1)[0]))
             for layer in model.layers if layer.router is not None]  # fmt: skip
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    return seen


def _int8_error(ref, path) -> tuple[float, float, float]:
    """(max |logit error| / max |logit|, greedy agreement, share of re-routed tokens) of the
    int8-block weights. A token whose expert choice flips under the weight change (a near tie
    in the float32 router) is compared by greedy agreement only."""
    ours, exact = ours_from_dir(path), ours_from_dir(path)
    quantize_model(ours)
    ids = random_ids(N)
    flipped = torch.zeros(N, dtype=torch.bool)
    for a, b in zip(_routes(ours, ids), _routes(exact, ids), strict=True):
        flipped |= (a != b).any(-1)
    with torch.no_grad():
        expected = ref(ids).logits[0]
        got = ours(ids)[0]
    keep = ~flipped
    rel = float((got[keep] - expected[keep]).abs().max() / expected.abs().max())
    agree = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
    return rel, agree, float(flipped.float().mean())


@pytest.mark.parametrize("case", CAUSAL)
def test_int8_blocks_meet_the_gemma3_tolerance(case, models, tmp_path):
    """int8 blocks change the weights: Gemma 4 must track transformers' float logits as closely
    as the Gemma 3 path does on a model of the same size."""
    g3 = build_reference(family_config("gemma3", head_dim=32, num_hidden_layers=6))
    g3_rel, g3_agree, _ = _int8_error(g3, save_reference(g3, tmp_path / "g3"))
    rel, agree, rerouted = _int8_error(*models[case])
    assert g3_rel < 0.03 and g3_agree > 0.9  # the bound the Gemma 3 path meets
    assert rel < 0.03 and agree > 0.9, (rel, agree, g3_rel, g3_agree)
    assert rerouted < 0.2


# ---------------------------------------------------------------- mutations must be caught


def _max_error(model, ref, ids) -> float:
    with torch.no_grad():
        return float((model(ids) - ref(ids).logits).abs().max())


def test_dropping_per_layer_embeddings_is_caught(models):
    ref, path = models["ple-kvshare"]
    ours = ours_from_dir(path)
    with torch.no_grad():
        ours.embed_tokens_per_layer.weight.zero_()
        ours.per_layer_model_projection.weight.zero_()
    assert _max_error(ours, ref, random_ids(N)) > 1e-2


def test_sharing_the_wrong_layers_kv_is_caught(models):
    """Layers 3 and 4 must reuse layer 1 (the last sliding producer); with layer 1 kept from
    publishing its keys/values they read layer 0's, and the logits must show it."""
    ref, path = models["ple-kvshare"]
    ours = ours_from_dir(path)
    attn = ours.layers[1].self_attn
    inner = attn.forward
    attn.forward = lambda x, rope, pos, cache=None, masks=None, shared=None: inner(
        x, rope, pos, cache, masks, None)  # fmt: skip
    assert _max_error(ours, ref, random_ids(N)) > 1e-2


def test_rope_on_the_full_head_is_caught(models):
    ref, path = models["k-eq-v"]
    ours = ours_from_dir(path)
    ours.config = ours.config.replace(rope_partial_factor=1.0)
    assert _max_error(ours, ref, random_ids(N)) > 1e-2


@pytest.mark.parametrize(
    "name, total, active",
    [  # the model cards' figures (text decoder; E-models' "effective" size excludes the PLE
        # table, the MoE's active size counts 8 of 128 experts)
        ("gemma4-e2b", None, 2.3e9),
        ("gemma4-e4b", None, 4.5e9),
        ("gemma4-26b-a4b", 25.2e9, 3.8e9),
        ("gemma4-31b", 30.7e9, 30.7e9),
    ],
)
def test_presets_have_the_published_sizes(name, total, active):
    import math

    from opengemma.checkpoint import expected_shapes
    from opengemma.config import PRESETS

    cfg = PRESETS[name]
    shapes = expected_shapes(cfg)
    count = {k: math.prod(s) for k, s in shapes.items()}
    ple = sum(n for k, n in count.items() if k.startswith("embed_tokens_per_layer"))
    experts = sum(n for k, n in count.items() if ".experts." in k)
    every = sum(count.values())
    routed = experts * cfg.top_k_experts / cfg.num_experts if cfg.num_experts else 0
    if total is not None:
        assert abs(every - total) / total < 0.01
    assert abs(every - ple - experts + routed - active) / active < 0.04


# ---------------------------------------------------------------- GGUF (llama.cpp's gemma4)


def _gguf_names() -> set[str]:
    """Every tensor name gguf's own constants give the gemma4 architecture (blocks 0-9)."""
    from gguf.constants import MODEL_ARCH, MODEL_TENSORS, TENSOR_NAMES

    names = set()
    for t in MODEL_TENSORS[MODEL_ARCH.GEMMA4]:
        for bid in range(10):
            base = TENSOR_NAMES[t].format(bid=bid)
            names |= {base + ".weight", base + ".scale"}
    return names


@pytest.mark.parametrize("case", CAUSAL)
def test_gguf_round_trip_keeps_logits(case, models, tmp_path):
    """HF -> GGUF (our writer, llama.cpp's gemma4 names) -> opengemma, and GGUF -> HF ->
    transformers: the same logits."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    from opengemma.checkpoint.convert import convert

    ref, path = models[case]
    ids = random_ids(N)
    gguf = convert(path, tmp_path / "m.gguf", "gguf", dtype="f32").path
    stored = {t.name for t in GGUFReader(str(gguf)).tensors}
    assert stored <= _gguf_names(), sorted(stored - _gguf_names())
    back = convert(gguf, tmp_path / "back", "hf", dtype="f32").path
    hf = AutoModelForCausalLM.from_pretrained(str(back), attn_implementation="eager").eval()
    with torch.no_grad():
        want = ref(ids).logits
        torch.testing.assert_close(ours_from_dir(gguf)(ids), want, atol=1e-4, rtol=0)
        torch.testing.assert_close(hf(ids).logits, want, atol=1e-4, rtol=0)
    assert ours_from_dir(gguf).config == ours_from_dir(path).config


def test_moe_gguf_holds_experts_as_int8_blocks_read_only_when_routed(models, tmp_path):
    """A Q8_0 GGUF of the MoE model: experts load as int8 blocks (the router stays float32),
    equal to quantizing the float model, and an expert no token is routed to is never read."""
    from opengemma.build import build_model
    from opengemma.checkpoint import load_checkpoint
    from opengemma.checkpoint.convert import convert

    ref, path = models["moe"]
    gguf = convert(path, tmp_path / "q8.gguf", "gguf", dtype="f32", quant="q8_0").path
    ckpt = load_checkpoint(gguf, torch.float32, quant="q8")
    model = build_model(ckpt, torch.float32, "cpu")
    experts = model.layers[0].experts
    assert experts.gate_up_proj.dtype == torch.uint8 and experts.gate_up_proj.dim() == 3
    assert model.layers[0].router.proj.weight.dtype == torch.float32
    quantized = ours_from_dir(path)
    quantize_model(quantized)
    ids = random_ids(N)
    with torch.no_grad():
        got = model(ids)
        torch.testing.assert_close(got, quantized(ids), atol=1e-5, rtol=0)
        used = set(_routes(model, random_ids(1, seed=9))[0].flatten().tolist())
        idle = next(e for e in range(4) if e not in used)
        before = model(random_ids(1, seed=9))
        experts.gate_up_proj[idle] = 255  # NaN scales: any read of this expert would show
        after = model(random_ids(1, seed=9))
    assert torch.equal(before, after)


@pytest.mark.parametrize("case", CAUSAL)
def test_int8_cached_decode_tracks_its_full_forward(case, models):
    """On int8 blocks a decode step quantizes its activations (a prefill multiplies the
    dequantized weights): cached greedy decoding stays within the int8 tolerance of a full
    forward over the same tokens, and picks the same tokens. Tokens whose expert choice flips
    between the two (a near tie in the router) are compared by their greedy token only."""
    _, path = models[case]
    ours = ours_from_dir(path)
    quantize_model(ours)
    prompt = random_ids(20, seed=3)
    seen: list[torch.Tensor] = []
    hooks = [layer.router.register_forward_hook(lambda m, i, o: seen.append(o[1].sort(-1)[0]))
             for layer in ours.layers if layer.router is not None]  # fmt: skip
    with torch.no_grad():
        tokens, steps = _greedy_cached(ours, prompt, 16)
        per_layer = len(hooks)
        decode_routes = seen[per_layer:]  # after the prompt: one (1, k) per layer and step
        seen.clear()
        seq = torch.cat([prompt, torch.tensor([tokens])], dim=1)
        full = ours(seq)[0, prompt.shape[1] : -1]
    for h in hooks:
        h.remove()
    keep = torch.ones(len(tokens) - 1, dtype=torch.bool)
    for step in range(len(tokens) - 1):
        for layer in range(per_layer):
            full_route = seen[layer][prompt.shape[1] + step]
            if not torch.equal(decode_routes[step * per_layer + layer][0], full_route):
                keep[step] = False
    scale = float(full.abs().max())
    # a flipped token's keys and values also reach later positions: a little more room there
    room = 0.03 if bool(keep.all()) else 0.05
    torch.testing.assert_close(steps[:-1][keep], full[keep], atol=room * scale, rtol=0)
    assert keep.float().mean() > 0.5
    agree = (full.argmax(-1) == torch.tensor(tokens[1:])).float().mean()
    assert agree > 0.9
