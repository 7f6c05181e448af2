"""Kedro's OmegaConfigLoader with one trap removed: runtime `--params` on a section an environment does not define.

Parameters merge as Kedro's default does: a top-level section an environment defines (conf/cluster's `model:`)
replaces conf/base's whole section, so an environment says completely what its sections mean and nothing of the
tiny run's tuning (a stage's `keep`, the bridge's `lr_scale`) leaks into it. Kedro merges `--params` into the base
and the environment parameters separately and only then merges the two, so a runtime parameter on a section the
environment does not define (`kedro run --env cluster --params evaluation.steps=5`) made the environment side hold a
section of that one key, which then replaced the base's whole `evaluation:`. Here such a section is taken from the
base parameters with the runtime parameters merged in, as with no environment at all. (merge_strategy `soft` would
fix this too, but then every base key an environment's section does not repeat leaks into it, dictionaries merged
key by key: conf/cluster's alignment would train on the tiny run's `keep: {single_object: 1.0, "*": 0.0}`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

CONFIG_SUFFIXES = (".yml", ".yaml", ".json")


class ConfigLoader(OmegaConfigLoader):
    def __getitem__(self, key: str) -> dict[str, Any]:
        config = super().__getitem__(key)
        run_env = self.env or self.default_run_env
        if key != "parameters" or not self.runtime_params or key in self or run_env == self.base_env:
            return config
        defined = self._sections(run_env)
        runtime_only = {name.split(".")[0] for name in self.runtime_params} - defined
        if not runtime_only:
            return config
        base = OmegaConfigLoader(conf_source=self.conf_source, env=self.base_env, base_env=self.base_env,
                                 default_run_env=self.base_env, runtime_params=self.runtime_params,
                                 config_patterns=self.config_patterns)["parameters"]
        return {**config, **{name: base[name] for name in runtime_only if name in base}}

    def _sections(self, env: str) -> set[str]:
        """Top-level keys of the environment's own parameter files (read, not resolved)."""
        folder = Path(self.conf_source) / env
        files = {path for pattern in self.config_patterns["parameters"] for path in folder.glob(pattern)
                 if path.is_file() and path.suffix in CONFIG_SUFFIXES
                 and not any(part.startswith(".") for part in path.relative_to(folder).parts)}
        return {str(name) for path in files for name in (OmegaConf.load(path) or {})}
