"""The import graph, drawn from the code: no cycles, and every import runs from a higher layer
to a lower one (or within one layer), from the command line down to the foundations.

Every `import` counts, including those inside functions: a lazy import still ties two modules.
Layers (lowest first) are assigned by module-name rules below; a module under a package that
no rule names fails the test, so a new top-level module has to be given its place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import opengemma

ROOT = Path(opengemma.__file__).parent
LAYERS = ["foundations", "core", "generation", "engine", "services", "surface"]

# module (or package prefix) -> layer; the longest matching rule wins
RULES = {
    # foundations: errors, configs, file and CLI plumbing, the native kernel loader
    "opengemma.errors": "foundations",
    "opengemma.config": "foundations",
    "opengemma.atomic": "foundations",
    "opengemma.cli_support": "foundations",
    "opengemma.kernels": "foundations",
    "opengemma.threads": "foundations",
    # core: the model, its weights and files, tokens in and out
    "opengemma.model": "core",
    "opengemma.kv_cache": "core",
    "opengemma.quantized_layers": "core",
    "opengemma.tokenizer_gguf": "core",
    "opengemma.native_decode": "core",
    "opengemma.stored_layers": "core",  # K-quant (Q4_K, Q6_K) layers on the file's blocks
    "opengemma.sampling": "core",
    "opengemma.tokenizer": "core",
    "opengemma.chat": "core",
    "opengemma.checkpoint": "core",
    "opengemma.build": "core",
    "opengemma.lora": "core",
    "opengemma.safety.watermark": "core",  # a logits processor (and its detector)
    "opengemma.embed": "core",  # sentence-embedding heads over the decoder (EmbeddingGemma)
    "opengemma.prefix_cache": "core",  # KV caches shared between requests
    # generation: the public Python API
    "opengemma": "generation",
    "opengemma.generate": "generation",
    "opengemma.speculative": "generation",
    "opengemma.api": "generation",
    "opengemma.tools": "generation",
    # engine: continuous batching, shared by the server and batch jobs
    "opengemma.engine": "engine",
    "opengemma.engine_requests": "engine",
    # services: what the verbs do
    "opengemma.server": "services",
    "opengemma.data": "services",
    "opengemma.safety": "services",
    "opengemma.eval": "services",
    "opengemma.tune": "services",
    "opengemma.benchmark": "services",
    "opengemma.batch": "services",  # offline batch generation
    # surface: the command line
    "opengemma.cli": "surface",
    "opengemma.__main__": "surface",
    "opengemma.commands": "surface",
    "opengemma.tune.__main__": "surface",
}


def module_names() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def layer(module: str) -> str:
    last = module.rsplit(".", 1)[-1]
    if last == "cli" or last.endswith("_cli"):  # every verb's command module
        return "surface"
    # "opengemma" names the package face only, so a new top-level module must get a rule
    rules = [r for r in RULES if module == r or (r != "opengemma" and module.startswith(r + "."))]
    best = max(rules, key=len, default=None)
    assert best is not None, f"{module} has no layer: add a rule for it in {__file__}"
    return RULES[best]


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[tuple[str, int]]:
    """(imported opengemma module, line) for every import statement in `module`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]  # fmt: skip
        else:
            continue
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "opengemma" else None
            if target and target != module:
                found.add((target, node.lineno))
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        assert layer(module) in LAYERS


def test_imports_never_run_upward():
    upward = []
    for module, targets in sorted(GRAPH.items()):
        for target, line in sorted(targets):
            if LAYERS.index(layer(target)) > LAYERS.index(layer(module)):
                upward.append(f"{module}:{line} ({layer(module)}) imports {target} "
                              f"({layer(target)})")  # fmt: skip
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = {m: {t for t, _ in targets} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_graph_is_real():
    """The walker sees known edges (lazy ones included), so an empty result means something."""
    assert ("opengemma.api", 1) not in GRAPH["opengemma.api"]
    assert "opengemma.checkpoint.load" in {t for t, _ in GRAPH["opengemma.checkpoint"]}
    loaded = {t for t, _ in GRAPH["opengemma.checkpoint.load"]}
    assert "opengemma.checkpoint.gguf_checkpoint" in loaded
    assert layer("opengemma.data.cli") == "surface" and layer("opengemma.data.scrub") == "services"


def test_readme_layout_matches_the_tree():
    """Every top-level module and package of src/opengemma appears in README's layout section,
    and everything the section names exists."""
    readme = (ROOT.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0].split("```")[1]  # the tree
    tree = {p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))
            or (p.is_dir() and (p / "__init__.py").exists())}  # fmt: skip
    named = set()
    for line in section.splitlines():
        for word in line.replace(",", " ").split():
            word = word.strip("`:;()")
            if word.endswith(".py") or word.endswith("/"):
                named.add(word.rstrip("/").split("/")[-1] if "/" in word.rstrip("/") else
                          word.rstrip("/"))  # fmt: skip
    stems = {n.removesuffix(".py") for n in named}
    missing = sorted(n for n in tree if n.removesuffix(".py") not in stems)
    assert not missing, f"README's layout section does not mention {missing}"
    top = {n for n in named if (ROOT / n).exists() or (ROOT / f"{n}.py").exists()}
    stale = sorted(n for n in named - top
                   if n.endswith(".py") and not any(ROOT.rglob(n)))  # fmt: skip
    assert not stale, f"README's layout section names files that do not exist: {stale}"


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def test_modules_and_functions_stay_readable():
    """Every module within 500 lines, every function (methods and nested ones included) within
    80, counted from the `def` line to its last line as the parser sees them."""
    long_modules, long_functions = [], []
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if (lines := source.count("\n")) > MAX_MODULE_LINES:
            long_modules.append(f"{name} ({lines} lines)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
