"""The data cache: loaded :class:`~nero_lite.data.Splits` kept as checksummed tensors under :func:`~nero_lite.cache.cache_dir`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..cache import cache_dir, read_entry, write_entry
from .images import ImageSet, Splits

__all__ = ["DATA_VERSION", "cached_splits"]

DATA_VERSION = "3"  # bump when generation or loading changes, to invalidate caches


def _cache_path(kind: str, key: dict) -> Path:
    text = json.dumps({"data_version": DATA_VERSION, **key}, sort_keys=True, default=str)
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in kind)[:40]
    return cache_dir() / f"data-{slug}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"


def _save(splits: Splits, path: Path) -> None:
    """Write tensors and names (no pickled objects) as a checksummed cache entry."""
    payload = {"name": splits.name, "ood_kind": dict(splits.ood_kind), "skipped": dict(splits.skipped)}
    for key in ("train", "test", "ood"):
        imageset = getattr(splits, key)
        payload[key] = {"images": imageset.images, "labels": imageset.labels, "classes": imageset.classes}
        if imageset.files is not None:
            payload[key]["files"] = imageset.files
    write_entry(path, lambda temp: torch.save(payload, temp))


def _restore(path: Path) -> Splits:
    payload = torch.load(path, weights_only=True)
    sets = {key: ImageSet(**payload[key]) for key in ("train", "test", "ood")}
    return Splits(payload["name"], ood_kind=payload["ood_kind"], skipped=payload["skipped"], **sets)


def cached_splits(kind: str, key: dict, build, cache: bool) -> Splits:
    """``build()`` once, then reuse its result from the cache (unless ``cache`` is off).

    A damaged entry is discarded with a warning and rebuilt (:func:`nero_lite.cache.read_entry`).
    """
    if not cache:
        return build()
    path = _cache_path(kind, key)
    entry = read_entry(path, _restore)
    if entry is not None:
        return entry[0]
    splits = build()
    _save(splits, path)
    return splits
