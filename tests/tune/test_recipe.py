"""The training recipe on a tiny random Gemma 3: exact resume, QLoRA, activation checkpointing,
schedule, outputs, and the `opengemma tune` command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib

import pytest
import torch
from safetensors.torch import load_file

from opengemma.cli import main as cli_main
from opengemma.lora import AdapterError, merge
from opengemma.tune.data import TuneDataError
from opengemma.tune.qlora_base import FrozenQuantLinear
from opengemma.tune.recipe import TrainConfig, lr_factor, main
from tests.tune.helpers import format_records, write_jsonl

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture()
def data(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", format_records(30))


def _cfg(tiny_dir, data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        model=str(tiny_dir),
        max_steps=6,
        batch=2,
        grad_accum=2,
        lr=5e-3,
        dropout=0.1,
        scrub=False,
        progress=False,
        save_every=0,
        eval_split=0.2,
        max_len=24,
    )
    return TrainConfig(**{**base, **kw})


def _log(out):
    return [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]


def _strip_time(entries):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tiny_dir, data, tmp_path):
    full = main(_cfg(tiny_dir, data, tmp_path / "full"))
    assert not full.interrupted and full.steps == 6
    assert full.eval_loss < full.eval_loss_before  # it learns

    out = tmp_path / "cut"
    part = main(_cfg(tiny_dir, data, out, stop_after=3))
    assert part.interrupted and part.steps == 3
    assert (out / "checkpoint" / WEIGHTS).is_file() and not (out / WEIGHTS).exists()
    with pytest.raises(TuneDataError, match="already holds a training checkpoint"):
        main(_cfg(tiny_dir, data, out))
    with pytest.raises(TuneDataError, match="lr: checkpoint 0.005, now 0.001"):
        main(_cfg(tiny_dir, data, out, resume=True, lr=1e-3))
    rest = main(_cfg(tiny_dir, data, out, resume=True))
    assert rest.steps == 6 and not rest.interrupted

    # the loss curve continues as if never interrupted: bitwise, dropout included
    assert _strip_time(_log(out)) == _strip_time(_log(tmp_path / "full"))
    a, b = load_file(tmp_path / "full" / WEIGHTS), load_file(out / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "adapter_config.json").is_file()


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, warmup=4, total=20, min_ratio=0.1) for s in range(21)]
    assert f[:4] == [0.2, 0.4, 0.6, 0.8] and f[4] == 1.0
    assert all(x > y for x, y in zip(f[4:20], f[5:21], strict=True))
    assert f[20] == pytest.approx(0.1)


def test_activation_checkpointing_gives_the_same_training(tiny_dir, data, tmp_path):
    plain = main(_cfg(tiny_dir, data, tmp_path / "a", max_steps=2, eval_split=0.0))
    ckpt = main(
        _cfg(
            tiny_dir,
            data,
            tmp_path / "b",
            max_steps=2,
            eval_split=0.0,
            activation_checkpointing=True,
        )
    )
    for x, y in zip(plain.log, ckpt.log, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_base_error_and_gradient(bits):
    torch.manual_seed(0)
    w = torch.randn(48, 128)
    q = FrozenQuantLinear(w, bits=bits, group_size=32)
    deq = q.dequantize()
    groups = w.view(48, -1, 32).abs().amax(2, keepdim=True).expand(-1, -1, 32).reshape(48, 128)
    step = groups / (127 if bits == 8 else 7)
    # round-to-nearest within half a step; int8 (Q8_0) also rounds its scale to float16
    slack = 0.5 + (127 / 2048 if bits == 8 else 0.0)
    assert ((deq - w).abs() <= step * slack + 1e-6).all()
    assert (deq - w).abs().max() > 0  # it really is quantized
    x = torch.randn(3, 5, 128, requires_grad=True)
    y = q(x)
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, deq).square().sum().backward()
    torch.testing.assert_close(y, torch.nn.functional.linear(x.detach(), deq))
    torch.testing.assert_close(x.grad, x2.grad)
    assert q.codes.element_size() * q.codes.numel() == 48 * 128 * bits // 8


def test_int8_base_is_the_inference_format(tiny_dir, data, tmp_path):
    import opengemma
    from opengemma.quantized_layers import Q8Linear, dequantize_q8_0, split_q8_0

    lin = torch.nn.Linear(128, 48, bias=False)
    q8 = Q8Linear.from_linear(lin)
    ours = FrozenQuantLinear(lin.weight, bits=8)
    adopted = FrozenQuantLinear.from_q8(q8)
    assert torch.equal(ours.codes, split_q8_0(q8.blocks)[0]) and torch.equal(
        adopted.dequantize(), ours.dequantize()
    )
    # the same weights: the frozen base computes with exactly what inference multiplies by
    x = torch.randn(40, 128)
    exact = torch.nn.functional.linear(x, dequantize_q8_0(q8.blocks))
    torch.testing.assert_close(ours(x), exact, rtol=1e-5, atol=1e-5)
    lm = opengemma.load(tiny_dir, quant="q8")  # int8 inference kernels: no gradients
    with pytest.raises(AdapterError, match="quant='none'"):
        main(_cfg(tiny_dir, data, tmp_path / "q8"), lm=lm)


def test_qlora_trains_over_a_frozen_int4_base(tiny_dir, data, tmp_path):
    import opengemma

    lm = opengemma.load(tiny_dir)
    res = main(
        _cfg(
            tiny_dir,
            data,
            tmp_path / "q",
            qlora=True,
            qlora_group_size=16,
            max_steps=4,
            dropout=0.0,
        ),
        lm=lm,
    )
    q_proj = lm.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, FrozenQuantLinear) and q_proj.base_layer.bits == 4
    assert not any(b.requires_grad for b in q_proj.base_layer.buffers())
    assert res.eval_loss < res.eval_loss_before
    assert "QLoRA: 49 base linears quantized to int4" in (tmp_path / "q" / "run.log").read_text()
    with pytest.raises(AdapterError, match="cannot merge an adapter into a quantized base"):
        merge(lm.model)


def test_packing_and_loss_curve_png(tiny_dir, data, tmp_path):
    main(_cfg(tiny_dir, data, tmp_path / "p", pack=True, max_len=80, max_steps=2, eval_every=1))
    rows = re.search(r"(\d+) training rows, 6 eval rows", (tmp_path / "p" / "run.log").read_text())
    assert rows and int(rows.group(1)) <= 24 // 2  # 24 examples, at least two per packed row
    png = (tmp_path / "p" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    idat_len = int.from_bytes(png[33:37], "big")
    raw = zlib.decompress(png[41 : 41 + idat_len])
    assert len(raw) == height * (1 + 3 * width)
    assert bytes((31, 119, 180)) in raw and bytes((255, 127, 14)) in raw  # train line, eval dots


def test_cli_scrubs_by_default_and_reports_errors(tiny_dir, tmp_path, capsys):
    records = format_records(12) + [{"prompt": "Mail ann.lee@mailbox.org", "completion": " ok"}]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    out = tmp_path / "o"
    args = [
        "tune",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(tiny_dir),
        "--max-steps",
        "2",
        "--batch",
        "2",
        "--rank",
        "2",
        "--targets",
        "q,v",
        "--no-progress",
    ]
    assert cli_main(args) == 0
    log = (out / "run.log").read_text()
    assert "scrubbed training data: 1 of" in log and "EMAIL 1" in log
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["target_modules"] == ["q_proj", "v_proj"]
    assert cli_main(args[:-1] + ["--no-scrub", "--out", str(tmp_path / "o2")]) == 0
    assert "scrubbing OFF (--no-scrub)" in (tmp_path / "o2" / "run.log").read_text()
    capsys.readouterr()
    assert cli_main(["tune", "--data", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("opengemma: error: data file") and "not found" in err[-1]
    assert cli_main(args[:-1] + ["--targets", "q,lm_head"]) == 1
    assert "unknown LoRA targets ['lm_head']" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_checkpoints_at_a_step_boundary(tiny_dir, data, tmp_path):
    out = tmp_path / "sig"
    args = [sys.executable, "-m", "opengemma.tune", "--model", str(tiny_dir), "--data", str(data),
            "--out", str(out), "--max-steps", "400", "--batch", "2", "--max-len", "24",
            "--save-every", "0", "--no-scrub", "--no-progress"]  # fmt: skip
    env = dict(os.environ, OPENGEMMA_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and sum('"loss"' in ln for ln in log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    steps = [e["step"] for e in _log(out) if "loss" in e]
    assert 2 <= state["step"] < 400 and steps == list(range(1, state["step"] + 1))
    assert f"stopped after step {state['step']} of 400" in err
    assert not (out / WEIGHTS).exists()  # the final adapter only comes with the finished run


def test_quantize_base_adopts_int8_layers_by_type_not_name():
    """quantize_base takes a real Q8Linear over as is; a look-alike class of the same name is
    not one (the check is isinstance, not the class name)."""
    from opengemma.quantized_layers import Q8Linear, split_q8_0
    from opengemma.tune.qlora_base import quantize_base

    class Block(torch.nn.Module):
        def __init__(self, proj):
            super().__init__()
            self.q_proj = proj

    q8 = Q8Linear.from_linear(torch.nn.Linear(64, 32, bias=False))
    block = Block(q8)
    assert quantize_base(block, bits=4) == 1
    assert isinstance(block.q_proj, FrozenQuantLinear) and block.q_proj.bits == 8
    assert torch.equal(block.q_proj.codes, split_q8_0(q8.blocks)[0])

    fake = type("Q8Linear", (torch.nn.Module,), {})()
    with pytest.raises(AdapterError, match="no q_proj"):
        quantize_base(Block(fake))
