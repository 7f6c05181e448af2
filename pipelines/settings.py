"""Kedro project settings: the MLflow run hook, and OmegaConf so parameters can be merged per environment."""

from kedro.config import OmegaConfigLoader

from pipelines.hooks import MlflowRunHook

HOOKS = (MlflowRunHook(),)
CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}
