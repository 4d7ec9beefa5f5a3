"""The comparison loop and the benchmark, on small fabricated data."""

import json
from types import SimpleNamespace

import pytest
import torch

from nero_lite import bench, compare, detectors, extraction, metrics, models
from nero_lite.data import ImageSet, Splits, to_input
from nero_lite.outputs import Outputs


def fake_outputs(n, labels, shift, seed):
    g = torch.Generator().manual_seed(seed)
    weight = torch.eye(3, 8)
    features = torch.rand(n, 8, generator=g) + shift * torch.nn.functional.one_hot(labels.clamp(min=0), 8)
    return Outputs(features=features, logits=features @ weight.T, labels=labels, weight=weight, bias=torch.zeros(3))


def fake_splits():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    train = ImageSet(images, torch.tensor([0, 1, 2, 0]), ["a", "b", "c"])
    ood = ImageSet(torch.zeros(60, 3, 8, 8, dtype=torch.uint8), torch.arange(60) % 2, ["near1", "far1"])
    return Splits("fake", train, train, ood, {"near1": "near", "far1": "far"})


def test_compare_detectors_tabulates_every_detector_and_group():
    labels = torch.arange(90) % 3
    outputs = compare.ExtractedSplits(
        train=fake_outputs(90, labels, 3.0, 0), test=fake_outputs(90, labels, 3.0, 1), ood=fake_outputs(60, torch.full((60,), -1), 0.0, 2)
    )
    names = ["msp", "energy", "knn", "nero"]
    table, scores = compare.compare_detectors(outputs, fake_splits(), names, params={"knn": {"k": 5}}, progress=False)
    assert set(table.detector) == set(names) and set(scores) == set(names)
    assert set(table.ood_class) == {"near1", "far1", "near-OOD", "far-OOD", "all"}
    # ID samples have a strong class feature, OOD samples none: every detector separates them
    assert (table[table.ood_class == "all"].auroc > 0.9).all()
    labelled, _ = compare.compare_detectors(outputs, fake_splits(), {"nero, no bias": detectors.create("nero", use_bias_term=False)}, progress=False)
    assert set(labelled.detector) == {"nero, no bias"}


def test_compare_detectors_builds_the_reference_preset_and_counts_its_fpr():
    labels = torch.arange(80) % 3
    outputs = compare.ExtractedSplits(
        train=fake_outputs(80, labels, 1.0, 0), test=fake_outputs(80, labels, 1.0, 1), ood=fake_outputs(60, torch.full((60,), -1), 0.5, 2)
    )
    names = ["react", "energy"]
    ours, _ = compare.compare_detectors(outputs, fake_splits(), names, progress=False)
    reference, scores = compare.compare_detectors(outputs, fake_splits(), names, progress=False,
                                                  preset="official", arch="resnet18", convention="official")
    by_hand = {name: detectors.create(name, preset="official", arch="resnet18") for name in names}
    same, _ = compare.compare_detectors(outputs, fake_splits(), by_hand, progress=False)
    pooled = lambda table: table[table.ood_class == "all"].set_index("detector")
    # ReAct clips at 0.9 instead of the 90th percentile; Energy has no setting of its own
    assert pooled(reference).auroc["react"] != pooled(ours).auroc["react"]
    assert pooled(reference).auroc["energy"] == pooled(ours).auroc["energy"]
    assert (pooled(reference).auroc == pooled(same).auroc).all()
    # the test set has 80 ID samples, a multiple of 20: the reference count accepts one more
    for name, (id_scores, ood_scores) in scores.items():
        assert pooled(reference).fpr95[name] == metrics.fpr_at_tpr(id_scores, ood_scores, convention="official")
        assert pooled(same).fpr95[name] == metrics.fpr_at_tpr(id_scores, ood_scores)


def test_a_detector_that_cannot_be_fitted_is_skipped_only_when_asked():
    labels = torch.arange(90) % 3
    outputs = compare.ExtractedSplits(
        train=fake_outputs(90, labels, 3.0, 0), test=fake_outputs(90, labels, 3.0, 1), ood=fake_outputs(60, torch.full((60,), -1), 0.0, 2)
    )
    with pytest.raises(ValueError, match="k must be"):
        compare.compare_detectors(outputs, fake_splits(), ["msp", "knn"], params={"knn": {"k": 500}}, progress=False)
    with pytest.warns(UserWarning, match="skipped detector knn: k must be"):
        table, scores = compare.compare_detectors(outputs, fake_splits(), ["msp", "knn"], params={"knn": {"k": 500}},
                                                  progress=False, skip_failing=True)
    assert set(table.detector) == set(scores) == {"msp"} and list(table.attrs["skipped"]) == ["knn"]
    with pytest.raises(ValueError, match="every detector was skipped"), pytest.warns(UserWarning):
        compare.compare_detectors(outputs, fake_splits(), ["knn"], params={"knn": {"k": 500}}, progress=False, skip_failing=True)


def test_throughput_reports_a_ratio_against_the_forward_pass(monkeypatch):
    """On a fake clock that advances with the work done, never with wall time: one tick per image
    through the model, ``cost`` ticks per image scored. extract + NERO runs the same forward pass
    as the plain one and then scores, so the ratio is exactly 1 / (1 + cost)."""
    model = models.create_model("resnet18", 3, 32).eval()
    images = ImageSet(torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 3, ["a", "b", "c"])
    train = extraction.extract(model, images, "cpu", progress=False)
    nero = detectors.create("nero", pca_fraction=0.02).fit(train)  # 10 components from 16 samples
    ticks = [0.0]
    model.register_forward_hook(lambda module, inputs, output: ticks.__setitem__(0, ticks[0] + len(inputs[0])))

    class Costly:
        """NERO's score, charged ``cost`` ticks per image."""

        def __init__(self, cost):
            self.cost = cost

        def score(self, outputs):
            ticks[0] += self.cost * len(outputs.features)
            return nero.score(outputs)

    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: ticks[0]))
    speeds = {cost: bench.throughput(model, images, Costly(cost), torch.device("cpu"), batch_size=8, repeats=2)
              for cost in (0, 1, 3)}  # fmt: skip
    assert {cost: s["ratio_extract_nero_to_forward"] for cost, s in speeds.items()} == {0: 1.0, 1: 0.5, 3: 0.25}
    assert {cost: s["extract_nero_images_per_s"] for cost, s in speeds.items()} == {0: 1.0, 1: 0.5, 3: 0.25}
    assert all(s["images"] == 16 and s["forward_images_per_s"] == 1.0 for s in speeds.values())  # 16 images, 16 ticks


def test_throughput_interleaves_the_two_and_takes_medians(monkeypatch):
    """Known durations: forward 1, 3, 2 s and extract + NERO 3, 2, 8 s over three rounds (after warm-ups)."""
    events, forward_s, clock = [], iter([99.0, 1.0, 3.0, 2.0]), iter([0.0, 50.0, 0.0, 3.0, 0.0, 2.0, 0.0, 8.0])

    def forward_seconds(*args):
        events.append("forward")
        return next(forward_s)

    def extract(*args, **kwargs):
        events.append("extract")
        return torch.zeros(4, 2)

    class Scorer:
        def score(self, outputs):
            events.append("score")
            return outputs.sum(1)

    monkeypatch.setattr(bench, "_forward_seconds", forward_seconds)
    monkeypatch.setattr(bench, "extract", extract)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    images = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ["a"])
    speed = bench.throughput(torch.nn.Identity(), images, Scorer(), torch.device("cpu"), repeats=3)
    assert events == ["forward", "extract", "score"] * 4  # a warm-up of each, then interleaved rounds
    assert speed["forward_images_per_s"] == pytest.approx(4 / 2.0)  # median forward: 2 s
    assert speed["extract_nero_images_per_s"] == pytest.approx(4 / 3.0)  # median extract + NERO: 3 s
    # the median of the per-round ratios (1/3, 3/2, 2/8), not the ratio of the medians (2/3) or of the minima (1/2)
    assert speed["ratio_extract_nero_to_forward"] == pytest.approx(1 / 3)


def test_flag_benchmark_reports_speed_and_memory_of_flag_and_a_forward_pass(tmp_path):
    result = bench.main(["flag", "--n-images", "40", "--size", "16", "--batch-size", "8", "--repeats", "1",
                         "--epochs", "1", "--train-per-class", "12", "--device", "cpu", "--out", str(tmp_path)])
    assert result["images"] == 40 and result["quarter_images"] == 10
    for key in ("forward_images_per_s", "flag_images_per_s", "ratio_flag_to_forward", "forward_peak_rss_mib",
                "flag_peak_rss_mib", "flag_quarter_peak_rss_mib", "write_s", "fit_s"):
        assert result[key] > 0, key  # the values are measured by the benchmark, never asserted
    assert json.loads((tmp_path / "bench-flag-40-16.json").read_text())["images"] == 40


def test_a_detector_that_needs_the_images_is_scored_on_them():
    """compare_detectors reads needs_images, not the class: any such detector gets the model and the images."""
    splits = fake_splits()
    model = models.create_model("resnet18", 3, 8).eval()
    outputs = compare.ExtractedSplits(*(extraction.extract(model, part, "cpu", progress=False)
                                        for part in (splits.train, splits.test, splits.ood)))
    seen = []

    class ImageProbe(type(detectors.create("msp"))):
        needs_images = True

        def score_images(self, model, images):
            seen.append(tuple(images.shape))
            return -images.flatten(1).abs().mean(1)

    _, scores = compare.compare_detectors(outputs, splits, {"probe": ImageProbe(), "msp": detectors.create("msp")},
                                          model=model, progress=False)
    assert seen == [(4, 3, 8, 8), (60, 3, 8, 8)]
    assert torch.equal(scores["probe"][0], -to_input(splits.test.images).flatten(1).abs().mean(1))
    assert not detectors.create("msp").needs_images and detectors.create("odin").needs_images


def test_scale_benchmark_reports_each_engine_beside_a_forward_pass(tmp_path):
    rows = bench.main(["scale", "--counts", "6", "--repeats", "1", "--workers", "1", "--size", "16", "--batch-size", "4",
                       "--device", "cpu", "--out", str(tmp_path)])
    assert [(row["images"], row["run"]) for row in rows] == [(6, "forward"), (6, "local"), (6, "ray, 1 worker")]
    for row in rows:
        assert row["images_per_s"] > 0 and row["driver_peak_rss_mib"] > 0, row  # measured, never asserted
    assert rows[0]["ratio_to_forward"] == 1.0 and rows[0]["worker_peak_rss_mib"] == 0.0
    assert rows[2]["worker_peak_rss_mib"] > 100  # a Ray worker holds torch and the bundle
    assert json.loads((tmp_path / "bench-scale-16.json").read_text())["rows"] == rows
