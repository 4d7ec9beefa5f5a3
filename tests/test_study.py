"""study.run_study on a tiny synthetic set: tables, summaries and the split AUROC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nero_lite import compare, data, extraction, study, training
from nero_lite.synthetic import SyntheticConfig

TINY = SyntheticConfig(n_train=8, n_test=6, n_ood=6)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, one_torch_thread) -> study.Study:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(tmp_path_factory.mktemp("cache")))
        return study.run_study("synthetic", seeds=(0, 1), masks=(False, True), size=32,
                               recipe=training.Recipe(epochs=1), detectors=["msp", "nero"], config=TINY, progress=False)


def test_one_run_per_seed_and_setting(tiny_study):
    assert [(r.setting, r.seed) for r in tiny_study.runs] == [
        ("unmasked", 0), ("unmasked", 1), ("masked", 0), ("masked", 1)]
    masked = tiny_study.run(seed=1, masked=True)
    assert masked.splits.train.images[:, :, -11:, :11].max() == 0  # ceil(0.35 * 32) = 12 corner pixels
    with pytest.raises(KeyError):
        tiny_study.run(seed=5, masked=False)
    assert len(tiny_study.accuracies()) == 4


def test_summary_is_mean_and_std_over_seeds(tiny_study):
    table = tiny_study.table
    summary = tiny_study.summary("auroc")
    assert list(summary.index) == ["msp", "nero"]
    assert summary.columns[0] == ("unmasked", "polyp", "mean")
    values = table[(table.detector == "nero") & (table.setting == "masked") & (table.ood_class == "all")].auroc
    assert len(values) == 2
    assert summary.loc["nero", ("masked", "all", "mean")] == pytest.approx(values.mean())
    assert summary.loc["nero", ("masked", "all", "std")] == pytest.approx(values.std())
    text = study.mean_std(summary)
    assert text.loc["nero", ("masked", "all")] == f"{100 * values.mean():.1f} ± {100 * values.std():.1f}"


def _pair_auroc(run, k, flag):
    """AUROC by counting pairs: flagged score above unflagged score (ties count half)."""
    scores = run.scores["msp"][1].numpy()[(run.splits.ood.labels == k).numpy()]
    return np.mean([(a > b) + 0.5 * (a == b) for a in scores[flag] for b in scores[~flag]])


def test_split_auroc_counts_pairs_per_run(tiny_study):
    runs = [tiny_study.run(seed, masked=False) for seed in (0, 1)]
    k = runs[0].splits.ood_classes.index("polyp")
    flag = np.arange(int((runs[0].splits.ood.labels == k).sum())) % 2 == 0
    gap = tiny_study.split_auroc("polyp", flag)
    assert list(gap.index) == ["msp", "nero"] and set(gap.columns.get_level_values(0)) == {"unmasked", "masked"}
    expected = [_pair_auroc(run, k, flag) for run in runs]
    assert gap.loc["msp", ("unmasked", "mean")] == pytest.approx(np.mean(expected))
    assert gap.loc["msp", ("unmasked", "std")] == pytest.approx(np.std(expected, ddof=1))
    with pytest.raises(ValueError, match="entries"):
        tiny_study.split_auroc("polyp", flag[:-1])
    with pytest.raises(ValueError, match="some but not all"):
        tiny_study.split_auroc("polyp", np.ones_like(flag))


def test_the_starting_weights_reach_every_training(tmp_path, monkeypatch):
    """run_study passes pretrained/weights through (the paper's setting); nothing is downloaded here."""
    seen = []
    real = study.train_classifier

    def spy(data, arch, recipe, **kwargs):
        seen.append((arch, recipe, kwargs["pretrained"], kwargs["weights"]))
        return real(data, arch, recipe, **{**kwargs, "pretrained": False, "weights": None})

    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path))
    monkeypatch.setattr(study, "train_classifier", spy)
    recipe = training.Recipe(epochs=1)
    study.run_study("synthetic", seeds=(0, 1), masks=(False,), size=32, arch="resnet18", recipe=recipe,
                    pretrained=True, detectors=["msp"], config=TINY, progress=False)
    assert seen == [("resnet18", recipe, True, None)] * 2


def test_test_time_masking_agrees_with_the_masked_runs_images(tiny_study):
    """Masking the box corner at test time = the unmasked model on the masked run's test images; an empty region changes nothing."""
    run = tiny_study.run(seed=0, masked=False)
    size = run.splits.test.images.shape[-1]
    empty = torch.zeros(size, size, dtype=torch.bool)
    table = study.test_time_masking(run, {"box corner": data.corner_region(size), "nothing": empty})
    assert list(table.region.unique()) == ["none", "box corner", "nothing"]
    key = ["detector", "ood_class"]
    none = table[table.region == "none"].set_index(key).auroc
    pd.testing.assert_series_equal(none, run.table.set_index(key).auroc)
    pd.testing.assert_series_equal(table[table.region == "nothing"].set_index(key).auroc, none, check_exact=False, rtol=1e-6)
    masked_splits = tiny_study.run(seed=0, masked=True).splits   # the same images, the corner masked by data.load
    by_hand, _ = compare.compare_detectors(
        compare.ExtractedSplits(run.outputs.train, extraction.extract(run.model, masked_splits.test, progress=False),
                                extraction.extract(run.model, masked_splits.ood, progress=False)),
        masked_splits, ["msp", "nero"], model=run.model, progress=False)
    pd.testing.assert_series_equal(table[table.region == "box corner"].set_index(key).auroc, by_hand.set_index(key).auroc,
                                   check_exact=False, rtol=1e-6)


def test_mask_region_is_mask_shortcut_for_the_corner():
    images = torch.randint(1, 256, (3, 3, 20, 20), dtype=torch.uint8)
    assert torch.equal(data.mask_region(images, data.corner_region(20)), data.mask_shortcut(images))
    control = data.corner_region(20).flip(0).flip(1)
    masked = data.mask_region(images, control)
    assert masked[..., :7, -7:].max() == 0 and torch.equal(masked[..., 7:, :], images[..., 7:, :])
    with pytest.raises(ValueError, match="does not match"):
        data.mask_region(images, torch.zeros(10, 10, dtype=torch.bool))


def test_a_runs_nero_threshold_comes_from_the_calibration_half(tiny_study):
    run = tiny_study.run(seed=0, masked=False)
    nero, threshold = run.fitted_nero()
    calibration = run.outputs.test.subset(torch.arange(len(run.outputs.test)) % 2 == 0)
    scores = nero.score(calibration)
    assert (scores >= threshold).float().mean() >= 0.95  # accepts 95 % of the calibration half
    assert (scores > threshold).float().mean() < 0.95  # and is the largest threshold that does
