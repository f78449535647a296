"""Fine-tuning: LoRA / QLoRA adapters in the PEFT format, one recipe from one CPU to FSDP.

`opengemma tune` (cli.py) runs `recipe.main`; `lora.py` wraps the decoder's linears and saves
and loads adapters; `data.py` turns JSONL records into ids + loss masks.
"""

from opengemma.lora import (
    AdapterError,
    LoRAConfig,
    apply_lora,
    load_adapter,
    merge,
    save_adapter,
    unmerge,
)

__all__ = [
    "AdapterError",
    "LoRAConfig",
    "apply_lora",
    "load_adapter",
    "merge",
    "save_adapter",
    "unmerge",
]
