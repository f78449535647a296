"""`python -m opengemma.tune ...` (what `torchrun --nproc_per_node N -m opengemma.tune` runs)."""

from opengemma.tune.cli import app

if __name__ == "__main__":
    app(prog_name="opengemma tune")
