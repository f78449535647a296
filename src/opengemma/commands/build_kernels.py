"""`opengemma build-kernels`: compile the native kernel variants ahead of time.

Run where a C compiler is (a wheel build, an image's build stage); the libraries and their
manifests go into the package's kernels/lib/ (or --dir, which $OPENGEMMA_KERNELS_DIR can then
point at), where `opengemma.kernels.native()` finds them on any machine without a compiler,
loading only a variant whose CPU features the running CPU has.
"""

from __future__ import annotations

from pathlib import Path

import typer

from opengemma.cli_support import cli_errors, eprint
from opengemma.errors import OpenGemmaError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class KernelBuildError(OpenGemmaError):
    """The kernel variants asked for could not be compiled."""


@app.command()
@cli_errors
def build_kernels(
    directory: str = typer.Option(
        None, "--dir", help="Where to put them; default: the package's kernels/lib/."
    ),
    variants: str = typer.Option(
        "all",
        "--variants",
        help="Comma-separated variant names, 'all' (every one for this "
        "architecture) or 'cpu' (those this CPU runs).",
    ),  # fmt: skip
) -> None:
    """Compile the kernel variants (avx512-vnni-bf16, avx512-vnni, avx-vnni, avx2, generic)."""
    import subprocess

    from opengemma.kernels import build
    from opengemma.kernels.cpu import cpu_features, machine

    target = Path(directory) if directory else build.SOURCE_DIR / "lib"
    if variants == "all":
        chosen = [v for v in build.VARIANTS if v.arch in (machine(), "any")]
    elif variants == "cpu":
        chosen = build.runnable(cpu_features())
    else:
        names = [n.strip() for n in variants.split(",") if n.strip()]
        unknown = [n for n in names if n not in build.BY_NAME]
        if unknown:
            raise typer.BadParameter(f"unknown variant(s) {', '.join(unknown)}; one of "
                                     f"{', '.join(build.BY_NAME)}")  # fmt: skip
        chosen = [build.BY_NAME[n] for n in names]
    failed = []
    for variant in chosen:
        try:
            path = build.build(variant, target)
        except (OSError, subprocess.SubprocessError) as exc:
            failed.append(variant.name)
            eprint(f"{variant.name}: not built: {(getattr(exc, 'stderr', '') or str(exc)).strip()}")
            continue
        print(f"{variant.name}: {path}")
    if failed:
        raise KernelBuildError(f"could not build {', '.join(failed)}; see the messages above")
