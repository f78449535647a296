"""Every verb keeps one error contract: a bad argument gives one line `opengemma: error: ...` on
stderr, exit status 2 for a usage error and 1 for a failure, and never a traceback.

The verbs and their options are discovered from the Typer apps registered in `opengemma.cli`
(subcommands included), so a verb added later is walked without editing this file.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from opengemma.cli import VERBS, main

NUMERIC = {"integer", "float", "integer range", "float range"}
BAD_OPTION = "--no-such-option-anywhere"
NETWORK_VERBS = {"pull"}  # never run past argument parsing (it would reach the Hub)


def leaf_commands() -> list[tuple[list[str], object]]:
    """(argv prefix, click command) for every runnable command of every registered verb."""
    out = []
    for verb, (module, attr, _) in VERBS.items():
        command = typer.main.get_command(getattr(importlib.import_module(module), attr))
        stack = [([verb], command)]
        while stack:
            path, cmd = stack.pop()
            subs = getattr(cmd, "commands", None)
            if subs:
                stack += [(path + [name], sub) for name, sub in subs.items()]
            else:
                out.append((path, cmd))
    return sorted(out, key=lambda item: item[0])


LEAVES = leaf_commands()


def _required_arguments(cmd, folder: Path) -> list[str]:
    """Placeholder values for the required positional arguments (paths that do not exist)."""
    return [str(folder / f"missing-{p.name}") for p in cmd.params
            if p.param_type_name == "argument" and p.required]  # fmt: skip


def _numeric(param) -> bool:
    """An int or float option (Typer >= 0.20 keeps the annotation, older ones a click type)."""
    described = getattr(param, "type_descriptor", None)
    if described is not None:
        return described.annotation in (int, float)
    return getattr(getattr(param, "type", None), "name", "") in NUMERIC


def _minimum(param):
    low = getattr(param, "min", None)
    return low if low is not None else getattr(getattr(param, "type", None), "min", None)


def _flag(param) -> str:
    return max(param.opts, key=len)


def bad_argument_cases(path: list[str], cmd, folder: Path) -> list[tuple[list[str], set[int]]]:
    """(argv, allowed exit statuses) for one command."""
    args = _required_arguments(cmd, folder)
    cases = [([*path, BAD_OPTION, *args], {2})]
    for p in cmd.params:
        if p.param_type_name != "option" or p.is_flag or p.hidden:
            continue
        if _numeric(p):
            cases.append(([*path, *args, _flag(p), "two"], {2}))
            low = _minimum(p)
            if low is not None:
                cases.append(([*path, *args, _flag(p), str(low - 1)], {2}))
        if p.name == "threads":
            cases.append(([*path, *args, _flag(p), "two"], {2}))
    if path[0] not in NETWORK_VERBS and args:
        cases.append(([*path, *args], {1, 2}))  # inputs that do not exist: a clean refusal
    return cases


def assert_contract(argv: list[str], allowed: set[int], status: int, err: str,
                    diagnostics: bool = False) -> None:  # fmt: skip
    """One `opengemma: error:` line, the only line on stderr (or, with `diagnostics`, the
    last one after the verb's own notes), an allowed status, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status in allowed, (argv, status, err)
    assert "Traceback" not in err, (argv, err)
    errors = [line for line in lines if line.startswith("opengemma: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], (argv, err)
    assert diagnostics or len(lines) == 1, (argv, err)


def test_every_registered_verb_is_walked():
    walked = {path[0] for path, _ in LEAVES}
    assert walked == set(VERBS)
    # the verbs the contract names, and the subcommands of the groups
    assert {"run", "chat", "info", "convert", "pull", "merge", "serve", "scrub", "eval", "tune",
            "bench", "guard", "watermark"} <= walked  # fmt: skip
    assert ["eval", "perplexity"] in [path for path, _ in LEAVES]


@pytest.mark.parametrize("path,cmd", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_bad_arguments_give_one_line_and_a_status(path, cmd, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a verb might write lands in the tree
    cases = bad_argument_cases(path, cmd, tmp_path)
    assert cases
    for argv, allowed in cases:
        status = main(argv)
        assert_contract(argv, allowed, status, capfd.readouterr().err)


@pytest.mark.parametrize(
    "argv,status,fragment",
    [
        (["run", "hi", "--threads", "two"], 2, "--threads"),
        (["chat", "--threads", "two"], 2, "--threads"),
        (["run", "hi", "--threads", "0"], 2, "--threads"),
        (["run", "hi", "--max-tokens", "many"], 2, "--max-tokens"),
        (["eval"], 2, "needs a command"),
        (["watermark", "detect"], 2, "Missing argument"),
        (["info", "/nonexistent/model.gguf"], 1, "no such file"),
        (["convert", "/nonexistent/model.gguf", "out", "--to", "hf"], 1, "no such file"),
    ],
)
def test_named_bad_values(argv, status, fragment, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = main(argv)
    err = capfd.readouterr().err
    assert_contract(argv, {status}, got, err)
    assert fragment in err


def test_serve_port_out_of_range(capfd, tmp_path):
    argv = ["serve", "--port", "99999", "--model", str(tmp_path / "missing.gguf")]
    got = main(argv)
    assert_contract(argv, {2}, got, capfd.readouterr().err)


@pytest.mark.parametrize(
    "module,argv,extra",
    [
        ("uvicorn", ["serve", "--port", "8765"], "serve"),
        ("pyarrow", ["scrub", "IN.parquet", "-o", "out.parquet"], "scrub"),
        ("matplotlib", ["eval", "safety", "--prompts", "IN.txt", "-o", "report", "--max-tokens",
                        "2", "-q"], "safety"),
    ],
)  # fmt: skip
def test_missing_optional_extra_says_what_to_install(module, argv, extra, tmp_path, capfd,
                                                     monkeypatch):  # fmt: skip
    """With the extra's package absent, the verb names it and the pip extra to install."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "IN.txt").write_text("Hello there\n")
    _write_parquet_placeholder(tmp_path / "IN.parquet")
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails
    argv = [a.replace("IN.", str(tmp_path / "IN.")) for a in argv]
    got = main(argv)
    err = capfd.readouterr().err
    assert_contract(argv, {1}, got, err, diagnostics=True)
    assert module in err and f"opengemma[{extra}]" in err


def _write_parquet_placeholder(path: Path) -> None:
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")


def test_unexpected_exception_is_one_line_in_a_real_process(tmp_path):
    """A bug inside a verb (here: a ValueError nobody anticipated) still reaches the user as
    one line, from a real `python -m opengemma` process."""
    code = (
        "import sys, opengemma.commands.info as info\n"
        "def boom(*a, **k):\n    raise ValueError('wrong in here')\n"
        "info.__dict__['_show'] = boom\n"
        "import opengemma.checkpoint.load as load\n"
        "load.load_checkpoint = boom\n"
        "import opengemma.checkpoint as ck\nck.load_checkpoint = boom\n"
        "from opengemma.cli import main\nsys.exit(main(['info', 'x.gguf']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    assert_contract(["info"], {1}, proc.returncode, proc.stderr)
    assert "unexpected ValueError: wrong in here" in proc.stderr


def test_python_dash_m_opengemma_keeps_the_contract(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "opengemma", "run", "hi", "--threads", "two"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert_contract(["run"], {2}, proc.returncode, proc.stderr)
    assert proc.stdout == ""
