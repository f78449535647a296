"""Two CPU processes under torchrun (gloo, FSDP) train exactly what one process trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from opengemma.tune.recipe import TrainConfig, main
from tests.tune.helpers import format_records, write_jsonl

WEIGHTS = "adapter_model.safetensors"


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", format_records(26, seed=3))
    options = "--max-steps 3 --grad-accum 2 --lr 5e-3 --dropout 0 --max-len 40 --eval-split 0.2"
    common = ["--model", str(tiny_dir), "--data", str(data), *options.split(), "--no-scrub",
              "--no-progress", "--save-every", "2"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENGEMMA_THREADS="1")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = [*launch, "-m", "opengemma.tune", *common, "--batch", "2", "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 eval rows" in proc.stderr and "(2 process(es))" in proc.stderr  # a rank idles in eval

    one = main(
        TrainConfig(
            data=str(data),
            out=str(tmp_path / "one"),
            model=str(tiny_dir),
            max_steps=3,
            batch=4,
            grad_accum=2,
            lr=5e-3,
            dropout=0.0,
            max_len=40,
            eval_split=0.2,
            scrub=False,
            progress=False,
        )
    )
    two_log = [
        json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    ]
    assert len(two_log) == len(one.log) == 5  # eval, 3 steps, eval
    for a, b in zip(one.log, two_log, strict=True):
        for key in ("loss", "eval_loss", "grad_norm", "lr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)
    x, y = load_file(tmp_path / "one" / WEIGHTS), load_file(tmp_path / "two" / WEIGHTS)
    assert x.keys() == y.keys() and len(x) == 2 * 7 * 7
    for k in x:
        torch.testing.assert_close(y[k], x[k], rtol=1e-4, atol=1e-5)
    last = load_file(tmp_path / "two" / "checkpoint" / WEIGHTS)
    assert all(torch.equal(last[k], y[k]) for k in y)  # the final checkpoint is the adapter
