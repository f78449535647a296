"""load_checkpoint(path) -> Checkpoint: config + tensors under opengemma's names, any format.

Formats: GGUF files (llama.cpp, Ollama), Hugging Face directories (config.json + safetensors,
sharded or not), gemma_pytorch `.ckpt` files (torch zip, read with `weights_only=True`), and
repo ids pulled into the local Hub cache. Every file is treated as untrusted: headers are
validated before anything is allocated, and names and shapes are checked against the config
before any tensor data is read.
"""

from opengemma.checkpoint.core import (
    Checkpoint,
    check_config_numbers,
    check_coverage,
    expected_shapes,
)
from opengemma.checkpoint.errors import CheckpointError
from opengemma.checkpoint.load import detect_format, load_checkpoint, resolve_path

__all__ = ["Checkpoint", "CheckpointError", "check_config_numbers", "check_coverage",
           "detect_format", "expected_shapes", "load_checkpoint", "resolve_path"]  # fmt: skip
