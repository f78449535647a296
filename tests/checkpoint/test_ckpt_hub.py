"""gemma_pytorch .ckpt files, and pulled Hub repos (an offline cache the test builds)."""

from __future__ import annotations

import shutil

import pytest
import torch

import opengemma
from opengemma.checkpoint import CheckpointError, load_checkpoint
from opengemma.checkpoint.ckpt import infer_config
from opengemma.checkpoint.hub import hub_error, list_cached, looks_like_repo_id
from opengemma.cli import main
from opengemma.config import PRESETS
from tests.tiny import random_ids


def _gemma_pytorch_state(ref) -> dict[str, torch.Tensor]:
    """A transformers model's weights in gemma_pytorch's layout (fused qkv, its names)."""
    sd = {k: v.detach().clone() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    out = {"embedder.weight": sd.pop("model.embed_tokens.weight")}
    for i in range(ref.config.num_hidden_layers):
        p = f"model.layers.{i}.self_attn."
        out[p + "qkv_proj.weight"] = torch.cat([sd.pop(p + f"{x}_proj.weight") for x in "qkv"])
        for ours, theirs in (("q_norm", "query_norm"), ("k_norm", "key_norm")):
            if p + ours + ".weight" in sd:
                out[p + theirs + ".weight"] = sd.pop(p + ours + ".weight")
    out.update(sd)
    return out


@pytest.mark.parametrize("family", ["gemma", "gemma3"])
def test_ckpt_loads_with_identical_logits(family, reference, tmp_path):
    src, ref = reference(family)
    path = tmp_path / "model.ckpt"
    torch.save({"model_state_dict": _gemma_pytorch_state(ref)}, path)
    config = load_checkpoint(src).config
    ckpt = load_checkpoint(path, torch.float32, variant=config)
    from opengemma.build import build_model

    model = build_model(ckpt, torch.float32, "cpu")
    ids = random_ids(20)
    with torch.no_grad():
        gap = (model(ids)[0] - ref(ids).logits[0]).abs().max().item()
    assert gap < 1e-4
    with pytest.raises(CheckpointError, match="no Gemma preset"):
        load_checkpoint(path)  # tiny shapes match no preset: the variant must be given


def test_variant_inferred_from_shapes():
    cfg = PRESETS["gemma2-2b"]
    shapes = {"embedder.weight": (256000, cfg.hidden_size)}
    for i in range(cfg.num_layers):
        shapes[f"model.layers.{i}.pre_feedforward_layernorm.weight"] = (cfg.hidden_size,)
    assert infer_config(shapes, None) == cfg
    shapes = {
        "embedder.weight": (262144, 640),
        "model.layers.17.self_attn.query_norm.weight": (256,),
    }
    assert infer_config(shapes, None) == PRESETS["gemma3-270m"]


def _cache_repo(cache, repo_id: str, files, commit: str = "a" * 40):
    """A huggingface_hub cache entry (blobs, snapshot links, refs/main), as `pull` leaves it."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for f in files:
        blob = root / "blobs" / f"{abs(hash(f.name)):x}"
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(blob)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snap


def test_pull_list_and_load_by_repo_id_offline(reference, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("OPENGEMMA_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network, ever
    src, ref = reference("gemma2")
    assert main(["list"]) == 0 and "no models" in capsys.readouterr().err
    _cache_repo(tmp_path / "hub", "acme/tiny-gemma2", sorted(src.iterdir()))
    assert main(["list"]) == 0
    assert "acme/tiny-gemma2" in capsys.readouterr().out
    assert [m.repo_id for m in list_cached()] == ["acme/tiny-gemma2"]
    assert main(["pull", "acme/tiny-gemma2"]) == 0  # already cached: resolves offline
    assert "snapshots" in capsys.readouterr().out
    lm = opengemma.load("acme/tiny-gemma2", dtype="float32", quant="none", threads=1)
    ids = random_ids(12)
    with torch.no_grad():
        assert (lm.logits(ids[0].tolist()) - ref(ids).logits[0]).abs().max() < 1e-4
    assert main(["pull", "acme/missing"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the cache" in err
    with pytest.raises(CheckpointError, match="opengemma pull acme/other"):
        load_checkpoint("acme/other")


def test_gated_repo_message_says_how_to_authenticate():
    import httpx
    from huggingface_hub.errors import GatedRepoError

    url = "https://huggingface.co/google/gemma-2b/resolve/main/config.json"
    response = httpx.Response(403, request=httpx.Request("GET", url))
    msg = str(hub_error(GatedRepoError("403 gated", response=response), "google/gemma-2b"))
    assert "hf auth login" in msg and "HF_TOKEN" in msg and "huggingface.co/google/gemma-2b" in msg
    assert looks_like_repo_id("google/gemma-2b@main") and not looks_like_repo_id("../x/y")
