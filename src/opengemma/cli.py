"""The `opengemma` command.

Each verb lives in its own module and is imported only when it runs, so `opengemma scrub`
never pays for importing torch and `opengemma run` never imports the data pipeline. Every verb
registered here gets the same error contract from `cli_support.run_verb`: one line
`opengemma: error: ...` on stderr, exit 2 for usage errors and 1 for failures, no traceback.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, attribute holding a typer.Typer app, one-line help)
VERBS: dict[str, tuple[str, str, str]] = {
    "run": ("opengemma.commands.run", "app", "Complete a prompt, streaming the continuation."),
    "chat": ("opengemma.commands.chat_loop", "app", "Multi-turn chat, Gemma turn template."),
    "embed": ("opengemma.embed.cli", "app", "Sentence embeddings of texts (EmbeddingGemma)."),
    "info": ("opengemma.commands.info", "app", "Show a model's config and tensor inventory."),
    "build-kernels": ("opengemma.commands.build_kernels", "app",
                      "Compile the native CPU kernel variants ahead of time."),
    "scrub": ("opengemma.data.cli", "app", "Scrub personal data and secrets from corpora."),
    "batch": ("opengemma.batch.cli", "app", "Offline generation / guard scoring over JSONL."),
    "convert": ("opengemma.checkpoint.convert_cli", "app", "Convert between GGUF and HF formats."),
    "pull": ("opengemma.checkpoint.hub_cli", "pull_app", "Fetch a model from the Hugging Face Hub"),
    "list": ("opengemma.checkpoint.hub_cli", "list_app", "List models pulled into the local cache"),
    "guard": ("opengemma.safety.guard_cli", "app", "Score text against safety policies."),
    "watermark": ("opengemma.safety.watermark_cli", "app", "SynthID Text watermark keys/detect."),
    "serve": ("opengemma.server.cli", "app", "Serve a model over the OpenAI API (+ Vertex AI)."),
    "tune": ("opengemma.tune.cli", "app", "Fine-tune with LoRA / QLoRA; PEFT adapters out."),
    "merge": ("opengemma.tune.merge_cli", "app", "Fold a LoRA adapter into a model and export."),
    "bench": ("opengemma.benchmark.cli", "app", "Speed and perplexity vs llama.cpp, transformers."),
    "eval": ("opengemma.eval.cli", "app", "lm-eval tasks, perplexity, side-by-side compare."),
}


def _usage() -> str:
    lines = ["usage: opengemma VERB [OPTIONS] ...", "", "verbs:"]
    width = max(len(v) for v in VERBS)
    for verb, (_, _, help_) in VERBS.items():
        lines.append(f"  {verb.ljust(width)}  {help_}")
    lines.append("")
    lines.append("Run `opengemma VERB --help` for a verb's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from opengemma import __version__

        print(f"opengemma {__version__}")
        return 0
    verb = argv[0]
    if verb not in VERBS:
        print(f"opengemma: unknown verb {verb!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, attr, _ = VERBS[verb]
    from opengemma.cli_support import run_verb

    def load_app():
        return getattr(importlib.import_module(module_name), attr)

    return run_verb(load_app, argv[1:], f"opengemma {verb}")


if __name__ == "__main__":
    sys.exit(main())
