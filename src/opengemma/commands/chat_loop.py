"""`opengemma chat`: multi-turn chat on the terminal with the Gemma turn template."""

from __future__ import annotations

import sys

import typer

from opengemma.cli_support import (
    ADAPTER_HELP,
    DTYPE_HELP,
    MODEL_HELP,
    QUANT_HELP,
    THREADS_HELP,
    announce_loaded,
    check_threads,
    cli_errors,
    eprint,
    sampling_kwargs,
    stream_to_stdout,
)  # fmt: skip

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _read_turn(interactive: bool) -> str | None:
    try:
        if interactive:
            sys.stderr.write("\n> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
    except KeyboardInterrupt:
        return None
    return None if line == "" else line.rstrip("\n")


@app.command()
@cli_errors
def chat(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    system: str = typer.Option(None, help="System instructions (folded into the first turn)."),
    max_tokens: int = typer.Option(512, "--max-tokens", "-n", help="Most tokens per reply."),
    temperature: float = typer.Option(0.7, help="0 = greedy; higher = more random."),
    top_k: int = typer.Option(64, "--top-k", help="Sample among the k most likely (0 = all)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    min_p: float = typer.Option(0.0, "--min-p", help="Drop tokens below min_p x the top one."),
    repetition_penalty: float = typer.Option(
        1.0, "--repeat-penalty", help="> 1 discourages repeats."
    ),
    seed: int = typer.Option(None, help="Seed for reproducible sampling."),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    quant: str = typer.Option("auto", help=QUANT_HELP),
    adapter: str = typer.Option(None, help=ADAPTER_HELP),
    threads: str = typer.Option(None, help=THREADS_HELP, callback=check_threads),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No diagnostics on stderr."),
    tools: str = typer.Option(
        None,
        help="JSON file with a list of functions (OpenAI `tools`) the model may call; each call "
        "prints as a JSON line and the next line you type is its result.",
    ),
) -> None:
    """Chat with a Gemma model. One line per user turn; /reset starts over, /exit or EOF ends."""
    from opengemma.api import load

    lm = load(model, dtype=dtype, threads=threads, quant=quant, adapter=adapter)
    announce_loaded(lm, quiet)
    kwargs = sampling_kwargs(temperature, top_k, top_p, min_p, repetition_penalty, seed)
    tool_specs = _load_tools(tools) if tools else None
    interactive = sys.stdin.isatty()
    if interactive and not quiet:
        eprint("Type a message; /reset clears the conversation, /exit or Ctrl-D quits.")
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    while (line := _read_turn(interactive)) is not None:
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            messages = messages[:1] if system else []
            eprint("[conversation cleared]")
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        if tool_specs is not None:
            _tool_turn(lm, messages, tool_specs, max_tokens, kwargs, interactive)
            continue
        reply: list[str] = []
        stream_to_stdout(_collect(lm.chat_stream(messages, max_tokens, **kwargs), reply), quiet)
        messages.append({"role": "assistant", "content": "".join(reply)})


def _collect(chunks, sink: list[str]):
    """Pass chunks through while keeping their text in `sink`."""
    for chunk in chunks:
        sink.append(str(chunk))
        yield chunk


MAX_TOOL_ROUNDS = 8  # model calls answered in a row before the turn is handed back


def _load_tools(path: str) -> list:
    import json

    from opengemma.errors import InvalidRequestError
    from opengemma.tools import parse_tools

    try:
        specs = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        msg = f"--tools {path}: cannot read a JSON list of functions ({exc})"
        raise InvalidRequestError(msg) from None
    if not isinstance(specs, list):
        raise InvalidRequestError(f"--tools {path}: the file must hold a JSON list of functions")
    parse_tools(specs)  # a clear error now, not at the first turn
    return specs


def _tool_turn(lm, messages: list, tools: list, max_tokens: int, kwargs: dict, interactive: bool):
    """One user turn with tools: calls print as JSON lines, each next input line is a result."""
    import json

    for _ in range(MAX_TOOL_ROUNDS):
        reply = lm.chat(messages, max_tokens, tools=tools, **kwargs)
        messages.append(reply.message())
        if not reply.tool_calls:
            print(reply, flush=True)
            return
        for call in reply.tool_calls:
            print(json.dumps({"tool_call": {"id": call.id, "name": call.name,
                                            "arguments": call.arguments}}), flush=True)  # fmt: skip
            result = _read_turn(interactive)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result or ""})
