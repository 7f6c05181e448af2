"""`deepgen edit` (see deepgen.inference.cli)."""

from deepgen.inference.cli import add_edit_arguments as add_arguments
from deepgen.inference.cli import run_edit as run

__all__ = ["add_arguments", "run"]
