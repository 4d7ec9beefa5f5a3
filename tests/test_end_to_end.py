"""Seeded end-to-end runs on the embedded data, with asserted ranges.

These train the book's models with the default recipe (cached under NERO_LITE_CACHE,
so the chapters executed afterwards load them instead of training again).
"""

import pytest
import torch

from nero_lite import compare, data, detectors, metrics, models


@pytest.fixture(scope="module")
def splits():
    return data.load()


def msp_table(outputs, splits):
    msp = detectors.create("msp")
    return metrics.evaluate_table(msp.score(outputs.test), msp.score(outputs.ood), splits.ood.labels,
                                  splits.ood_classes, splits.ood_kind)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resnet18_is_accurate_and_msp_is_imperfect_on_near_ood(splits, seed):
    model = models.train_classifier(splits.train, "resnet18", seed=seed)
    outputs = compare.extract_splits(model, splits, progress=False)
    assert models.accuracy(outputs.test) >= 0.90
    table = msp_table(outputs, splits)
    # the embedded data is not trivial: detectors have room to differ
    assert 0.60 <= table.loc["near-OOD", "auroc"] <= 0.95
    nero = detectors.create("nero").fit(outputs.train)
    nero_auroc = metrics.auroc(nero.score(outputs.test), nero.score(outputs.ood))
    assert 0.60 <= nero_auroc <= 1.0


def test_vit_trains_above_chance(splits):
    model = models.train_classifier(splits.train, "vit", seed=0)
    outputs = compare.extract_splits(model, splits, progress=False)
    assert outputs.test.features.shape[1] == 192
    assert models.accuracy(outputs.test) >= 0.6
    assert torch.isfinite(outputs.ood.logits).all()
