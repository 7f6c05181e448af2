"""One record in, one curated result out: read references, check and fix the caption and every image, encode the
shard members, hash for deduplication. Runs in worker processes (`process_batch`), so it must stay pure and picklable.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

from PIL import Image

from deepgen import storage
from deepgen.curation import filters
from deepgen.curation.sources.base import CAPTION_KEYS, FileRef, JsonField, RawRecord, public_settings, safe_key


@dataclass
class Result:
    key: str  # shard-safe key
    origin: str
    kind: str
    category: str
    reasons: list[str] = field(default_factory=list)  # non-empty: quarantined
    fixes: list[str] = field(default_factory=list)
    caption: str | None = None
    meta: dict = field(default_factory=dict)
    heldout: bool = False
    width: int | None = None
    height: int | None = None
    orig_width: int | None = None
    orig_height: int | None = None
    orig_mode: str | None = None
    license: str | None = None  # provenance from the sample's metadata (a sidecar's `license` / `source`), for the
    source: str | None = None  # per-sample manifest
    content_hash: int | None = None  # 64 bits of sha256 over the decoded pixels (+ caption, when configured)
    phash: int | None = None  # perceptual hash of the target image
    aux_phash: int | None = None  # of the first reference image (edits)
    members: dict[str, bytes] | None = None  # webdataset members, set only for a sample that passed

    @property
    def nbytes(self) -> int:
        return sum(len(v) for k, v in (self.members or {}).items() if k != "__key__")


def _read(ref) -> tuple[bytes | None, str | None]:
    try:
        return storage.read_bytes(ref.uri), None
    except FileNotFoundError:
        return None, "missing"
    except Exception as e:  # noqa: BLE001 - S3 errors come in many classes
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        return None, "missing" if code in ("404", "NoSuchKey", "NotFound") else "unreadable"


def _caption(record: RawRecord) -> tuple[object, str | None]:
    raw = record.caption
    if isinstance(raw, FileRef):
        raw, problem = _read(raw)
        if problem:
            return None, "caption_missing" if problem == "missing" else "caption_unreadable"
    elif isinstance(raw, JsonField):
        data, problem = _read(raw.ref)
        if problem:
            return None, "caption_missing" if problem == "missing" else "caption_unreadable"
        try:
            obj = json.loads(data)
        except ValueError:
            return None, "caption_unreadable"
        raw = obj.get(raw.key) if isinstance(obj, dict) else None
    return raw, None


def _apply_sidecar(record: RawRecord) -> str | None:
    """Merge a JSON sidecar into the record: its caption (when there is none yet) and its other fields as metadata."""
    data, problem = _read(record.sidecar)
    if problem:
        return "sidecar_unreadable"
    try:
        obj = json.loads(data)
    except ValueError:
        return "sidecar_unreadable"
    if not isinstance(obj, dict):
        return "sidecar_not_an_object"
    if record.caption is None:
        record.caption = next((obj[k] for k in CAPTION_KEYS if isinstance(obj.get(k), str)), None)
    skip = set(CAPTION_KEYS) | {"source_images", "input_image", "kind", "key"}
    record.meta.update(public_settings({k: v for k, v in obj.items() if k not in skip}))
    return None


PROVENANCE = {"license": ("license", "licence"), "source": ("source", "url")}  # manifest column <- metadata keys


def provenance(meta: dict) -> dict[str, str | None]:
    """The manifest's provenance columns from a sample's metadata: the first of each column's keys that is set."""
    out = {}
    for column, keys in PROVENANCE.items():
        value = next((meta[k] for k in keys if meta.get(k) not in (None, "")), None)
        out[column] = value if value is None or isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


_PASSTHROUGH_INFO = {"dpi", "gamma", "srgb", "aspect", "chromaticity"}  # PNG chunks that may stay as they are


def _image(data, settings: dict, prefix: str, out: Result | None):
    """(RGB image, reasons, fixes, original PNG bytes when they can go into the shard unchanged) for one image given
    as bytes, PIL image or FileRef. An 8-bit RGB PNG that needed no fix and carries no metadata (text, EXIF, ICC) is
    stored as it came: its pixels are the ones checked, and re-encoding would only cost time."""
    info: dict = {}
    raw = None
    if isinstance(data, FileRef):
        data, problem = _read(data)
        if problem:
            return None, [f"{prefix}image_{problem}"], [], None
    if data is None:
        return None, [f"{prefix}image_missing"], [], None
    if isinstance(data, Image.Image):
        image = data
        info = {"mode": image.mode, "width": image.width, "height": image.height}
    else:
        raw = bytes(data)
        image, reason, info = filters.open_image(raw, settings["filters"])
        if reason:
            return None, [prefix + reason], [], None
    if out is not None:
        out.orig_width, out.orig_height, out.orig_mode = info.get("width"), info.get("height"), info.get("mode")
    reason = filters.check_geometry(image.width, image.height, settings["filters"])
    if reason:
        return None, [prefix + reason], [], None
    metadata = set(image.info) if raw is not None else set()
    image, fixes, reason = filters.to_rgb(image, settings["filters"], info)
    if reason:
        return None, [prefix + reason], [], None
    image, more = filters.apply_resize(image, settings["resize"])
    fixes += more
    keep = raw if raw is not None and info.get("format") == "PNG" and not fixes and metadata <= _PASSTHROUGH_INFO \
        else None
    return image, [], [prefix + f for f in fixes], keep


def _png(image: Image.Image, level: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def process(record: RawRecord, settings: dict) -> Result:
    meta = dict(record.meta)
    out = Result(key=safe_key(record.key), origin=record.origin, kind=str(meta.get("kind", "t2i")),
                 category=str(meta.get("category", "general")))
    if record.error:
        out.reasons.append(record.error)
        return out
    if record.sidecar is not None:
        reason = _apply_sidecar(record)
        meta = dict(record.meta)
        out.kind, out.category = str(meta.get("kind", out.kind)), str(meta.get("category", out.category))
        if reason:
            out.reasons.append(reason)
            return out
    out.license, out.source = provenance(meta).values()

    raw, reason = _caption(record)
    text = None
    if reason is None:
        text, reason = filters.decode_caption(raw)
    if reason:
        out.reasons.append(reason)
    else:
        text, reasons, fixes = filters.clean_caption(text, {**settings["filters"], **settings["caption"]})
        out.caption, out.reasons, out.fixes = text, reasons, fixes

    images, originals = [], []
    if out.kind != "prompt":
        target, reasons, fixes, original = _image(record.image, settings, "", out)
        out.reasons += reasons
        out.fixes += fixes
        images.append(target)
        originals.append(original)
        for src in record.sources:
            image, reasons, fixes, original = _image(src, settings, "source_", None)
            out.reasons += [r for r in reasons if r not in out.reasons]
            out.fixes += [f for f in fixes if f not in out.fixes]
            images.append(image)
            originals.append(original)
    if out.reasons:
        return out

    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.width}x{image.height}\n".encode())
        digest.update(image.tobytes())
    if out.kind == "prompt" or settings["dedup"]["include_caption"]:
        from deepgen.curation.contamination import normalize_text

        digest.update(b"\ncaption\n" + normalize_text(out.caption).encode())
    out.content_hash = int.from_bytes(digest.digest()[:8], "big")
    members: dict[str, bytes] = {"__key__": out.key}  # type: ignore[dict-item]
    if images:
        out.width, out.height = images[0].size
        level = settings["png_compress_level"]
        encoded = [orig if orig is not None else _png(image, level) for image, orig in zip(images, originals)]
        members["png"] = encoded[0]
        for i, data in enumerate(encoded[1:]):
            members["src.png" if i == 0 else f"src{i}.png"] = data
        if settings["dedup"]["near"]:
            out.phash = filters.phash(images[0])
            out.aux_phash = filters.phash(images[1]) if len(images) > 1 else None
    members["txt"] = out.caption.encode("utf-8")
    members["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    out.members = members
    out.meta = meta
    if record.heldout is not None:
        out.heldout = bool(record.heldout)
    else:  # by content: the same image always lands in the same split
        out.heldout = (out.content_hash >> 11) / 2**53 < settings["heldout_fraction"]
    return out


def process_batch(batch: list[RawRecord], settings: dict) -> list[Result]:
    return [process(record, settings) for record in batch]
