"""Semi-supervised OOD detection from intermediate layers: transforms, networks, detectors, protocol.

Everything trains tiny networks on 16×16 toy images, so the file runs in well under a minute on CPU.
"""

import pandas as pd
import pytest
import torch

from nero_lite import detectors, semisup
from nero_lite.data import ImageSet, Splits
from nero_lite.metrics import auroc
from nero_lite.semisup import GeometricTransforms, Transform

TINY = semisup.SemisupConfig(
    transforms="rot", image_size=None, width=4, blocks=1, geom_epochs=6, batch_size=32,
    g_filters=8, g_hidden=16, g_epochs=6, g_batch_size=16, n_train=None, n_test=None,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_images(n: int, bright: bool, marked: bool, seed: int, size: int = 16) -> torch.Tensor:
    """Dark (0–80) or bright (170–255) noise; ``marked`` adds an L-shaped bar in the top-left
    corner, so the transforms of a marked image can be told apart."""
    g = torch.Generator().manual_seed(seed)
    low = 170 if bright else 0
    images = torch.randint(low, low + 86, (n, 3, size, size), generator=g, dtype=torch.uint8)
    if marked:
        images[:, :, 1:3, 1:9] = 255
        images[:, :, 1:6, 1:3] = 255
    return images


def imageset(images: torch.Tensor, name: str = "c") -> ImageSet:
    return ImageSet(images=images, labels=torch.zeros(len(images), dtype=torch.long), classes=[name])


@pytest.fixture(scope="module")
def geom():
    train = imageset(toy_images(48, bright=False, marked=True, seed=0))
    return semisup.GeomDetector(TINY, seed=0, device="cpu", cache=False, progress=False).fit(train)


# --------------------------------------------------------------------------- transforms
def test_transform_set_sizes_labels_and_identity():
    assert [len(semisup.geometric_transforms(k)) for k in semisup.transforms.KINDS] == [72, 8, 4, 9]
    transforms = semisup.geometric_transforms("full")
    x = torch.rand(3, 3, 16, 16)
    images, labels = transforms.expand(x)
    assert images.shape == (72 * 3, 3, 16, 16)
    assert torch.equal(labels, torch.arange(72).repeat_interleave(3))
    assert torch.equal(transforms.apply(x, 0), x)  # transform 0 is the identity
    for k in (5, 40, 71):  # expand is transform-major, and agrees with apply
        assert torch.equal(images[3 * k : 3 * k + 3], transforms.apply(x, k))
    with pytest.raises(ValueError, match="unknown transform kind"):
        semisup.geometric_transforms("shear")


def test_a_marked_pixel_moves_where_each_transform_sends_it():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 6, 5] = 1.0  # row 6, column 5
    cases = {
        Transform(flip=True, tx=0, ty=0, rot=0): (6, 10),  # mirrored column: 15 - 5
        Transform(flip=False, tx=1, ty=0, rot=0): (6, 9),  # right by a quarter of 16
        Transform(flip=False, tx=0, ty=1, rot=0): (10, 5),  # down by 4
        Transform(flip=False, tx=0, ty=0, rot=1): (10, 6),  # counter-clockwise: (r, c) → (15 - c, r)
        Transform(flip=True, tx=0, ty=0, rot=1): (5, 6),  # flip first, then rotate
    }
    transforms = GeometricTransforms(list(cases), shift=0.25)
    for k, where in enumerate(cases.values()):
        out = transforms.apply(x, k)[0, 0]
        assert divmod(int(out.argmax()), 16) == where and out.sum() == 1, transforms[k]
    # the strip a shift uncovers is filled by reflection (about the edge pixel)
    image = torch.rand(1, 3, 16, 16)
    right = GeometricTransforms([Transform(False, 1, 0, 0)]).apply(image, 0)
    assert torch.equal(right[..., 4:], image[..., :12]) and torch.equal(right[..., :4], image[..., 1:5].flip(-1))


def test_all_72_transforms_are_distinct_and_per_sample_labels_apply():
    transforms = semisup.geometric_transforms("full")
    x = torch.rand(1, 3, 16, 16)
    images, _ = transforms.expand(x)
    assert len(torch.unique(images.flatten(1), dim=0)) == 72
    # rotations composed with a flip are new transforms, not rotations
    rot_flip, _ = semisup.geometric_transforms("rot_flip").expand(x)
    assert len(torch.unique(rot_flip.flatten(1), dim=0)) == 8
    # a label per image: image i gets transform k[i]
    batch, k = torch.rand(5, 3, 16, 16), torch.tensor([0, 71, 3, 3, 40])
    out = transforms.apply(batch, k)
    for i in range(5):
        assert torch.equal(out[i], transforms.apply(batch[i : i + 1], int(k[i]))[0])
    with pytest.raises(ValueError, match="square"):
        transforms.apply(torch.rand(1, 3, 8, 16), 1)


# --------------------------------------------------------------------------- networks
def test_feature_taps_come_from_one_forward_pass_with_the_expected_shapes():
    f = semisup.WideResNet(num_outputs=8, width=4, blocks=2).eval()
    tapped = [f.group1, f.group2, f.group3, f.pool]
    calls = []
    f.register_forward_hook(lambda *args: calls.append("f"))
    for module in tapped:
        module.register_forward_hook(lambda module, *args: calls.append(module))
    x = torch.randn(5, 3, 16, 16)
    feats = semisup.tap_features(f, x, ("z1", "z2", "z3", "z4", "softmax"))
    assert calls == [*tapped, "f"]  # one pass through every tapped module
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "z1": (5, 4, 16, 16), "z2": (5, 8, 8, 8), "z3": (5, 16, 4, 4), "z4": (5, 16), "softmax": (5, 8),
    }  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(feats["softmax"], f(x).softmax(1))
    calls.clear()
    f(x)
    assert calls == [*tapped, "f"]  # the taps removed their own hooks and left the others
    assert [len(module._forward_hooks) for module in tapped] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown feature"):
        semisup.tap_features(f, x, ("z5",))


@pytest.mark.parametrize("layers", [("z1", "z2", "z3", "z4"), ("z1",), ("z2",), ("z3",), ("z4",), ("softmax",), ("z1", "z3")])
@pytest.mark.parametrize("size", [16, 15])
def test_g_reads_any_subset_of_the_taps_at_any_size(layers, size):
    f = semisup.WideResNet(num_outputs=4, width=4).eval()
    feats = semisup.tap_features(f, torch.randn(3, 3, size, size), layers)
    g = semisup.GNet({name: f.dims[name] for name in layers}, size, filters=8, hidden=16).eval()
    assert g(feats).shape == (3,)
    assert len(g.stages) == {"z1": 3, "z2": 2, "z3": 1}.get(layers[0], 0)


def test_g_rejects_unknown_taps():
    with pytest.raises(ValueError, match="g needs taps"):
        semisup.GNet({"z9": 4}, 16)


# --------------------------------------------------------------------------- detectors
def test_geom_learns_the_transforms_and_scores_id_higher(geom):
    held_out = toy_images(24, bright=False, marked=True, seed=1)
    assert geom.transform_accuracy(held_out) > 0.6  # chance is 1/4
    assert geom.history_[-1]["loss"] < geom.history_[0]["loss"]
    unmarked = toy_images(24, bright=True, marked=False, seed=2)  # no orientation cue
    scores = geom.score(held_out)
    assert scores.shape == (24,) and float(scores.min()) >= 0 and float(scores.max()) <= 4
    assert auroc(scores, geom.score(unmarked)) >= 0.9


@pytest.mark.parametrize("make", ["intermediate", "bce"])
def test_g_separates_dark_id_from_bright_outliers(geom, make):
    train = imageset(toy_images(48, bright=False, marked=True, seed=0))
    outliers = imageset(toy_images(8, bright=True, marked=False, seed=3), "bright")
    if make == "intermediate":
        detector = semisup.IntermediateLayerDetector(geom, seed=0, device="cpu", cache=False, progress=False)
    else:
        detector = semisup.BceDetector(TINY, seed=0, device="cpu", cache=False, progress=False)
    detector.fit(train, outliers)
    id_scores = detector.score(toy_images(24, bright=False, marked=True, seed=4))
    ood_scores = detector.score(toy_images(24, bright=True, marked=True, seed=5))
    assert auroc(id_scores, ood_scores) >= 0.95  # higher = more in-distribution
    assert float(id_scores.max()) <= 0 and float(ood_scores.min()) >= -4  # −Σ_k σ(g) ∈ [−K, 0]


def test_geom_plus_and_the_weight_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path))
    config = semisup.SemisupConfig(**{**TINY.__dict__, "geom_epochs": 1})
    train = imageset(toy_images(16, bright=False, marked=True, seed=0))
    outliers = imageset(toy_images(4, bright=True, marked=False, seed=3), "bright")
    first = semisup.GeomDetector(config, outlier_exposure=True, device="cpu", progress=False).fit(train, outliers)
    again = semisup.GeomDetector(config, outlier_exposure=True, device="cpu", progress=False).fit(train, outliers)
    assert not first.from_cache_ and again.from_cache_ and again.key_ == first.key_
    torch.testing.assert_close(first.score(train), again.score(train))
    other = semisup.GeomDetector(config, outlier_exposure=True, seed=1, device="cpu", progress=False).fit(train, outliers)
    assert not other.from_cache_
    suffixes = sorted(p.suffix for p in (tmp_path / "semisup").iterdir())
    assert suffixes == [".json", ".json", ".safetensors", ".safetensors"]  # no temporary files left


def test_bad_input_is_refused_with_a_named_error(geom):
    train = imageset(toy_images(8, bright=False, marked=True, seed=0))
    outliers = imageset(toy_images(4, bright=True, marked=False, seed=3), "bright")
    empty = imageset(torch.zeros(0, 3, 16, 16, dtype=torch.uint8))
    options = {"device": "cpu", "cache": False, "progress": False}
    with pytest.raises(ValueError, match="needs training outliers"):
        semisup.IntermediateLayerDetector(geom, **options).fit(train, None)
    with pytest.raises(ValueError, match="outliers is empty"):
        semisup.BceDetector(TINY, **options).fit(train, empty)
    with pytest.raises(ValueError, match="train is empty"):
        semisup.GeomDetector(TINY, **options).fit(empty)
    with pytest.raises(ValueError, match="needs training outliers"):
        semisup.GeomDetector(TINY, outlier_exposure=True, **options).fit(train)
    with pytest.raises(ValueError, match="does not use outliers"):
        semisup.GeomDetector(TINY, **options).fit(train, outliers)
    with pytest.raises(TypeError, match="uint8"):
        geom.score(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="layers must be"):
        semisup.IntermediateLayerDetector(geom, layers=("z7",), **options).fit(train, outliers)
    unfitted = semisup.GeomDetector(TINY, **options)
    assert semisup.NotFittedError is detectors.NotFittedError  # one exception for every detector of the package
    with pytest.raises(detectors.NotFittedError):
        unfitted.score(train)
    with pytest.raises(semisup.NotFittedError):
        semisup.IntermediateLayerDetector(unfitted, **options).fit(train, outliers)
    with pytest.raises(semisup.NotFittedError):
        semisup.BceDetector(TINY, **options).score(train)


# --------------------------------------------------------------------------- protocol
def toy_splits(per_class: int = 12) -> Splits:
    """Two ID classes (dark, marked in different corners) and two OOD classes."""
    def images(seed, bright, corner):
        x = toy_images(per_class, bright=bright, marked=True, seed=seed)
        return x.flip(-1) if corner else x

    def split(parts, classes):
        return ImageSet(
            images=torch.cat(parts), labels=torch.arange(len(parts)).repeat_interleave(per_class), classes=classes
        )

    id_classes, ood_classes = ["left", "right"], ["bright", "plain"]
    return Splits(
        name="toy",
        train=split([images(0, False, 0), images(1, False, 1)], id_classes),
        test=split([images(2, False, 0), images(3, False, 1)], id_classes),
        ood=split([images(4, True, 0), toy_images(per_class, bright=False, marked=False, seed=5)], ood_classes),
        ood_kind={"bright": "far", "plain": "near"},
    )


def test_texture_pool_is_seeded_framed_and_labelled():
    frame = imageset(toy_images(4, bright=False, marked=False, seed=0, size=16))
    frame.images[:, :, :, :3] = 0  # a black band in every ID image
    pool = semisup.texture_outliers(5, size=16, seed=1, frame=frame)
    assert pool.images.shape == (5 * 8, 3, 16, 16) and pool.images.dtype == torch.uint8
    assert pool.classes == list(semisup.TEXTURES) and torch.equal(pool.labels, torch.arange(8).repeat_interleave(5))
    assert int(pool.images[:, :, :, :3].max()) == 0 and int(pool.images[:, :, :, 3:].max()) > 0  # frame copied
    assert torch.equal(pool.images, semisup.texture_outliers(5, size=16, seed=1, frame=frame).images)
    assert len(torch.unique(pool.images.flatten(1), dim=0)) == 40  # every image is drawn afresh


def test_one_class_splits_keep_train_and_test_outliers_disjoint():
    splits, pool = toy_splits(), semisup.texture_outliers(6, size=16, seed=0)
    task = semisup.one_class_splits(splits, "right", pool, n_outliers=7, n_outlier_classes=3, seed=0, n_test=5)
    assert len(task.train) == 12 and set(task.train.labels.tolist()) == {1}
    assert len(task.test_id) == 5
    assert task.test_ood.classes == ["left", "bright", "plain"] and len(task.test_ood) == 15
    counts = sorted(torch.bincount(task.outliers.labels, minlength=8).tolist())
    assert counts[-3:] == [2, 2, 3] and sum(counts) == 7  # 3 classes, split evenly
    # held-out OOD classes are training outliers and leave the test set
    held = semisup.one_class_splits(splits, "left", ["plain"], n_outliers=4, seed=1)
    assert held.test_ood.classes == ["right", "bright"] and len(held.outliers) == 4
    with pytest.raises(ValueError, match="shares classes"):
        semisup.one_class_splits(splits, "left", splits.ood, n_outliers=2)
    with pytest.raises(ValueError, match="n_outlier_classes"):
        semisup.one_class_splits(splits, "left", pool, n_outliers=2, n_outlier_classes=9)
    with pytest.raises(ValueError, match="has 6 images"):
        semisup.one_class_splits(splits, "left", pool, n_outliers=20, n_outlier_classes=2)
    with pytest.raises(ValueError, match="not an ID class"):
        semisup.one_class_splits(splits, "bright", pool, n_outliers=2)


def test_run_protocol_and_summary():
    config = semisup.SemisupConfig(**{**TINY.__dict__, "geom_epochs": 1, "g_epochs": 1})
    results = semisup.run_protocol(
        toy_splits(), ["geom", "bce", "z3"], n_outliers=[4], seeds=[0, 1], config=config, device="cpu", cache=False, progress=False
    )
    assert len(results) == 2 * 3 * 2  # normal classes × methods × seeds
    assert set(results.columns) >= {"normal_class", "method", "n_outliers", "n_outlier_classes", "seed", "auroc"}
    assert results["auroc"].between(0, 1).all() and (results["n_outlier_classes"] == 4).all()
    geom_rows = results[results.method == "geom"].groupby("normal_class")["auroc"].nunique()
    assert (geom_rows == 1).all()  # f is shared across seeds: GEOM does not depend on them
    with pytest.raises(ValueError, match="unknown method"):
        semisup.run_protocol(toy_splits(), ["nero"])
    with pytest.raises(ValueError, match=r"unknown method.*'z1\+z9'"):
        semisup.run_protocol(toy_splits(), ["z1+z9"])

    table = pd.DataFrame(
        {"method": ["a"] * 4, "normal_class": ["x", "y"] * 2, "seed": [0, 0, 1, 1], "auroc": [0.6, 0.8, 0.9, 0.9]}
    )
    summary = semisup.summarize(table)  # per seed: mean over classes 0.7 and 0.9
    assert summary.loc["a", "mean"] == pytest.approx(0.8) and summary.loc["a", "std"] == pytest.approx(0.1414, abs=1e-4)


def test_run_protocol_takes_a_set_of_features_joined_by_plus(monkeypatch):
    """'z1+z3' fits g on exactly those two features; a single name keeps its meaning."""
    config = semisup.SemisupConfig(**{**TINY.__dict__, "geom_epochs": 1, "g_epochs": 1})
    seen = []
    fit = semisup.IntermediateLayerDetector.fit
    monkeypatch.setattr(semisup.IntermediateLayerDetector, "fit", lambda self, *a: seen.append(tuple(self.layers)) or fit(self, *a))
    results = semisup.run_protocol(toy_splits(), ["z1+z3", "z2", "proposed"], n_outliers=[4], seeds=[0],
                                   normal_classes=["left"], config=config, device="cpu", cache=False, progress=False)
    assert seen == [("z1", "z3"), ("z2",), ("z1", "z2", "z3", "z4")]
    assert list(results.method) == ["z1+z3", "z2", "proposed"] and results.auroc.between(0, 1).all()


def test_detectors_store_their_arguments_and_derive_their_repr():
    """scikit-learn conventions, as in nero_lite.detectors: __init__ stores, the repr comes from the signature."""
    geom = semisup.GeomDetector(TINY, seed=3)
    assert geom.config is TINY and semisup.GeomDetector().config is None
    assert repr(semisup.GeomDetector(seed=3, outlier_exposure=True)) == "GeomDetector(outlier_exposure=True, seed=3)"
    head = semisup.IntermediateLayerDetector(geom, layers=("z1",))
    assert head.config is None and repr(head) == "IntermediateLayerDetector(layers=('z1',))"
    layers = ["z1", "z3"]
    assert semisup.IntermediateLayerDetector(geom, layers=layers).layers is layers  # stored as given, checked at fit
    # a transform set is a container, not an estimator: its repr names K, not its 72 transforms
    assert repr(semisup.geometric_transforms("shift", shift=0.125)) == "GeometricTransforms(K=9, shift=0.125)"
    assert repr(semisup.BceDetector(seed=1)) == "BceDetector(seed=1)"


def test_paired_difference_pairs_the_seeds_and_says_how_sure_it_is():
    """Two normal classes per seed; the class mean is taken first, then a - b per seed."""
    rows = []
    for seed, (a, b) in enumerate([(0.80, 0.70), (0.90, 0.70), (0.70, 0.60)]):
        for normal, shift in (("x", 0.05), ("y", -0.05)):
            rows += [{"method": "a", "seed": seed, "normal": normal, "auroc": a + shift, "n": 1},
                     {"method": "b", "seed": seed, "normal": normal, "auroc": b + shift, "n": 1},
                     {"method": "a", "seed": seed, "normal": normal, "auroc": 0.0, "n": 2}]
    results = pd.DataFrame(rows)
    diff = semisup.paired_difference(results, "a", "b", n=1)
    assert diff.differences.round(6).tolist() == [0.1, 0.2, 0.1]
    assert diff.mean == pytest.approx(0.4 / 3) and diff.std == pytest.approx(0.057735, abs=1e-6)
    assert diff.ahead == 3 and diff.consistent and diff.consistent_lead
    assert str(diff) == "+0.133 ± 0.058 (ahead in 3 of 3 seeds; consistent: same sign in every seed and larger than the spread)"
    reverse = semisup.paired_difference(results, "b", "a", n=1)
    assert reverse.consistent and not reverse.consistent_lead and reverse.ahead == 0
    mixed = semisup.paired_difference(results.assign(auroc=results.auroc.where(~((results.seed == 2) & (results.method == "b")), 0.95)), "a", "b", n=1)
    assert not mixed.larger_than_spread and str(mixed).endswith("within the spread over seeds)")
    with pytest.raises(ValueError, match=r"no results for method\(s\) \['b'\]"):
        semisup.paired_difference(results, "a", "b", n=2)
