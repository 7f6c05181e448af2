"""The Kedro environments as `kedro run --env <env>` loads them (the project's settings and config loader): each builds
its catalog and parameters, every parameter the default pipeline reads exists and is accepted by its typed config,
the model builds (on the meta device: no weights); conf/cluster is conf/example_real at full size, key for key; and
runtime `--params` change single values, also on sections an environment does not define."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines, settings
from kedro.framework.startup import bootstrap_project

from deepgen.curation.params import CurationParams, build_source
from deepgen.model.config import preset
from deepgen.model.schedule import meta_model
from deepgen.train.config import StageConfig

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("vae", "alignment", "sft", "rl")
CLUSTER_ONLY = {"scaling", "parallel", "precision", "note"}  # how a stage runs on GPUs, and prose


@pytest.fixture(scope="module", autouse=True)
def project():
    bootstrap_project(ROOT)


def loader(env: str | None, runtime: dict | None = None):
    return settings.CONFIG_LOADER_CLASS(conf_source=str(ROOT / "conf"), env=env, runtime_params=runtime or {},
                                        **settings.CONFIG_LOADER_ARGS)


def catalog_of(config) -> object:
    return settings.DATA_CATALOG_CLASS.from_config(config["catalog"], config["credentials"])


def nested(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("env", ["example_real", "cluster"])
def test_env_builds_catalog_parameters_and_model(env):
    config = loader(env)
    params, catalog = config["parameters"], catalog_of(config)
    for name in sorted(pipelines["__default__"].inputs()):  # what `kedro run --env <env>` needs before any node
        if name.startswith("params:"):
            nested(params, name[len("params:"):])
        else:
            assert catalog.get(name) is not None, name
    assert catalog.get("vae_record") is not None and catalog.get("run_summary") is not None
    curation = CurationParams.from_dict(params["curation"])
    assert build_source(curation).type == "folder"
    for stage in STAGES:
        StageConfig.from_dict(stage, params[stage])
    assert params["vae"]["steps"] == 0 and params["vae"]["trainable"] == []  # the pretrained VAE is packaged as is
    model = params["model"]
    cfg = preset(model["preset"], model["overrides"])
    assert {part: getattr(cfg, part).pretrained for part in ("vlm", "dit", "vae")} == {
        part: model["overrides"][part]["pretrained"] for part in ("vlm", "dit", "vae")}
    parameters = sum(p.numel() for p in meta_model(cfg).parameters())
    assert parameters > 4e9 if env == "cluster" else parameters < 1e7
    # curated sides are what the model generates: a multiple its VAE and DiT patches divide (tiny 8, full 32)
    assert (curation.image_size, curation.resize["multiple"]) == (cfg.image_size, cfg.size_multiple)


def test_cluster_is_example_real_at_full_size():
    small, full = loader("example_real")["parameters"], loader("cluster")["parameters"]
    for section in ("model", "storage", "tracking", "ray", "curation", "rl_prompts", *STAGES):
        assert section in full, f"conf/cluster does not set {section} (conf/example_real does)"
    assert full["model"]["overrides"].keys() == small["model"]["overrides"].keys()
    assert small["curation"].keys() == full["curation"].keys()
    assert small["curation"]["source"].keys() == full["curation"]["source"].keys()
    assert small["curation"]["filters"].keys() == full["curation"]["filters"].keys()
    assert small["rl_prompts"] == full["rl_prompts"]
    for stage in STAGES:
        assert small[stage].keys() - CLUSTER_ONLY == full[stage].keys() - CLUSTER_ONLY, stage
        for key in ("objective", "trainable", "keep"):
            assert small[stage].get(key) == full[stage].get(key), (stage, key)
    assert small["rl"]["grpo"].keys() == full["rl"]["grpo"].keys()
    assert all(p.startswith("s3://") for p in full["storage"].values())
    assert full["curation"]["source"]["uri"].startswith("s3://")


def test_runtime_params_with_an_environment(tmp_path):
    runtime = {"curation": {"source": {"uri": str(tmp_path / "photos")}}, "data_root": str(tmp_path / "d"),
               "evaluation": {"steps": 2}, "promotion": {"report": {"prompts": 2}}}
    config = loader("example_real", runtime)
    params = config["parameters"]
    assert params["curation"]["source"] == {"type": "folder", "uri": str(tmp_path / "photos"), "caption_ext": "txt",
                                            "category": "general"}
    assert params["curation"]["image_size"] == 64 and params["curation"]["resize"]["multiple"] == 8
    assert params["evaluation"]["steps"] == 2 and params["evaluation"]["per_category"] == 4  # the env's section
    # a section the environment does not define: the base section with the one value changed (stock Kedro: only it)
    base = loader(None)["parameters"]["promotion"]
    assert params["promotion"] == {**base, "report": {**base["report"], "prompts": 2}}
    stock = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env="example_real", runtime_params=runtime,
                              **settings.CONFIG_LOADER_ARGS)["parameters"]
    assert stock["promotion"] == {"report": {"prompts": 2}}  # the trap this project's loader removes
    assert params["storage"]["shards"] == str(tmp_path / "d" / "03_primary" / "shards")
    assert str(catalog_of(config).get("run_summary")._filepath).startswith(str(tmp_path / "d"))


@pytest.mark.parametrize("runtime", [{}, {"data_root": "/tmp/x", "sft": {"steps": 600}, "curation": {"seed": 3}}])
def test_default_environment_loads_as_kedro_does(runtime):
    mine = loader(None, runtime)["parameters"]
    stock = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=None, runtime_params=runtime,
                              **settings.CONFIG_LOADER_ARGS)["parameters"]
    assert mine == stock
