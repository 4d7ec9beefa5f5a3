"""Data: the synthetic generator, folder loaders, caching, normalisation and shortcut masking."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nero_lite import data, synthetic
from nero_lite.synthetic import SyntheticConfig

TINY = SyntheticConfig(n_train=4, n_test=3, n_ood=2)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder."""
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_per_seed():
    first = data.load(config=TINY, size=32, seed=0, cache=False)
    again = data.load(config=TINY, size=32, seed=0, cache=False)
    other = data.load(config=TINY, size=32, seed=1, cache=False)
    for key in ("train", "test", "ood"):
        assert torch.equal(getattr(first, key).images, getattr(again, key).images)
        assert not torch.equal(getattr(first, key).images, getattr(other, key).images)
    assert not torch.equal(first.train.images[:3], first.test.images[:3])


def test_synthetic_shapes_counts_and_classes():
    splits = data.load(config=TINY, size=32, cache=False)
    assert splits.name == "synthetic"
    assert splits.id_classes == list(synthetic.ID_CLASSES) and len(splits.id_classes) >= 3
    assert splits.ood_classes == list(synthetic.OOD_CLASSES) and len(splits.ood_classes) >= 4
    assert set(splits.ood_kind.values()) == {"near", "far"}
    for imageset, per_class in ((splits.train, 4), (splits.test, 3), (splits.ood, 2)):
        assert imageset.images.dtype == torch.uint8 and imageset.images.shape[1:] == (3, 32, 32)
        assert imageset.labels.dtype == torch.long
        assert set(imageset.counts().values()) == {per_class}
        assert imageset.files is None
    summary = splits.summary()
    assert list(summary.columns) == ["split", "class", "kind", "images"]
    assert summary["images"].sum() == 3 * 4 + 3 * 3 + 4 * 2
    assert set(summary.loc[summary.split == "ood", "kind"]) == {"near", "far"}


def test_synthetic_images_have_a_dark_field_of_view_border():
    images = synthetic.generate_class("folds", 4, size=32).float()
    corners = images[:, :, :3, :3].mean()
    centre = images[:, :, 12:20, 12:20].mean()
    assert corners < 10 < centre


def test_generate_class_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown synthetic class"):
        synthetic.generate_class("stomach", 2)


def test_every_class_gets_the_configured_counts():
    parts = synthetic.generate(SyntheticConfig(n_train=5, n_test=2, n_ood=3), size=16)
    plan = {"train": (synthetic.ID_CLASSES, 5), "test": (synthetic.ID_CLASSES, 2), "ood": (synthetic.OOD_CLASSES, 3)}
    for split, (classes, count) in plan.items():
        images, labels = parts[split]
        assert images.shape == (count * len(classes), 3, 16, 16) and images.dtype == torch.uint8
        assert torch.bincount(labels, minlength=len(classes)).tolist() == [count] * len(classes)


def test_ood_ground_truth_matches_the_ood_split():
    splits = data.load(config=TINY, size=32, cache=False)
    truth = synthetic.ood_ground_truth(TINY, size=32)
    assert torch.equal(truth.images, splits.ood.images) and torch.equal(truth.labels, splits.ood.labels)
    assert truth.masks.shape == (8, 32, 32) and truth.masks.dtype == torch.bool
    assert truth.counterfactuals.shape == truth.images.shape and truth.counterfactuals.dtype == torch.uint8
    truth.images.zero_()  # rendered once per process: a caller's change must not reach the next call
    again = synthetic.ood_ground_truth(TINY, size=32)
    assert torch.equal(again.images, splits.ood.images)


def test_findings_are_where_the_masks_say_and_counterfactuals_lack_them():
    config = SyntheticConfig(n_ood=24)
    truth = synthetic.ood_ground_truth(config, size=64)
    changed = (truth.images.int() - truth.counterfactuals.int()).abs().amax(dim=1) > 8
    for k, name in enumerate(synthetic.OOD_CLASSES):
        members = truth.labels == k
        masks, moved = truth.masks[members], changed[members]
        if name in ("polyp", "ulcer"):  # local findings: a small mask per image, the change concentrated there
            area = masks.float().mean(dim=(1, 2))
            assert bool((area > 0).all()) and float(area.max()) < 0.15
            inside = (moved & masks).sum() / moved.sum()
            assert float(inside) > 5 * float(area.mean())  # far more of the change inside than the area share
            near = F.max_pool2d(masks[:, None].float(), 9, stride=1, padding=4)[:, 0].bool()
            assert float((moved & ~near).float().mean()) < 0.01  # the image is untouched away from the finding
        else:  # global findings: no mask, the change spreads over the mucosa
            assert not masks.any() and float(moved.float().mean()) > 0.3


def test_synthetic_rejects_folder_options():
    with pytest.raises(ValueError, match="fixed classes"):
        data.load("synthetic", id_classes=["folds"])


# --------------------------------------------------------------------------- cache
def test_cache_round_trip(tmp_path):
    first = data.load(config=TINY, size=32)
    files = list((tmp_path / "cache").glob("data-synthetic-*.pt"))
    assert len(files) == 1
    payload = torch.load(files[0], weights_only=True)
    assert torch.equal(payload["train"]["images"], first.train.images)
    second = data.load(config=TINY, size=32)
    for key in ("train", "test", "ood"):
        assert torch.equal(getattr(first, key).images, getattr(second, key).images)
        assert torch.equal(getattr(first, key).labels, getattr(second, key).labels)
    assert second.ood_kind == first.ood_kind and second.ood_classes == first.ood_classes
    data.load(config=TINY, size=24)
    assert len(list((tmp_path / "cache").glob("data-synthetic-*.pt"))) == 2


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    data.load(config=TINY, size=32)
    (path,) = (tmp_path / "cache").glob("data-synthetic-*.pt")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="discarding damaged cache entry") as record:
        splits = data.load(config=TINY, size=32)
    assert "weights_only" not in str(record[0].message)  # never suggest loading it another way
    assert len(splits.train) == 12
    assert torch.load(path, weights_only=True)["name"] == "synthetic"


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "elsewhere"))
    assert data.cache_dir() == tmp_path / "elsewhere" and data.cache_dir().is_dir()
    monkeypatch.delenv("NERO_LITE_DATA", raising=False)
    assert data.data_root() is None
    monkeypatch.setenv("NERO_LITE_DATA", str(tmp_path))
    assert data.data_root() == tmp_path


# --------------------------------------------------------------------------- to_input, ImageSet
def test_to_input_normalises_per_channel():
    images = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 255.0)]).to(torch.uint8)
    x = data.to_input(images)
    assert x.dtype == torch.float32 and x.shape == images.shape
    mean, std = torch.tensor(data.MEAN), torch.tensor(data.STD)
    torch.testing.assert_close(x[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(x[1, :, 0, 0], (1 - mean) / std)
    torch.testing.assert_close(data.to_input(images[0]), x[0])
    with pytest.raises(TypeError, match="uint8"):
        data.to_input(images.float())


def test_imageset_subset_and_validation():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2).contiguous()
    imageset = data.ImageSet(images, torch.tensor([0, 1, 0, 1, 1]), ["a", "b"], [f"f{i}" for i in range(5)])
    part = imageset.subset(imageset.labels == 1)
    assert len(part) == 3 and part.files == ["f1", "f3", "f4"] and part.classes == ["a", "b"]
    assert imageset.subset(slice(0, 2)).files == ["f0", "f1"]
    assert imageset.subset([4, 0]).images[:, 0, 0, 0].tolist() == [4, 0]
    assert imageset.counts() == {"a": 2, "b": 3}
    with pytest.raises(ValueError, match="labels"):
        data.ImageSet(images, torch.zeros(4), ["a"])
    with pytest.raises(ValueError, match="uint8"):
        data.ImageSet(images.float(), torch.zeros(5), ["a"])


# --------------------------------------------------------------------------- folders
def _write(path: Path, mode: str = "RGB", size=(40, 30), fmt: str | None = None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(path, format=fmt)


def _make_tree(root: Path, counts: dict[str, int]) -> Path:
    """A fake ImageFolder: PNG and JPEG files of varied sizes per class."""
    for k, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            suffix = ".png" if i % 2 else ".jpg"
            _write(folder / f"img{i}{suffix}", size=(40 + i, 30 + k), seed=100 * k + i)
    return root


@pytest.fixture
def tree(tmp_path):
    """ID classes a (9 images), b and c (6 each); OOD classes x, y; a grayscale, an RGBA, a corrupt file."""
    root = _make_tree(tmp_path / "tree", {"a": 9, "b": 6, "c": 6, "x": 3, "y": 2})
    _write(root / "b" / "gray.png", mode="L")
    _write(root / "x" / "rgba.png", mode="RGBA")
    (root / "c" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "a" / "notes.txt").write_text("not an image, ignored")
    return root


@pytest.mark.parametrize(("mode", "dtype", "suffix"), [("I;16", np.uint16, ".png"), ("I", np.int32, ".tiff"), ("F", np.float32, ".tiff")])
def test_16_bit_and_float_images_are_rescaled_not_saturated(tmp_path, mode, dtype, suffix):
    """A 16-bit ramp 1000..3000 (or a float ramp) reads as 0..255, not as all white or all black."""
    ramp = np.tile(np.linspace(1000, 3000, 32), (32, 1)).astype(dtype)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        image = Image.fromarray(ramp)
        assert image.mode == mode
        image.save(tmp_path / name / f"ramp{suffix}")
    with Image.open(tmp_path / "a" / f"ramp{suffix}") as stored:
        assert stored.mode == mode
    read = data.read_imagefolder(tmp_path, size=32, progress=False).images[0]
    assert torch.equal(read[0], read[1]) and torch.equal(read[0], read[2])  # grey
    expected = torch.from_numpy(np.round((ramp - 1000) / 2000 * 255).astype(np.uint8))
    assert (read[0].int() - expected.int()).abs().max() <= 1
    assert read.min() == 0 and read.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    """A camera picture stored sideways with orientation 6 (rotate 90° clockwise to view) reads upright."""
    rng = np.random.default_rng(0)
    upright = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor stored
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    sideways.save(tmp_path / "a" / "tagged.png", exif=exif)
    upright.save(tmp_path / "b" / "upright.png")
    read = data.read_imagefolder(tmp_path, size=24, progress=False)
    assert torch.equal(read.images[0], read.images[1])


def test_read_imagefolder_reads_the_classes_in_the_order_asked(tree):
    with pytest.warns(UserWarning, match="broken.jpg"):
        every = data.read_imagefolder(tree, size=20, progress=False)
    assert every.classes == ["a", "b", "c", "x", "y"] and every.images.shape[1:] == (3, 20, 20)
    assert every.counts() == {"a": 9, "b": 7, "c": 6, "x": 4, "y": 2}  # the corrupt file is skipped, notes.txt ignored
    two = data.read_imagefolder(tree, ["y", "b"], size=20, progress=False)
    assert two.classes == ["y", "b"] and two.counts() == {"y": 2, "b": 7}
    by_file = dict(zip(every.files, every.images))
    assert all(torch.equal(by_file[f], image) for f, image in zip(two.files, two.images))  # same pixels either way
    with pytest.raises(FileNotFoundError, match="nope"):
        data.read_imagefolder(tree, ["a", "nope"], size=20, progress=False)
    (tree / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        data.read_imagefolder(tree, ["a", "empty"], size=20, progress=False)


def test_folder_loader_reads_converts_and_warns(tree):
    with pytest.warns(UserWarning, match=r"skipped 1 image file\(s\)") as record:
        splits = data.load(tree, id_classes=["a", "b", "c"], size=24, cache=False)
    assert len(record) == 1 and "broken.jpg (unreadable)" in str(record[0].message)
    assert splits.skipped == {str(tree / "c" / "broken.jpg"): "unreadable"}
    assert splits.name == "tree"
    assert splits.id_classes == ["a", "b", "c"] and splits.ood_classes == ["x", "y"]
    assert splits.ood_kind == {"x": "near", "y": "near"}
    for imageset in (splits.train, splits.test, splits.ood):
        assert imageset.images.dtype == torch.uint8 and imageset.images.shape[1:] == (3, 24, 24)
    assert splits.ood.counts() == {"x": 4, "y": 2}
    everything = splits.train.files + splits.test.files + splits.ood.files
    assert any(f.endswith("gray.png") for f in everything) and any(f.endswith("rgba.png") for f in everything)
    assert not any(f.endswith(("broken.jpg", "notes.txt")) for f in everything)


def test_skipped_and_loose_files_are_listed_on_every_run(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "cache"))
    ood = tmp_path / "ood"
    ood.mkdir()
    for name in ("x", "y"):
        (tree / name).rename(ood / name)
    for i in range(5):
        _write(ood / f"loose{i}.png", seed=i)  # beside the class folders: not an OOD class
    expected = {str(tree / "c" / "broken.jpg"): "unreadable", **{str(ood / f"loose{i}.png"): "not in a class folder" for i in range(5)}}
    for run in ("read", "cached"):
        with pytest.warns(UserWarning, match=r"skipped 6 image file\(s\) under .*: .* and 3 more") as record:
            splits = data.load_folders(tree, ood, size=16)
        assert len(record) == 1 and splits.skipped == expected, run


def test_stratified_seeded_split(tree):
    with pytest.warns(UserWarning):
        first = data.load(tree, id_classes=["a", "b", "c"], ood_classes=["x"], size=16, cache=False, seed=0)
    with pytest.warns(UserWarning):
        other = data.load(tree, id_classes=["a", "b", "c"], ood_classes=["x"], size=16, cache=False, seed=1)
    # a: 9 → 6/3; b: 7 (with gray.png) → 5/2; c: 6 readable → 4/2
    assert first.train.counts() == {"a": 6, "b": 5, "c": 4}
    assert first.test.counts() == {"a": 3, "b": 2, "c": 2}
    assert other.train.counts() == first.train.counts()
    assert not set(first.train.files) & set(first.test.files)
    assert set(first.train.files) != set(other.train.files)
    assert first.ood_classes == ["x"]


def test_id_and_ood_subfolders_and_load_folders(tmp_path):
    root = tmp_path / "mydata"
    _make_tree(root / "id", {"p": 4, "q": 3})
    _make_tree(root / "ood", {"z": 2})
    splits = data.load(root, size=16, cache=False)
    assert splits.id_classes == ["p", "q"] and splits.ood_classes == ["z"] and splits.name == "mydata"
    assert len(splits.train) + len(splits.test) == 7
    _make_tree(tmp_path / "test", {"q": 2})
    splits = data.load_folders(root / "id", root / "ood", test_dir=tmp_path / "test", size=16, cache=False)
    assert len(splits.train) == 7 and splits.test.counts() == {"p": 0, "q": 2}
    assert splits.test.classes == ["p", "q"]


def test_folder_loader_is_cached(tree, tmp_path, monkeypatch):
    with pytest.warns(UserWarning):
        first = data.load(tree, id_classes=["a", "b", "c"], size=16)
    with monkeypatch.context() as patch, pytest.warns(UserWarning, match="broken.jpg"):  # still named from the cache
        patch.setattr(data.folders, "read_image", lambda *args: pytest.fail("read again although cached"))
        second = data.load(tree, id_classes=["a", "b", "c"], size=16)
    assert torch.equal(first.train.images, second.train.images) and first.train.files == second.train.files
    _write(tree / "a" / "new.png")  # the listing changed: read again
    with pytest.warns(UserWarning):
        third = data.load(tree, id_classes=["a", "b", "c"], size=16)
    assert len(third.train) + len(third.test) == len(first.train) + len(first.test) + 1


def test_clear_errors(tree, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="neither a known data set nor an existing folder|known data set"):
        data.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        data.load("hyperkvasir", root=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="class folder 'nope' not found"):
        data.load(tree, id_classes=["a", "nope"], cache=False)
    (tree / "empty").mkdir()
    with pytest.raises(ValueError, match="class 'empty' has no image files"):
        data.load(tree, id_classes=["a", "empty"], cache=False)
    (tree / "junk").mkdir()
    (tree / "junk" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable images"):
        data.load(tree, id_classes=["a", "b"], ood_classes=["junk"], cache=False)
    with pytest.raises(ValueError, match="give id_classes"):
        data.load(tree, cache=False)
    with pytest.raises(ValueError, match="both ID and OOD"):
        data.load(tree, id_classes=["a", "b"], ood_classes=["b"], cache=False)
    monkeypatch.delenv("NERO_LITE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="NERO_LITE_DATA"):
        data.load("kvasir")
    ids = _make_tree(tmp_path / "ids", {"a": 2, "b": 2})
    tests = _make_tree(tmp_path / "tests", {"a": 1, "zz": 1})
    with pytest.raises(ValueError, match="not among the training classes"):
        data.load_folders(ids, ids, test_dir=tests, cache=False)


# --------------------------------------------------------------------------- shortcut masking
def test_mask_shortcut_zeroes_the_corner_only():
    images = torch.full((2, 3, 20, 20), 200, dtype=torch.uint8)
    masked = data.mask_shortcut(images, corner=0.3)
    assert images.min() == 200  # input untouched
    assert masked[:, :, 14:, :6].max() == 0
    assert masked[:, :, :14, :].min() == 200 and masked[:, :, :, 6:].min() == 200
    with_text = data.mask_shortcut(images, corner=0.3, text_margin=0.15)
    assert with_text[:, :, :, :3].max() == 0 and with_text[:, :, :14, 3:].min() == 200
    assert data.mask_shortcut(images[0]).shape == (3, 20, 20)


def test_mask_corner_is_applied_to_every_split():
    plain = data.load(config=TINY, size=40)
    masked = data.load(config=TINY, size=40, mask_corner=True, mask_text=True)
    corner = math.ceil(data.CORNER_FRACTION * 40)
    margin = math.ceil(data.TEXT_MARGIN_FRACTION * 40)
    for key in ("train", "test", "ood"):
        before, after = getattr(plain, key).images, getattr(masked, key).images
        assert after[:, :, 40 - corner :, :corner].max() == 0 and after[:, :, :, :margin].max() == 0
        assert torch.equal(after[:, :, : 40 - corner, margin:], before[:, :, : 40 - corner, margin:])


# --------------------------------------------------------------------------- real images
@pytest.fixture(scope="module")
def shared_data() -> Path:
    """``NERO_LITE_DATA`` or ``../shared/data`` beside the repository; skip when it lacks HyperKvasir."""
    value = os.environ.get("NERO_LITE_DATA")
    root = Path(value) if value else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (root / "hyperkvasir-lowergi").is_dir():
        pytest.skip(f"HyperKvasir subset not found under {root} (set NERO_LITE_DATA to the folder holding it)")
    return root


@pytest.fixture(scope="module")
def hyperkvasir(shared_data) -> data.Splits:
    """The shared HyperKvasir images at their native 160 px, found through NERO_LITE_DATA."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_DATA", str(shared_data))
        return data.load("hyperkvasir", size=160, cache=False, progress=False)


def test_hyperkvasir_loader(hyperkvasir, shared_data):
    assert hyperkvasir.id_classes == ["cecum", "bbps-2-3", "bbps-0-1"]
    assert hyperkvasir.ood_classes == ["polyps", "impacted-stool"]
    assert hyperkvasir.ood_kind == {"polyps": "near", "impacted-stool": "near"}
    folder = shared_data / "hyperkvasir-lowergi"
    for name in hyperkvasir.id_classes:
        total = len(list((folder / name).glob("*.jpg")))
        train, test = hyperkvasir.train.counts()[name], hyperkvasir.test.counts()[name]
        assert train + test == total and train == round(2 / 3 * total)
    assert hyperkvasir.ood.counts() == {c: len(list((folder / c).glob("*.jpg"))) for c in hyperkvasir.ood_classes}
    assert hyperkvasir.train.images.shape[1:] == (3, 160, 160)
    assert all(Path(f).parent.parent == folder for f in hyperkvasir.ood.files)


def test_corner_mask_covers_the_hyperkvasir_box(hyperkvasir):
    images = torch.cat([hyperkvasir.train.images, hyperkvasir.test.images, hyperkvasir.ood.images])
    dark = images.max(dim=1).values < 40
    has_box = dark[:, 115:150, 15:40].float().mean(dim=(1, 2)) > 0.97
    assert has_box.float().mean() > 0.8
    side = math.ceil(data.CORNER_FRACTION * 160)
    # just outside the mask, the box would show as a black band to the right of / above it
    right = dark[has_box][:, 120:150, side : side + 2].float().mean(dim=(1, 2)) > 0.9
    above = dark[has_box][:, 160 - side - 2 : 160 - side, 10:40].float().mean(dim=(1, 2)) > 0.9
    assert (right | above).float().mean() < 0.05
    masked = data.mask_shortcut(images[has_box])
    assert masked[:, :, 160 - side :, :side].max() == 0


def test_corner_region_is_the_masked_square():
    images = torch.full((1, 3, 40, 40), 200, dtype=torch.uint8)
    region = data.corner_region(40)
    masked = data.mask_shortcut(images)
    assert torch.equal(masked[0, 0] == 0, region)
    assert region[-1, 0] and not region[0, -1] and not region[0, 0]


def test_corner_box_present_on_drawn_boxes():
    images = torch.full((4, 3, 64, 64), 150, dtype=torch.uint8)
    images[1, :, 44:, :20] = 0  # a box like HyperKvasir's (rows 0.68-1, columns 0-0.31)
    images[2] = data.mask_shortcut(images[2])  # the masked corner counts as a box too
    images[3, :, 44:, :20] = 60  # dim, but not black
    assert data.corner_box_present(images).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="uint8"):
        data.corner_box_present(images.float())


def test_corner_box_is_class_correlated_in_hyperkvasir(hyperkvasir):
    """The shortcut the README warns about: the box is rarer in polyps than in every other class."""
    box = {name: data.corner_box_present(hyperkvasir.ood.images[hyperkvasir.ood.labels == k]).float().mean()
           for k, name in enumerate(hyperkvasir.ood_classes)}
    routine = data.corner_box_present(torch.cat([hyperkvasir.train.images, hyperkvasir.test.images]))
    assert 0.45 < box["polyps"] < 0.65
    assert box["impacted-stool"] > 0.9 and routine.float().mean() > 0.95


# --------------------------------------------------------------------------- data_scripts (offline)
def _script(name: str):
    """Import a script of data_scripts/ as a module (they are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "data_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"data_scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_zip(path: Path, members: dict[str, tuple[int, int]]) -> Path:
    """A zip with one small JPEG per member name, of the given (width, height)."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for k, (name, size) in enumerate(members.items()):
            buffer = io.BytesIO()
            _write(buffer, size=size, fmt="JPEG", seed=k)
            archive.writestr(name, buffer.getvalue())
    return path


def test_prepare_hyperkvasir_builds_the_shared_layout(tmp_path):
    prepare = _script("prepare_hyperkvasir")
    groups = {"cecum": "anatomical-landmarks", "polyps": "pathological-findings"}
    members = {
        f"labeled-images/lower-gi-tract/{groups.get(c, 'quality-of-mucosal-views')}/{c}/{c}-{i}.jpg": (200 + i, 170)
        for c in prepare.CLASSES
        for i in range(3)
    }
    members["labeled-images/upper-gi-tract/anatomical-landmarks/pylorus/p.jpg"] = (50, 40)
    archive = _fake_zip(tmp_path / "hyper-kvasir-labeled-images.zip", members)
    split = tmp_path / "2_fold_split.csv"
    split.write_text("file-name;class-name;split-index\n" + "".join(f"cecum-{i}.jpg;cecum;{i % 2}\n" for i in range(3)))
    dest = tmp_path / "data" / "hyperkvasir-lowergi"
    assert prepare.main([str(archive), "--dest", str(dest), "--split-csv", str(split), "--per-class", "2"]) == 0
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == sorted(prepare.CLASSES)
    image = Image.open(next((dest / "polyps").glob("*.jpg")))
    assert image.size == (160, 160) and image.mode == "RGB"
    lines = (dest / "manifest.csv").read_text().splitlines()
    assert lines[0] == "path,class,hyperkvasir_split_label,hyperkvasir_2fold_split_index" and len(lines) == 11
    for line in lines[1:]:
        path, name, label, index = line.split(",")
        assert (dest / path).is_file() and path.startswith(name + "/")
        expected = ("cecum", str(int(path[-5]) % 2)) if name == "cecum" else ("", "")
        assert (label, index) == expected
    splits = data.load("hyperkvasir", root=dest, size=16, cache=False)
    assert splits.train.counts() == {"cecum": 1, "bbps-2-3": 1, "bbps-0-1": 1}


def test_download_script_unpacks_and_verifies_counts_offline(tmp_path, capsys):
    download = _script("download")
    members = {f"kvasir-dataset-v2/{c}/{i}.jpg": (20, 16) for c in download.KVASIR_COUNTS for i in range(2)}
    archive = _fake_zip(tmp_path / "kvasir.zip", members)
    assert download.main(["kvasir", "--dest", str(tmp_path / "data"), "--archive", str(archive)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert download.count_images(tmp_path / "data" / "kvasir-dataset-v2", ["polyps"]) == {"polyps": 2}
    splits = data.load("kvasir", root=tmp_path / "data" / "kvasir-dataset-v2", size=16, cache=False)
    assert splits.ood_kind["dyed-lifted-polyps"] == "far" and len(splits.ood_classes) == 5
    assert sum(download.GASTROVISION_COUNTS.values()) == 8000 and len(download.GASTROVISION_COUNTS) == 27
    gastro = data.DATASETS["gastrovision"]
    assert len(gastro.id_classes) == 11 and set(gastro.id_classes) | set(gastro.ood_classes) == set(
        download.GASTROVISION_COUNTS
    )


# --------------------------------------------------------------------------- segmented polyps
def _segmented_tree(root: Path, n: int = 4) -> Path:
    """A fake kvasir-seg-polyps folder: images, masks with a square polyp each, and a manifest."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        _write(root / "images" / f"p{i}.jpg", size=(48, 40), seed=i)
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[8 : 8 + 4 * (i + 1), 10 : 10 + 4 * (i + 1)] = 250  # near-white, as JPEG masks are
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    (root / "manifest.csv").write_text("id,hyperkvasir_polyp\np0,shared\np1,\np2,\np3,shared\n")
    return root


def test_load_segmented_reads_images_masks_and_the_overlap(tmp_path):
    root = _segmented_tree(tmp_path / "kvasir-seg-polyps")
    seg = data.load_segmented(root, size=20, progress=False)
    assert len(seg) == 4 and seg.ids == ["p0", "p1", "p2", "p3"]
    assert seg.images.shape == (4, 3, 20, 20) and seg.masks.shape == (4, 20, 20) and seg.masks.dtype == torch.bool
    assert seg.shared.tolist() == [True, False, False, True]
    # the center-crop of 48×40 to 40×40 cuts 4 columns on each side, then 40 → 20 px halves everything
    areas = seg.masks.float().sum(dim=(1, 2))
    assert areas.tolist() == [4.0 * (i + 1) ** 2 for i in range(4)]
    assert bool(seg.masks[0, 4:6, 3:5].all()) and not seg.masks[0, 0].any()


def test_load_segmented_errors(tmp_path, monkeypatch):
    root = _segmented_tree(tmp_path / "kvasir-seg-polyps")
    (root / "masks" / "p2.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image.*no mask.*p2.jpg"):
        data.load_segmented(root, progress=False)
    monkeypatch.delenv("NERO_LITE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="NERO_LITE_DATA"):
        data.load_segmented()
    monkeypatch.setenv("NERO_LITE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_segmented()


def test_ood_sets_add_or_replace_classes_and_are_masked():
    extra = torch.full((5, 3, 32, 32), 200, dtype=torch.uint8)
    splits = data.load(config=TINY, size=32, cache=False, ood_sets={"polyp": extra, "new": extra[:3]}, mask_corner=True)
    assert splits.ood_classes == [*synthetic.OOD_CLASSES, "new"]
    assert splits.ood.counts() == {"polyp": 5, "ulcer": 2, "inflamed": 2, "dyed": 2, "new": 3}
    assert splits.ood_kind["new"] == "near" and splits.ood_kind["dyed"] == "far"
    polyps = splits.ood.images[splits.ood.labels == 0]
    assert int(polyps[:, :, 0, -1].min()) == 200 and int(polyps[:, :, -1, 0].max()) == 0  # the corner is masked
    with pytest.raises(ValueError, match=r"ood_sets\['polyp'\] must be uint8 images N×3×32×32"):
        data.load(config=TINY, size=32, cache=False, ood_sets={"polyp": extra[..., :16]})


def test_kvasir_seg_loader_on_the_shared_folder(shared_data):
    if not (shared_data / "kvasir-seg-polyps").is_dir():
        pytest.skip("kvasir-seg-polyps not found beside HyperKvasir")
    seg = data.load_segmented(shared_data / "kvasir-seg-polyps", size=64, progress=False)
    assert len(seg) == 795 and int(seg.shared.sum()) == 119
    area = seg.masks.float().mean(dim=(1, 2))
    assert 0.005 < float(area.min()) and float(area.max()) < 0.9 and 0.1 < float(area.median()) < 0.16


def test_prepare_kvasir_seg_builds_the_shared_layout(tmp_path):
    import io
    import zipfile

    prepare = _script("prepare_kvasir_seg")
    members = {}
    for i in range(3):
        image, mask = io.BytesIO(), io.BytesIO()
        _write(image, size=(320 + 10 * i, 240), fmt="JPEG", seed=i)
        square = np.zeros((240, 320 + 10 * i), dtype=np.uint8)
        square[60:180, 100:220] = 255
        Image.fromarray(square).save(mask, format="JPEG")
        members[f"Kvasir-SEG/images/id{i}.jpg"] = image.getvalue()
        members[f"Kvasir-SEG/masks/id{i}.jpg"] = mask.getvalue()
    members["Kvasir-SEG/images/orphan.jpg"] = members["Kvasir-SEG/images/id0.jpg"]  # no mask: skipped
    archive = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, payload in members.items():
            handle.writestr(name, payload)
    hyperkvasir = tmp_path / "polyps"
    hyperkvasir.mkdir()
    dest = tmp_path / "kvasir-seg-polyps"
    assert prepare.main([str(archive), "--dest", str(dest), "--size", "64"]) == 0
    Image.open(dest / "images" / "id1.jpg").save(hyperkvasir / "same-picture.jpg")
    assert prepare.main([str(archive), "--dest", str(dest), "--size", "64", "--hyperkvasir-polyps", str(hyperkvasir)]) == 0
    assert sorted(p.name for p in (dest / "images").iterdir()) == ["id0.jpg", "id1.jpg", "id2.jpg"]
    mask = np.asarray(Image.open(dest / "masks" / "id0.png"))
    assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
    lines = (dest / "manifest.csv").read_text().splitlines()
    assert lines[0] == "id,orig_width,orig_height,mask_fraction,polyp_retained_in_crop,hyperkvasir_polyp"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == ["id0", "id1", "id2"] and [r[5] for r in rows] == ["", "shared", ""]
    # a 120×120 square of 240 px high images: 1/4 of the crop's height and width, all of it kept
    assert float(rows[0][3]) == pytest.approx(0.25, abs=0.02) and float(rows[0][4]) == pytest.approx(1.0, abs=0.05)
    assert (dest / "hyperkvasir_polyps_map.csv").read_text().splitlines()[1].startswith("polyps/same-picture.jpg,id1,")
    seg = data.load_segmented(dest, size=32, progress=False)
    assert len(seg) == 3 and seg.shared.tolist() == [False, True, False]


def test_image_files_lists_images_at_one_level_or_recursively_without_hidden_ones(tmp_path):
    for relative in ["a.png", "b.JPG", "notes.txt", ".hidden.png", "sub/c.png", "sub/.d.png", ".cache/e.png", "sub/deep/f.jpeg"]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    names = lambda files: [str(p.relative_to(tmp_path)) for p in files]  # noqa: E731
    assert names(data.image_files(tmp_path)) == ["a.png", "b.JPG"]
    assert names(data.image_files(tmp_path, recursive=True)) == ["a.png", "b.JPG", "sub/c.png", "sub/deep/f.jpeg"]


def test_write_imagefolder_is_read_back_by_read_imagefolder(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=generator)
    written = data.ImageSet(images, torch.tensor([1, 0, 1, 1, 0]), ["a", "b"])
    root = data.write_imagefolder(written, tmp_path / "folder")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.png")) == [
        "a/00001.png", "a/00004.png", "b/00000.png", "b/00002.png", "b/00003.png"]
    back = data.read_imagefolder(root, size=8, progress=False)
    assert back.classes == ["a", "b"] and back.counts() == {"a": 2, "b": 3}
    assert torch.equal(back.images, images[[1, 4, 0, 2, 3]])  # PNG is lossless; files sorted per class


def test_first_per_class_takes_the_first_of_each_class_in_order():
    images = data.ImageSet(torch.zeros(6, 3, 2, 2, dtype=torch.uint8), torch.tensor([1, 0, 1, 0, 1, 2]), ["a", "b", "c"])
    assert images.first_per_class(2).tolist() == [1, 3, 0, 2, 5]
    assert images.first_per_class(None, [1]).tolist() == [0, 2, 4] and images.first_per_class(1, []).tolist() == []


def test_shortcut_regions_are_the_masked_areas_and_their_mirrors():
    regions = data.shortcut_regions(40)
    images = torch.full((1, 3, 40, 40), 200, dtype=torch.uint8)
    assert torch.equal(data.mask_shortcut(images)[0, 0] == 0, regions["lower-left corner (box)"])
    text = data.mask_shortcut(images, corner=0.0, text_margin=data.TEXT_MARGIN_FRACTION)[0, 0] == 0
    assert torch.equal(text, regions["left strip (text)"])  # 6 of 40 columns: ceil(0.15 * 40)
    assert torch.equal(regions["upper-right corner (control)"], regions["lower-left corner (box)"].flip(0).flip(1))
    assert torch.equal(regions["right strip (control)"], regions["left strip (text)"].flip(1))
    assert not (regions["lower-left corner (box)"] & regions["upper-right corner (control)"]).any()
