"""The `opengemma` command, run as a real subprocess: output streams, errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROMPT = "The three primary colors are"


def opengemma(*args: str, stdin: str | None = None, timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "opengemma.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc, *fragments: str):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("opengemma: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert proc.stdout == ""


@pytest.mark.slow
def test_run_streams_only_the_continuation(lm):
    proc = opengemma("run", PROMPT, "--max-tokens", "10", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == lm.generate(PROMPT, max_tokens=10) + "\n"
    assert "tok/s" in proc.stderr and PROMPT not in proc.stdout


@pytest.mark.slow
def test_run_prompt_longer_than_context(tmp_path):
    long = tmp_path / "long.txt"
    long.write_text("hello " * 33_000)
    assert_one_line_error(opengemma("run", "--file", str(long), "-q"), "context")


@pytest.mark.slow
def test_chat_reads_turns_from_stdin():
    proc = opengemma("chat", "-q", "--temperature", "0", "--max-tokens", "12", stdin="Hi!\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_missing_model_file(tmp_path):
    assert_one_line_error(opengemma("run", "hi", "--model", str(tmp_path / "nope.gguf")), "nope")


def test_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "notes.gguf"
    junk.write_text("just some text, not weights")
    assert_one_line_error(opengemma("run", "hi", "--model", str(junk)), "not a model file")
    assert_one_line_error(opengemma("info", str(junk)), "not a model file")


def test_truncated_gguf(tmp_path, embedded_path):
    cut = tmp_path / "cut.gguf"
    with open(embedded_path, "rb") as f:
        cut.write_bytes(f.read(1_000_000))
    assert_one_line_error(opengemma("info", str(cut)), "not a valid GGUF file")


def test_matrix_width_not_a_multiple_of_32(tmp_path):
    """A Gemma 3 whose hidden size (48) int8 blocks of 32 cannot hold: asked for int8 (a
    quantized GGUF by default, --quant q8 for a Hugging Face folder) it fails in one line that
    says to keep it in float, exit 1; kept in float it runs."""
    from opengemma.checkpoint.convert import convert
    from tests.checkpoint.conftest import tiny_tokenizer_proto
    from tests.tiny import build_reference, family_config, save_reference

    hf = tmp_path / "hf"
    save_reference(build_reference(family_config("gemma3", hidden_size=48)), hf)
    (hf / "tokenizer.model").write_bytes(tiny_tokenizer_proto().SerializeToString())
    gguf = convert(hf, tmp_path / "w48.gguf", "gguf", dtype="f16", quant="q8_0").path
    for proc, says in [
        (opengemma("run", "hi", "--model", str(gguf)), "token_embd.weight of shape (512, 48)"),
        (opengemma("run", "hi", "--model", str(hf), "--quant", "q8"), "width 48 is not a multiple"),
    ]:
        assert_one_line_error(proc, says, "--quant none")
        assert proc.returncode == 1 and "unexpected" not in proc.stderr
    import opengemma as og  # the advice works: the same file loads and runs in float

    assert len(og.load(gguf, quant="none").generate("hi", max_tokens=2)) > 0


def test_empty_prompt():
    assert_one_line_error(opengemma("run", "   "), "empty")
    assert_one_line_error(opengemma("run"), "--file")


def test_bad_option_value():
    proc = opengemma("run", "hi", "--max-tokens", "many")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_info_json(embedded_path):
    proc = opengemma("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["format"] == "gguf"
    assert info["config"]["num_layers"] == 18
    assert info["tensor_types"]["Q8_0"] > 0 and info["tensor_bytes"] > 200e6


def test_info_table():
    proc = opengemma("info")
    assert proc.returncode == 0, proc.stderr
    assert "sliding_window" in proc.stdout and "Q5_0" in proc.stdout


def test_usage_and_unknown_verb():
    assert opengemma("--help").returncode == 0
    proc = opengemma("frobnicate")
    assert proc.returncode == 2 and "unknown verb" in proc.stderr


@pytest.mark.slow
def test_run_with_watermark_is_detected(tmp_path, lm):
    from opengemma.safety.watermark import WatermarkConfig, detect

    keys = tmp_path / "keys.json"
    assert opengemma("watermark", "keygen", "-o", str(keys)).returncode == 0
    proc = opengemma("run", "Write a short story about a lighthouse keeper.", "-q",
                     "--max-tokens", "60", "--temperature", "1", "--top-k", "40", "--seed", "3",
                     "--watermark", str(keys))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert detect(proc.stdout, WatermarkConfig.load(keys), lm.tokenizer).p_value < 1e-3
    bad = opengemma("run", "hi", "--watermark", str(tmp_path / "missing.json"))
    assert_one_line_error(bad)
