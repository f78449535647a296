"""`opengemma info MODEL`: config, tensor inventory by type, and size."""

from __future__ import annotations

import json

import typer

from opengemma.cli_support import MODEL_HELP, cli_errors, human_size

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@cli_errors
def info(
    model: str = typer.Argument(None, help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    tensors: bool = typer.Option(False, "--tensors", help="List every tensor."),
    system: bool = typer.Option(
        False, "--system", help="Show this CPU's features and the native kernel variant it runs."
    ),
) -> None:
    """Show MODEL's configuration, tensor types and size without building the model."""
    if system:
        return _system(as_json)
    import torch

    from opengemma.api import default_model_path
    from opengemma.checkpoint import load_checkpoint

    path = default_model_path() if model is None else model
    ckpt = load_checkpoint(path, torch.float32)
    cfg = ckpt.config
    params = sum(t.numel() for t in ckpt.tensors.values())
    summary = {
        "path": str(ckpt.path),
        "format": ckpt.format,
        "parameters": params,
        "tensor_bytes": ckpt.info.get("tensor_bytes"),
        "tensor_types": dict(ckpt.info.get("tensor_types", {})),
        "config": cfg.to_dict(),
        "derived": _derived(cfg),
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{ckpt.path.name}[/]  ({ckpt.format}, {cfg.family})")
    console.print(
        f"parameters: {params / 1e6:.1f} M   stored: {human_size(summary['tensor_bytes'] or 0)}"
    )
    table = Table("field", "value", box=None)
    for key, value in cfg.to_dict().items():
        if key == "layer_types":
            value = (
                "".join("S" if k == "sliding" else "G" for k in value) + "  (S=sliding, G=global)"
            )
        table.add_row(key, str(value))
    for key, value in _derived(cfg).items():
        table.add_row(key, value)
    console.print(table)
    types = Table("tensor type", "count", box=None)
    for name, count in sorted(summary["tensor_types"].items()):
        types.add_row(name, str(count))
    console.print(types)
    if tensors and "tensors" in ckpt.info:
        listing = Table("tensor", "type", "shape", "bytes", box=None)
        for name, kind, shape, nbytes in ckpt.info["tensors"]:
            listing.add_row(name, kind, "x".join(map(str, shape)), human_size(nbytes))
        console.print(listing)


def _derived(cfg) -> dict[str, str]:
    """Per-layer facts the fields imply: who shares whose keys/values, which decode path runs."""
    from opengemma.native_decode import native_unsupported

    out = {}
    shared = {i: cfg.kv_source(i) for i in range(cfg.num_layers) if cfg.kv_source(i) != i}
    if shared:
        sources = sorted(set(shared.values()))
        out["kv sharing"] = (f"layers {min(shared)}-{max(shared)} reuse the keys/values of "
                             f"layer {' / '.join(map(str, sources))}")  # fmt: skip
    if cfg.global_head_dim or cfg.num_global_kv_heads:
        g = cfg.layer_types.index("global") if "global" in cfg.layer_types else 0
        k_eq_v = ", keys as values" if cfg.attention_k_eq_v else ""
        out["global layers"] = (f"head_dim {cfg.layer_head_dim(g)}, {cfg.layer_kv_heads(g)} KV "
                                f"heads{k_eq_v}")  # fmt: skip
    lacking = native_unsupported(cfg)
    out["int8 decode step"] = "native" if not lacking else "PyTorch (native step lacks: " + (
        ", ".join(lacking) + ")")  # fmt: skip
    return out


def _system(as_json: bool) -> None:
    from opengemma.kernels import system_info

    report = system_info()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    kernel = report["kernel"]
    print(f"machine: {report['machine']}  cpu: {report['cpu']}")
    print(f"cpu features: {' '.join(report['features']) or '(none detected)'}")
    if report["features_masked"]:
        print(f"masked by OPENGEMMA_CPU_FEATURES: {' '.join(report['features_masked'])}")
    print(f"kernel variants this cpu runs: {', '.join(report['runnable_variants'])}")
    if kernel["variant"]:
        print(f"kernel variant: {kernel['variant']} ({kernel['source']}: {kernel['path']})")
    else:
        print(f"kernel variant: none, PyTorch fallbacks ({kernel['reason']})")
