"""Kedro project settings: the MLflow run hook, and OmegaConf so parameters can be merged per environment (an
environment's section replaces the base's; `--params` apply to the result: pipelines/config_loader.py)."""

import warnings

# Kedro 1.7's config loader registers its own resolvers through OmegaConf 2.4's deprecated register_new_resolver():
# four UserWarnings in every kedro command that only a Kedro release can fix (before the import that triggers them)
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

from pipelines.config_loader import ConfigLoader  # noqa: E402
from pipelines.hooks import InputsHook, MlflowRunHook  # noqa: E402

HOOKS = (MlflowRunHook(), InputsHook())  # pluggy calls the last registered first: the check precedes the run
CONFIG_LOADER_CLASS = ConfigLoader
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}
