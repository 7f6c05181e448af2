"""`deepgen generate` (see deepgen.inference.cli)."""

from deepgen.inference.cli import add_generate_arguments as add_arguments
from deepgen.inference.cli import run_generate as run

__all__ = ["add_arguments", "run"]
