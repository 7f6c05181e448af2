"""Kedro project settings: the MLflow run hook, and OmegaConf so parameters can be merged per environment (an
environment's section replaces the base's; `--params` apply to the result: pipelines/config_loader.py)."""

from pipelines.config_loader import ConfigLoader
from pipelines.hooks import MlflowRunHook

HOOKS = (MlflowRunHook(),)
CONFIG_LOADER_CLASS = ConfigLoader
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}
