"""What every CLI verb shares: option help, option checks, one-line errors, stderr diagnostics.

It sits at the bottom of the package (it imports only `opengemma.errors`), so any verb, in any
subpackage, uses it without an upward import; the verbs load models through `opengemma.api`.
The error contract itself (one line `opengemma: error: ...`, exit 2 for usage, 1 for failures,
never a traceback) is enforced for every verb by `opengemma.cli.main`.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import typer

from opengemma.errors import OpenGemmaError

MODEL_HELP = "A .gguf file or a Hugging Face model directory; default: the embedded Gemma 3 270M."
THREADS_HELP = "CPU threads: a number, or auto (time 1 vs all on this machine; the default)."
DTYPE_HELP = "Compute dtype: float32 (the exact reference), bfloat16 or float16."
ADAPTER_HELP = "A LoRA adapter directory (PEFT format, e.g. from opengemma tune) to apply."
QUANT_HELP = (
    "Weights in memory: q8 (int8 blocks, fast), none (dtype), auto (q8 for quantized GGUFs)."
)


def human_size(n: float) -> str:
    """Bytes as B / KB / MB / GB (powers of 1000)."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def cli_errors(fn: Callable) -> Callable:
    """Turn our errors into a one-line message on stderr and exit status 1 (2 for a UsageError).

    `opengemma.cli.main` holds every verb to the same contract; this keeps it for a verb's app
    called directly (tests, `python -m opengemma.tune`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OpenGemmaError as exc:
            from opengemma.errors import UsageError

            eprint(error_line(exc))
            raise typer.Exit(USAGE if isinstance(exc, UsageError) else FAILURE) from None
        except KeyboardInterrupt:
            eprint("\nopengemma: interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(0) from None

    return wrapper


def check_threads(value: str | None) -> str | None:
    """Option callback for --threads: None, `auto` or a positive integer (a usage error else)."""
    if value is None or value == "auto" or (value.isdigit() and int(value) > 0):
        return value
    raise typer.BadParameter(f"{value!r} is neither a positive number of threads nor auto")


def announce_loaded(lm, quiet: bool):
    """Print the one `loaded ...` line on stderr (unless quiet) and return `lm`."""
    if not quiet:
        import torch

        eprint(
            f"loaded {lm.name} in {lm.load_seconds:.1f}s ({lm.config.family}, {lm.model.dtype}, "
            f"weights {'int8 blocks' if lm.quant == 'q8' else 'as stored'}, "
            f"{torch.get_num_threads()} thread(s))"
        )
    return lm


def sampling_kwargs(temperature: float, top_k: int, top_p: float, min_p: float,
                    repetition_penalty: float, seed: int | None) -> dict[str, Any]:  # fmt: skip
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                repetition_penalty=repetition_penalty, seed=seed)  # fmt: skip


def stream_to_stdout(chunks, quiet: bool) -> str:
    """Print chunks as they come; report speed on stderr. Returns the finish reason."""
    start = time.perf_counter()
    n, reason = 0, None
    for chunk in chunks:
        sys.stdout.write(chunk)
        sys.stdout.flush()
        n += 1
        reason = chunk.finish_reason
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not quiet and n:
        elapsed = time.perf_counter() - start
        eprint(f"[{n} tokens in {elapsed:.2f}s, {n / elapsed:.1f} tok/s, finish: {reason}]")
    return reason or ""


# ---------------------------------------------------------------- the error contract of every verb
# top-level module of an optional dependency -> the extra that installs it
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "starlette": "serve",
          "prometheus_client": "serve", "llguidance": "serve", "pyarrow": "scrub",
          "spacy": "scrub", "gender_guesser": "scrub", "matplotlib": "safety", "lm_eval": "eval",
          "ray": "ray", "llama_cpp": "bench", "transformers": "bench", "accelerate": "bench",
          "presidio_analyzer": "bench", "httpx": "bench"}  # fmt: skip
USAGE, FAILURE, INTERRUPTED = 2, 1, 130
TRACEBACK_ENV = "OPENGEMMA_TRACEBACK"  # set to 1 to let an unexpected error show its traceback


def error_line(message: object) -> str:
    """`opengemma: error: MESSAGE` on one line (newlines in the message become `; `)."""
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"opengemma: error: {text or 'failed'}"


def missing_module_message(exc: ModuleNotFoundError) -> str:
    name = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return f"cannot import {exc.name}: {exc}"
    return (f"this needs the optional package {name}; install it with "
            f"pip install 'opengemma[{extra}]'")  # fmt: skip


def run_verb(load_app: Callable[[], Any], args: list[str], prog: str) -> int:
    """Run one verb's Typer app and return its exit status, holding every verb to the contract:
    a usage error (unknown option, a value of the wrong type or out of range, a missing
    argument, `UsageError`) prints one line and returns 2; any other failure (our errors, a
    missing optional dependency, an unreadable file, an unexpected exception) prints one line
    and returns 1; never a traceback (unless $OPENGEMMA_TRACEBACK=1). `load_app` imports the
    verb's module inside the contract, so a missing extra at import time is reported too."""
    try:
        command = typer.main.get_command(load_app())  # click, without Typer's rich tracebacks
        status = command.main(args=args, prog_name=prog, standalone_mode=False)
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        eprint("\nopengemma: interrupted")
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        message, status = failure(exc, prog)
        if status:
            eprint(error_line(message))
        return status


def failure(exc: Exception, prog: str = "opengemma") -> tuple[str, int]:
    """The one-line message and the exit status for an exception that ended a verb."""
    import os

    from opengemma.errors import UsageError

    if _is_click_error(exc):  # click's (or Typer's vendored click's) own errors
        usage = exc.exit_code == USAGE
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {prog} --help)" if usage and ctx is not None else ""
        message = exc.format_message()
        if not message.strip() and ctx is not None and hasattr(ctx.command, "list_commands"):
            verbs = ", ".join(ctx.command.list_commands(ctx))
            message = f"{ctx.command_path} needs a command: {verbs}"
        return message + hint, USAGE if usage else (exc.exit_code or FAILURE)
    if isinstance(exc, UsageError):
        return str(exc), USAGE
    if isinstance(exc, OpenGemmaError):
        return str(exc), FAILURE
    if isinstance(exc, BrokenPipeError):  # `opengemma run ... | head`
        _silence_stdout()
        return "", 0
    if isinstance(exc, ModuleNotFoundError):
        return missing_module_message(exc), FAILURE
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", FAILURE
    if os.environ.get(TRACEBACK_ENV) == "1":
        raise exc
    return (f"unexpected {type(exc).__name__}: {exc} (set {TRACEBACK_ENV}=1 to see where; "
            "please report it)"), FAILURE  # fmt: skip


def _is_click_error(exc: Exception) -> bool:
    """A click.ClickException, whichever click (Typer >= 0.20 vendors its own copy)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return "ClickException" in names and hasattr(exc, "format_message")


def _silence_stdout() -> None:
    """After a closed pipe (`opengemma run ... | head`), drop what is left to flush."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
