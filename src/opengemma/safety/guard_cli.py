"""`opengemma guard TEXT`: score a prompt (or prompt + response) against safety policies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from opengemma.atomic import write_atomic
from opengemma.cli_support import DTYPE_HELP, MODEL_HELP, cli_errors, eprint

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

POLICY_HELP = (
    "A standard policy (dangerous_content, harassment, hate_speech, sexually_explicit) or a JSON "
    "policy file; repeatable. Default: the four standard policies."
)


def read_jsonl_requests(path: str) -> list[dict[str, Any]]:
    """Records {"prompt": str, "response": str (optional)} from a JSONL file ('-' = stdin);
    every line is checked before any scoring starts."""
    from opengemma.safety.guard import GuardError

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardError(f"cannot read --input {path}: {exc}") from None
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GuardError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
            raise GuardError(f'{path}:{n}: each line needs {{"prompt": "...", "response": ...}}')
        if rec.get("response") is not None and not isinstance(rec["response"], str):
            raise GuardError(f"{path}:{n}: 'response' must be a string")
        records.append({"line": n, "prompt": rec["prompt"], "response": rec.get("response")})
    if not records:
        raise GuardError(f"{path} holds no requests")
    return records


def _print_table(verdict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("policy", "P(violation)", "verdict", box=None)
    for name, p in verdict.scores.items():
        flag = "[red]BLOCK[/]" if name in verdict.violated else "[green]pass[/]"
        table.add_row(name, f"{p:.4f}", flag)
    console = Console()
    console.print(table)
    console.print(verdict.message())


@app.command()
@cli_errors
def guard(
    text: str = typer.Argument(None, help="The user prompt to check (or use --input)."),
    response: str = typer.Option(None, "--response", "-r", help="Check this model response."),
    policy: list[str] = typer.Option(None, "--policy", "-p", help=POLICY_HELP),  # noqa: B008
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    threshold: float = typer.Option(0.5, help="Block at or above this P(violation)."),
    input_file: str = typer.Option(
        None, "--input", "-i", help='JSONL of {"prompt", "response"?} records (- = stdin).'
    ),
    output: Path = typer.Option(None, "--output", "-o", help="With --input: write JSONL here."),  # noqa: B008
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress notes on stderr."),
) -> None:
    """Score TEXT (and --response) with a ShieldGemma-style policy classifier.

    Pass --model with a ShieldGemma checkpoint: the embedded default model is a small base
    language model, not a trained safety classifier (its scores only show the mechanics)."""
    from opengemma.safety.classifier import SafetyClassifier
    from opengemma.safety.guard import Guard, GuardError
    from opengemma.safety.policies import resolve_policies

    if (text is None) == (input_file is None):
        raise GuardError("give the text as an argument or a JSONL file with --input (one of them)")
    if input_file is not None and response is not None:
        raise GuardError("--response goes with TEXT; in --input records use a 'response' field")
    if output is not None and input_file is None:
        raise GuardError("--output goes with --input")
    if not 0.0 < threshold <= 1.0:
        raise GuardError(f"--threshold must be in (0, 1], got {threshold}")
    records = read_jsonl_requests(input_file) if input_file else None
    policies = resolve_policies(policy)  # bad input fails before the model loads
    g = Guard(SafetyClassifier.load(model, dtype=dtype), policies, threshold)
    if g.note:  # always said, even with --quiet: these scores are not safety judgements
        eprint(g.note)
    if records is None:
        v = g.check_prompt(text) if response is None else g.check_response(text, response)
        if as_json:
            print(json.dumps({**v.to_dict(), **({"note": g.note} if g.note else {})}))
        else:
            _print_table(v)
        return
    _score_batch(g, records, output, quiet)


def _score_batch(g, records: list[dict[str, Any]], output: Path | None, quiet: bool) -> None:
    """Score --input records; JSON lines to stdout or, atomically, to `output`."""
    lines = []
    for rec in records:
        if rec["response"] is None:
            v = g.check_prompt(rec["prompt"])
        else:
            v = g.check_response(rec["prompt"], rec["response"])
        lines.append(json.dumps({"line": rec["line"], **v.to_dict()}))
    body = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(body)
        return
    write_atomic(output, body)
    if not quiet:
        blocked = sum('"blocked": true' in line for line in lines)
        eprint(f"{len(lines)} records scored, {blocked} blocked -> {output}")
