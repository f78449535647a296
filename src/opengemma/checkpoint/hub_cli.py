"""`opengemma pull REPO_ID` and `opengemma list`: the local cache of Hub checkpoints."""

from __future__ import annotations

import typer

from opengemma.cli_support import cli_errors, eprint, human_size

pull_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
list_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@pull_app.command()
@cli_errors
def pull(
    repo_id: str = typer.Argument(..., help="owner/name on the Hugging Face Hub."),
    revision: str = typer.Option(None, "--revision", help="Branch, tag or commit (default main)."),
    include: list[str] = typer.Option(  # noqa: B008
        None,
        "--include",
        help="Glob of files to fetch (repeatable); default: configs, weights, tokenizer.",
    ),  # fmt: skip
) -> None:
    """Fetch a checkpoint into the local cache (resumable); then use it as --model REPO_ID."""
    from opengemma.checkpoint.hub import model_in_snapshot
    from opengemma.checkpoint.hub import pull as run

    snap = run(repo_id, revision, include or None)
    model = model_in_snapshot(snap, repo_id) if any(snap.iterdir()) else snap
    print(model)
    eprint(f"pulled {repo_id} into {snap}; run it with --model {repo_id}")


@list_app.command("list")
@cli_errors
def list_models() -> None:
    """Show the models in the local cache (repo id, size, revisions)."""
    from opengemma.checkpoint.hub import cache_dir, list_cached

    models = list_cached()
    if not models:
        eprint(f"no models in {cache_dir()}; fetch one with `opengemma pull OWNER/NAME`")
        return
    width = max(len(m.repo_id) for m in models)
    for m in models:
        refs = ",".join(m.refs) or "-"
        print(f"{m.repo_id.ljust(width)}  {human_size(m.size_bytes):>9}  {refs}  "
              f"{' '.join(m.revisions)}  {m.path}")  # fmt: skip
