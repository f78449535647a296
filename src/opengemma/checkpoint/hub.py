"""The Hugging Face Hub: `pull` a repo into the local cache, `list` what is cached, and turn a
repo id into a local path for `--model`.

The cache is huggingface_hub's own layout (so models fetched by other tools are found too):
`$OPENGEMMA_HUB_CACHE`, else `$HF_HUB_CACHE`, else huggingface_hub's default. Downloads resume
where they stopped; nothing is fetched except by `pull`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from opengemma.checkpoint.errors import CheckpointError

DEFAULT_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.gguf", "*.ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}(@[\w./-]{1,200})?$")


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    revisions: tuple[str, ...]  # commit hashes (short) held in the cache
    refs: tuple[str, ...]  # branch/tag names pointing at them
    size_bytes: int
    path: Path  # the snapshot folder of the newest revision


def cache_dir() -> Path:
    """Where pulled repos live (read at call time, so the environment can redirect it)."""
    env = os.environ.get("OPENGEMMA_HUB_CACHE") or os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def looks_like_repo_id(spec: str) -> bool:
    """True for `owner/name` or `owner/name@revision` (not a path that merely does not exist)."""
    return bool(_REPO_ID.match(spec)) and ".." not in spec


def _split(spec: str) -> tuple[str, str | None]:
    repo, _, revision = spec.partition("@")
    return repo, revision or None


def pull(spec: str, revision: str | None = None, patterns: list[str] | None = None,
         token: str | None = None) -> Path:  # fmt: skip
    """Download `owner/name` (at `revision`) into the cache; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    repo, rev = _split(spec)
    if not looks_like_repo_id(repo):
        raise CheckpointError(f"{spec!r} is not a Hub repo id; write it as owner/name")
    try:
        path = snapshot_download(
            repo,
            revision=revision or rev,
            cache_dir=cache_dir(),
            allow_patterns=list(patterns or DEFAULT_PATTERNS),
            token=token,
        )
    except Exception as exc:  # translated below: every Hub failure becomes one clear message
        raise hub_error(exc, repo) from None
    return Path(path)


def hub_error(exc: Exception, repo: str) -> CheckpointError:
    """A CheckpointError that says what to do for a huggingface_hub failure."""
    from huggingface_hub import errors as e

    url = f"https://huggingface.co/{repo}"
    if isinstance(exc, e.GatedRepoError):
        return CheckpointError(
            f"{repo} is gated: accept its license at {url} while logged in, then authenticate "
            "here with `hf auth login` or by setting HF_TOKEN, and pull again"
        )
    if isinstance(exc, e.RepositoryNotFoundError):
        return CheckpointError(
            f"no repo {repo} on the Hub (or it is private: authenticate with `hf auth login` "
            "or HF_TOKEN); check the spelling at https://huggingface.co/models"
        )
    if isinstance(exc, e.RevisionNotFoundError):
        return CheckpointError(f"{repo} has no such revision; see the branches at {url}")
    if isinstance(exc, (e.LocalEntryNotFoundError, e.OfflineModeIsEnabled)):
        return CheckpointError(
            f"cannot reach the Hub to fetch {repo}, and it is not in the cache at {cache_dir()}; "
            "check the network (or unset HF_HUB_OFFLINE) and pull again: downloads resume"
        )
    return CheckpointError(f"pulling {repo} failed: {str(exc).splitlines()[0][:200]}; pull "
                           "again to resume")  # fmt: skip


def resolve_cached(spec: str) -> Path:
    """The local model (directory or .gguf file) of a pulled repo id, without the network."""
    from huggingface_hub import snapshot_download

    repo, rev = _split(spec)
    try:
        snap = Path(snapshot_download(repo, revision=rev, cache_dir=cache_dir(),
                                      local_files_only=True))  # fmt: skip
    except Exception:  # not cached (or cache unreadable): say how to fetch it
        raise CheckpointError(
            f"{spec} is neither a local path nor a repo in the cache at {cache_dir()}; fetch it "
            f"with `opengemma pull {repo}`"
        ) from None
    return model_in_snapshot(snap, spec)


def model_in_snapshot(snap: Path, spec: str) -> Path:
    """The model inside a snapshot: the folder (config.json) or its single .gguf/.ckpt file."""
    if (snap / "config.json").is_file():
        return snap
    files = sorted(p for p in snap.iterdir() if p.suffix in (".gguf", ".ckpt"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise CheckpointError(f"{spec} holds no model (no config.json, .gguf or .ckpt) in {snap}")
    names = ", ".join(p.name for p in files)
    raise CheckpointError(f"{spec} holds several model files ({names}); pass one of them as "
                          f"a path under {snap}")  # fmt: skip


def list_cached() -> list[CachedModel]:
    """Every model repo in the cache, newest revision first in each."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    root = cache_dir()
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        revs = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        refs = tuple(sorted(ref for r in revs for ref in r.refs))
        out.append(
            CachedModel(
                repo.repo_id,
                tuple(r.commit_hash[:8] for r in revs),
                refs,
                repo.size_on_disk,
                Path(revs[0].snapshot_path) if revs else root,
            )
        )
    return out
