"""`opengemma scrub` end to end on real files: output, findings, quarantine, report, errors."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from opengemma.cli import main
from opengemma.data import ScrubJob, ScrubOptions, run_scrub

EMAIL, CARD, PHONE = "maria.lopez@mailbox.org", "4539 1488 0343 6467", "+44 20 7946 0958"
SECRET = "postgres://admin:Zq8xK2pLm9Rt@db.example.com:5432/app"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_records_fields_order_offsets_and_no_values(tmp_path, capsys, caplog):
    text = f"Hi, I am Maria Lopez. Mail {EMAIL}, call {PHONE}, card {CARD}. DB: {SECRET}"
    rows = [
        {"id": "r1", "text": text, "meta": {"lang": "en"}},
        {"n": 2, "text": "nothing personal here", "tags": ["a", "b"]},
        {"messages": [{"role": "user", "content": f"my ip is 203.0.113.9 and {EMAIL}"}]},
    ]
    src = tmp_path / "in.jsonl"
    # the clean record keeps its exact (unusual) spacing and key order byte for byte
    clean = b'{"n":2,   "text": "nothing personal here", "tags": ["a","b"]}\n'
    src.write_bytes(
        (json.dumps(rows[0]) + "\n").encode() + clean + (json.dumps(rows[2]) + "\n").encode()
    )
    out, fnd, rep = tmp_path / "out.jsonl", tmp_path / "f.jsonl", tmp_path / "r.json"
    with caplog.at_level(logging.DEBUG):
        code = main(["scrub", str(src), "-o", str(out), "--findings", str(fnd),
                     "--report", str(rep)])  # fmt: skip
    assert code == 0
    lines = out.read_bytes().splitlines(keepends=True)
    assert lines[1] == clean
    got = [json.loads(x) for x in lines]
    assert [list(r) for r in got] == [list(r) for r in rows]  # same fields, same order
    assert got[0]["text"].startswith("Hi, I am <PERSON>. Mail <EMAIL>, call <PHONE>, card ")
    assert "<CREDIT_CARD>" in got[0]["text"] and "postgres://<URL_CREDENTIALS>@db" in got[0]["text"]
    assert got[2]["messages"][0]["content"] == "my ip is <IP_ADDRESS> and <EMAIL>"

    findings = read_jsonl(fnd)
    originals = {0: rows[0], 2: rows[2]}
    for f in findings:
        assert set(f) == {"record", "field", "start", "end", "type", "score", "detector"}
        rec = originals[0 if f["record"] == "r1" else f["record"]]
        value = rec
        for part in f["field"].split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        found = value[f["start"] : f["end"]]
        expect = {
            "EMAIL": EMAIL,
            "PHONE": PHONE,
            "CREDIT_CARD": CARD,
            "PERSON": "Maria Lopez",
            "URL_CREDENTIALS": "admin:Zq8xK2pLm9Rt",
            "IP_ADDRESS": "203.0.113.9",
        }
        assert found == expect[f["type"]]  # offsets point into the original text
    assert {f["record"] for f in findings} == {"r1", 2}

    leaked = [EMAIL, CARD, PHONE, "Zq8xK2pLm9Rt", "Maria Lopez", "203.0.113.9"]
    seen = fnd.read_text() + rep.read_text() + caplog.text + "".join(capsys.readouterr())
    for value in leaked:
        assert value not in seen
    report = json.loads(rep.read_text())
    assert report["records"] == {"read": 3, "written": 3, "dropped": {}, "quarantined": 0,
                                 "accounted": True}  # fmt: skip
    assert report["findings"]["EMAIL"] == 2
    assert {"spacy-ner", "name-rules", "street-grammar", "phonenumbers"} <= {
        d["name"] for d in report["detectors"]
    }


def test_malformed_input_is_quarantined_and_accounted(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"text": "ok one"}\n'
        b'{"text": broken\n'
        b"\n"
        b"[1, 2]\n"
        b'{"text": "caf\xe9 latin-1"}\n'
        b'{"body": "no text field"}\n'
        b'{"text": "ok two", "id": 7}'  # no final newline
    )
    out, rep = tmp_path / "out.jsonl", tmp_path / "r.json"
    code = main(["scrub", str(src), "-o", str(out), "--field", "text", "--types", "EMAIL",
                 "--report", str(rep)])  # fmt: skip
    assert code == 0
    assert out.read_bytes() == b'{"text": "ok one"}\n{"text": "ok two", "id": 7}\n'
    q = read_jsonl(tmp_path / "out.jsonl.quarantine.jsonl")
    assert [(e["line"], e["reason"].split(":")[0]) for e in q] == [
        (2, "invalid JSON"), (4, "not a JSON object (a list)"), (5, "invalid UTF-8 at byte 13"),
        (6, "missing field 'text'"),
    ]  # fmt: skip
    assert q[2]["raw_base64"]  # the undecodable line is kept exactly
    assert q[0]["raw"] == '{"text": broken\n'
    r = json.loads(rep.read_text())["records"]
    assert r == {"read": 6, "written": 2, "dropped": {}, "quarantined": 4, "accounted": True}
    assert (tmp_path / "out.jsonl.quarantine.jsonl").stat().st_mode & 0o077 == 0


def test_empty_input(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_bytes(b"")
    out, rep = tmp_path / "out.jsonl", tmp_path / "r.json"
    assert main(["scrub", str(src), "-o", str(out), "--types", "EMAIL", "--report", str(rep)]) == 0
    assert out.read_bytes() == b""
    assert json.loads(rep.read_text())["records"]["read"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--types", "EMAIL,SHOE_SIZE"], "unknown type(s) ['SHOE_SIZE']"),
        (["--operator", "scramble"], "unknown operator 'scramble'"),
        (["--operator", "hash"], "needs a secret key"),
        (["--engine", "spark"], "unknown engine 'spark'"),
        (["--format", "xml"], "unknown format 'xml'"),
    ],
)
def test_bad_arguments_fail_clearly_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("OPENGEMMA_SCRUB_KEY", raising=False)
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": EMAIL}])
    out = tmp_path / "out.jsonl"
    assert main(["scrub", str(src), "-o", str(out), *args]) == 1
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_missing_input_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "opengemma.cli", "scrub", str(tmp_path / "nope.jsonl"),
         "-o", str(tmp_path / "out.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "input not found" in proc.stderr and "nope.jsonl" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_run_leaves_no_partial_output(tmp_path, monkeypatch):
    from opengemma.data import scrub as scrub_mod

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"{i} {EMAIL}"} for i in range(1000)])
    out = tmp_path / "out.jsonl"
    out.write_text("previous good output\n")
    real, calls = scrub_mod.Scrubber.process, []

    def flaky(self, values):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(self, values)

    monkeypatch.setattr(scrub_mod.Scrubber, "process", flaky)
    job = ScrubJob([src], out, ScrubOptions(types=frozenset({"EMAIL"})), findings=tmp_path / "f",
                   report=tmp_path / "r.json", chunk_size=100)  # fmt: skip
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_scrub(job)
    assert out.read_text() == "previous good output\n"  # untouched, not half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_operators(tmp_path, monkeypatch):
    rows = [{"text": f"write to {EMAIL} now"}, {"text": f"again {EMAIL}"}, {"text": "clean"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)

    def run(*args: str) -> list[dict]:
        out = tmp_path / "out.jsonl"
        assert main(["scrub", str(src), "-o", str(out), "--types", "EMAIL", *args]) == 0
        return read_jsonl(out)

    assert run("--operator", "mask")[0]["text"] == "write to " + "*" * len(EMAIL) + " now"
    assert run("--operator", "redact")[0]["text"] == "write to  now"
    assert run("--operator", "drop") == [{"text": "clean"}]
    key = tmp_path / "key"
    key.write_text("a-very-secret-key-of-32-bytes!!!")
    hashed = run("--operator", "hash", "--hash-key-file", str(key))
    token = hashed[0]["text"].split()[2]
    assert token.startswith("<EMAIL:") and hashed[1]["text"] == f"again {token}"
    monkeypatch.setenv("OPENGEMMA_SCRUB_KEY", "another-secret-key-0123456789")
    assert run("--operator", "hash")[0]["text"].split()[2] != token  # keyed


def test_csv_txt_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = tmp_path / "in.csv"
    c.write_text(f'id,note\n1,"mail {EMAIL}, ok"\n2,plain\n3,extra,column\n', encoding="utf-8")
    assert main(["scrub", str(c), "-o", str(tmp_path / "o.csv"), "--types", "EMAIL"]) == 0
    with open(tmp_path / "o.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["id", "note"], ["1", "mail <EMAIL>, ok"], ["2", "plain"]]
    assert "expected 2 columns" in (tmp_path / "o.csv.quarantine.jsonl").read_text()

    t = tmp_path / "in.txt"
    t.write_text(f"line {EMAIL}\nclean line\n", encoding="utf-8")
    assert main(["scrub", str(t), "-o", str(tmp_path / "o.txt"), "--types", "EMAIL"]) == 0
    assert (tmp_path / "o.txt").read_text() == "line <EMAIL>\nclean line\n"

    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": [f"x {EMAIL}", "y"]}), p)
    assert main(["scrub", str(p), "-o", str(tmp_path / "o.parquet"), "--types", "EMAIL"]) == 0
    back = pq.read_table(tmp_path / "o.parquet")
    assert back.schema == pq.read_table(p).schema
    assert back.to_pylist() == [{"id": 1, "text": "x <EMAIL>"}, {"id": 2, "text": "y"}]


def test_dedup_and_decontaminate(tmp_path):
    base = "the quick brown fox jumps over the lazy dog near the river bank at dawn today"
    rows = [
        {"text": base},
        {"text": base.upper()},  # exact duplicate after normalisation
        {"text": base.replace("today", "again")},  # near duplicate
        {"text": "a completely different sentence about parquet files and arrow tables"},
        {"text": "Question: what is the capital of France and why is it famous for art? x"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    ev = write_jsonl(
        tmp_path / "eval.jsonl",
        [{"q": "What is the capital of France and why is it famous for art?"}],
    )
    out, rep = tmp_path / "out.jsonl", tmp_path / "r.json"
    code = main(["scrub", str(src), "-o", str(out), "--types", "EMAIL", "--dedup",
                 "--decontaminate", str(ev), "--ngram", "8", "--report", str(rep)])  # fmt: skip
    assert code == 0
    assert [r["text"] for r in read_jsonl(out)] == [rows[0]["text"], rows[3]["text"]]
    r = json.loads(rep.read_text())
    assert r["records"]["dropped"] == {"contaminated": 1, "duplicate": 1, "near_duplicate": 1}
    assert r["stages"] == ["scrub", "decontaminate", "dedup"]


def test_worker_processes_match_in_process(tmp_path):
    rows = [{"id": i, "text": f"#{i} {EMAIL} {PHONE}" if i % 3 else "clean"} for i in range(600)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}.jsonl"
        assert main(["scrub", str(src), "-o", str(out), "--types", "EMAIL,PHONE",
                     "--workers", workers, "--findings", str(out) + ".f"]) == 0  # fmt: skip
        outs.append((out.read_bytes(), Path(str(out) + ".f").read_bytes()))
    assert outs[0] == outs[1]
