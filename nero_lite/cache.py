"""The on-disk cache: where it lives, atomic writes, and checksummed entries.

Generated and read images (:mod:`nero_lite.data`), trained classifiers
(:mod:`nero_lite.training`) and the semi-supervised networks (:mod:`nero_lite.semisup`)
are cached under :func:`cache_dir`. Every file is written atomically: into a temporary
file in the same folder, then renamed over the target, so a reader never sees half a
file. Every entry is a data file plus a JSON sidecar (``.json`` beside it, written last)
that holds the SHA-256 of the data file's bytes: an entry whose sidecar is missing or
unreadable, or whose bytes no longer match, is discarded with a warning and rebuilt, and
is never loaded in any other way (weights are safetensors, tensors ``weights_only``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "STALE_AFTER_S",
    "TEMP_SUFFIX",
    "TRAINED_VERSION",
    "Trained",
    "atomic_write",
    "cache_dir",
    "fingerprint",
    "key_digest",
    "keyed_path",
    "read_entry",
    "remove_stale_temp_files",
    "sha256",
    "train_or_load",
    "write_entry",
]

#: Suffix of the temporary files :func:`atomic_write` renames into place.
TEMP_SUFFIX = ".tmp"
#: A temporary file older than this (seconds) belongs to a write that was killed.
STALE_AFTER_S = 3600.0
#: The ``"version"`` in the key of every trained network (:func:`train_or_load`); 2: entries carry a checksum.
TRAINED_VERSION = "2"


def cache_dir(create: bool = True) -> Path:
    """The cache folder: ``NERO_LITE_CACHE`` or ``~/.cache/nero_lite``, created when ``create``."""
    value = os.environ.get("NERO_LITE_CACHE", "").strip()
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "nero_lite"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(temp)`` into a temporary file beside ``path``, then rename it to ``path``.

    On any failure, an interrupt included, the temporary file is removed and ``path`` is
    left as it was. A write killed outright leaves a ``*.tmp`` file that
    :func:`remove_stale_temp_files` removes later.
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path | None = None, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files of killed writes (older than ``older_than_s``) under ``folder``.

    ``folder`` defaults to :func:`cache_dir` (nothing is created when it does not exist).
    Returns the files removed.
    """
    folder = cache_dir(create=False) if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for path in folder.rglob(f".*{TEMP_SUFFIX}"):
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process finished or removed it meanwhile
            continue
    return removed


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*tensors: torch.Tensor) -> str:
    """16 hex digits of the SHA-1 of the tensors' bytes, in order (part of a cache key)."""
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Mismatch(Exception):
    """The data file's bytes are not the ones its sidecar names."""


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_entry(path: Path, write: Callable[[str], None], meta: dict | None = None) -> None:
    """Write a cache entry: the data file through ``write(temp)``, then its JSON sidecar.

    The sidecar holds ``meta`` and ``"sha256"``, the checksum of the data file; it is
    written last, so an entry is complete exactly when its sidecar matches.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    text = json.dumps({**(meta or {}), "sha256": sha256(path)}, indent=1)
    atomic_write(_sidecar(path), lambda temp: Path(temp).write_text(text))


def read_entry(path: Path, read: Callable[[Path], Any]) -> tuple[Any, dict] | None:
    """``(read(path), meta)`` of a verified cache entry, or ``None`` when there is none.

    A damaged entry (sidecar missing or unreadable, checksum mismatch, or ``read``
    failing) is removed with one warning and ``None`` is returned, so it is rebuilt.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        meta = json.loads(_sidecar(path).read_text())
        if not isinstance(meta, dict) or meta.get("sha256") != sha256(path):
            raise _Mismatch
        return read(path), meta
    except Exception as error:
        # the reason only: a loader's own message may suggest loading the file some unsafe way
        reason = {FileNotFoundError: "no metadata", _Mismatch: "checksum mismatch"}.get(type(error), type(error).__name__)
        warnings.warn(f"discarding damaged cache entry {path} ({reason}); rebuilding it", stacklevel=3)
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        return None


def key_digest(key: dict) -> str:
    """The first 16 hex digits of the SHA-1 of ``key`` as JSON with sorted keys: the name of its entry."""
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def keyed_path(folder: str, name: str, key: dict, suffix: str = ".safetensors") -> Path:
    """Where the cache entry of ``key`` lives: ``cache_dir() / folder / f"{name}-{key_digest(key)}{suffix}"``."""
    return cache_dir(create=False) / folder / f"{name}-{key_digest(key)}{suffix}"


@dataclass
class Trained:
    """A network from :func:`train_or_load`, with its per-epoch ``history``, its training ``seconds`` and whether it came from the cache."""

    network: nn.Module
    history: list[dict]
    seconds: float
    from_cache: bool


def train_or_load(
    path: Path, key: dict, build: Callable[[bool], nn.Module], train: Callable[[nn.Module], list[dict]], cache: bool = True
) -> Trained:
    """The network trained for ``key``: its weights loaded from the entry at ``path``, or trained and stored there.

    ``build(for_loading)`` makes the network: with ``for_loading`` true, only the
    architecture the cached weights are loaded into; otherwise the starting point of
    ``train(network)``, which trains it in place and returns its history. The weights are
    stored as safetensors, the key, history and seconds in the sidecar (:func:`write_entry`),
    both trainers of the package use it (:func:`nero_lite.training.train_classifier`, the
    networks of :mod:`nero_lite.semisup`). ``cache=False`` neither reads nor writes.
    """
    entry = read_entry(path, load_file) if cache else None
    if entry is not None:
        state, meta = entry
        network = build(True)
        network.load_state_dict(state)
        return Trained(network, meta["history"], meta["seconds"], True)
    network = build(False)
    start = time.perf_counter()
    history = train(network)
    seconds = time.perf_counter() - start
    if cache:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        write_entry(path, lambda temp: save_file(state, temp), {"key": key, "history": history, "seconds": seconds})
    return Trained(network, history, seconds, False)
