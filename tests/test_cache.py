"""nero_lite.cache: atomic writes, checksummed entries, stale temporary files; and the caches built on it."""

import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from nero_lite import cache, data, training
from nero_lite.synthetic import SyntheticConfig
from tests.test_models import tiny_set


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "entry.bin"
    target.write_bytes(b"old")
    for fault in (OSError("disk full"), KeyboardInterrupt()):
        def write(temp):
            open(temp, "wb").write(b"half")
            raise fault

        with pytest.raises(type(fault)):
            cache.atomic_write(target, write)
        assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["entry.bin"]
    cache.atomic_write(target, lambda temp: open(temp, "wb").write(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["entry.bin"]


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(tmp_path):
    (tmp_path / "models").mkdir()
    stale, fresh = tmp_path / "models" / ".w.safetensors.abc.tmp", tmp_path / ".d.pt.def.tmp"
    keep = tmp_path / "models" / "w.safetensors"
    for path in (stale, fresh, keep):
        path.write_bytes(b"x" * 10)
    hours_ago = time.time() - 2 * cache.STALE_AFTER_S
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(keep, (hours_ago, hours_ago))
    assert cache.remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists() and keep.exists()
    assert cache.remove_stale_temp_files(tmp_path / "absent") == []


def _entry(tmp_path):
    path = tmp_path / "w.safetensors"
    cache.write_entry(path, lambda temp: save_file({"w": torch.arange(6.0)}, temp), {"history": [1]})
    return path


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:-7]),  # truncated
        lambda path: path.write_bytes(path.read_bytes()[:-1] + b"\x01"),  # one byte altered, same length
        lambda path: path.write_bytes(b"garbage"),
        lambda path: path.with_suffix(".json").unlink(),  # sidecar missing
        lambda path: path.with_suffix(".json").write_text("{not json"),
        lambda path: path.with_suffix(".json").write_text(json.dumps({"history": [1]})),  # no checksum
    ],
    ids=["truncated", "altered", "garbage", "no-sidecar", "bad-sidecar", "no-checksum"],
)
def test_a_damaged_entry_is_discarded_with_one_warning(tmp_path, damage):
    path = _entry(tmp_path)
    state, meta = cache.read_entry(path, load_file)
    assert torch.equal(state["w"], torch.arange(6.0)) and meta["history"] == [1] and len(meta["sha256"]) == 64
    damage(path)
    with pytest.warns(UserWarning, match="discarding damaged cache entry") as record:
        assert cache.read_entry(path, load_file) is None
    assert len(record) == 1 and "weights_only" not in str(record[0].message)
    assert not path.exists() and not path.with_suffix(".json").exists()
    assert cache.read_entry(path, load_file) is None  # gone: nothing to warn about


def test_damaged_weights_are_retrained_and_cached_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path))
    images, recipe = tiny_set(n=24), training.Recipe(epochs=1, batch_size=8)
    first = training.train_classifier(images, "resnet18", recipe, device="cpu", progress=False)
    (weights,) = (tmp_path / "models").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    with pytest.warns(UserWarning, match="discarding damaged cache entry"):
        second = training.train_classifier(images, "resnet18", recipe, device="cpu", progress=False)
    assert not second.from_cache
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)  # seeded: the same weights again
    assert training.train_classifier(images, "resnet18", recipe, device="cpu", progress=False).from_cache


def test_damaged_image_tensors_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path))
    tiny = SyntheticConfig(n_train=2, n_test=1, n_ood=1)
    first = data.load(config=tiny, size=16)
    (tensors,) = tmp_path.glob("data-*.pt")
    raw = bytearray(tensors.read_bytes())
    raw[-100] ^= 0xFF  # a silent bit flip: still a loadable file
    tensors.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        again = data.load(config=tiny, size=16)
    assert torch.equal(first.train.images, again.train.images)


def test_no_cache_touches_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "cache"))
    data.load(config=SyntheticConfig(n_train=2, n_test=1, n_ood=1), size=16, cache=False)
    training.train_classifier(tiny_set(n=12), "resnet18", training.Recipe(epochs=1, batch_size=8), device="cpu", cache=False, progress=False)
    assert not (tmp_path / "cache").exists()
