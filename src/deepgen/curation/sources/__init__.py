"""Curation sources: one interface (`Source`, yielding `RawRecord`s), chosen in conf by `type`."""

from __future__ import annotations

from deepgen.curation.sources.base import FileRef, JsonField, RawRecord, Source, safe_key, unsafe_path
from deepgen.curation.sources.deepgen_json import DeepGenJsonSource
from deepgen.curation.sources.folder import FolderSource
from deepgen.curation.sources.prompts import PromptSource
from deepgen.curation.sources.shapes_world import ShapesWorldSource
from deepgen.curation.sources.tars import TarSource

SOURCES = {"shapes_world": ShapesWorldSource, "folder": FolderSource, "deepgen_json": DeepGenJsonSource,
           "webdataset": TarSource, "img2dataset": TarSource, "prompts": PromptSource}

__all__ = ["SOURCES", "DeepGenJsonSource", "FileRef", "FolderSource", "JsonField", "PromptSource", "RawRecord",
           "ShapesWorldSource", "Source", "TarSource", "make_source", "safe_key", "unsafe_path"]


def make_source(options: dict | str, *, shapes_world: dict | None = None) -> Source:
    """The source named by `options["type"]` built from the rest of `options` (a bare string is just the type).
    ShapesWorld takes its settings from the curation parameters (`shapes_world`: num_samples, seed, image_size, mix,
    heldout_fraction) unless `options` gives them."""
    options = {"type": options} if isinstance(options, str) else dict(options)
    kind = options.pop("type", "shapes_world")
    if kind not in SOURCES:
        raise ValueError(f"curation.source.type: unknown source {kind!r} (expected one of {sorted(SOURCES)})")
    if kind == "shapes_world":
        options = {**(shapes_world or {}), **options}
    try:
        return SOURCES[kind](**options)
    except TypeError as e:
        raise ValueError(f"curation.source ({kind}): {e}") from None
