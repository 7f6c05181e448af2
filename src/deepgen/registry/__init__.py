"""The MLflow model registry: versions with their scores and provenance, the promotion gate, champion history.

`load` logs, registers and loads versions; `gate` decides from two score dicts; `champion` moves the `champion`
alias (gate, by hand, rollback) and keeps its history; `cli` is `deepgen registry`.
"""

from deepgen.registry.champion import RegistryError, promote, rollback, set_champion
from deepgen.registry.gate import Gate, decide
from deepgen.registry.load import DeepGenPyfunc, load_model, register, registered_checkpoint

__all__ = ["DeepGenPyfunc", "Gate", "RegistryError", "decide", "load_model", "promote", "register",
           "registered_checkpoint", "rollback", "set_champion"]
