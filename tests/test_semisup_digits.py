"""The paper's own setting: scikit-learn's digits, rendered letters, the comparison with the paper.

Everything is 8×8 and tiny; the file runs in a few seconds on one CPU thread.
"""

import dataclasses
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from nero_lite import semisup
from nero_lite.semisup import plots as semiplots

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits():
    return semisup.digits_splits()


def test_block_counts_is_the_uci_reduction_hand_checked():
    bitmap = torch.zeros(1, 8, 8, dtype=torch.bool)
    bitmap[0, :4, :4] = True  # a full block: 16
    bitmap[0, 1, 6] = True  # one pixel in the top-right block: 1
    bitmap[0, 4:, :4] = torch.eye(4, dtype=torch.bool)  # a diagonal: 4
    assert torch.equal(semisup.block_counts(bitmap), torch.tensor([[[16, 1], [4, 0]]]))
    assert torch.equal(semisup.block_counts(bitmap, block=2)[0, 0], torch.tensor([4, 4, 0, 1]))
    assert semisup.block_counts(torch.ones(2, 32, 32)).shape == (2, 8, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        semisup.block_counts(torch.ones(1, 30, 32))


def test_counts_become_grey_uint8_rgb():
    images = semisup.counts_to_images(torch.tensor([[[0, 4], [8, 16]]]))
    assert images.dtype == torch.uint8 and images.shape == (1, 3, 2, 2)
    assert images[0, :, 1, 1].tolist() == [255] * 3 and images[0, 0].tolist() == [[0, 64], [128, 255]]
    with pytest.raises(ValueError, match=r"in \[0, 16\]"):
        semisup.counts_to_images(torch.tensor([[[17]]]))


def test_digits_splits_are_the_1797_digits_stratified_and_seeded(splits):
    assert splits.id_classes == list("0123456789") and splits.ood_classes == [] and len(splits.ood) == 0
    assert len(splits.train) + len(splits.test) == 1797
    assert splits.train.images.shape[1:] == (3, 8, 8) and splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.train.images[:, 0], splits.train.images[:, 2])  # grey
    # every value is a count 0…16 scaled to 0…255
    allowed = {round(255 * c / 16) for c in range(17)}
    assert set(torch.cat([splits.train.images, splits.test.images]).unique().tolist()) <= allowed
    for name, count in splits.train.counts().items():  # 2/3 of each class of about 180
        assert abs(count - 2 * (count + splits.test.counts()[name]) / 3) <= 1
    again, other = semisup.digits_splits(), semisup.digits_splits(seed=1)
    assert torch.equal(again.train.images, splits.train.images) and torch.equal(again.test.labels, splits.test.labels)
    assert not torch.equal(other.train.images, splits.train.images)


def test_letters_are_seeded_labelled_and_in_the_digits_format():
    letters = semisup.letter_outliers(3, seed=0)
    assert letters.classes == list(semisup.LETTERS) and letters.counts() == {c: 3 for c in semisup.LETTERS}
    assert letters.images.shape == (78, 3, 8, 8) and letters.images.dtype == torch.uint8
    assert set(letters.images.unique().tolist()) <= {round(255 * c / 16) for c in range(17)}
    counts = (letters.images[:, 0].float() * 16 / 255).round()
    assert ((counts >= 8).sum((1, 2)) >= 4).all()  # every glyph inks at least 4 blocks half-full
    # an upright "o" is a ring: its outline's inner contour is a hole, not filled (even-odd rule)
    rings = semisup.letter_outliers(12, seed=0, letters=["o"], max_rotation=0, max_shear=0, stroke_steps=(0,))
    rings = (rings.images[:, 0].float() * 16 / 255).round()
    assert (rings[:, 3:5, 3:5].amax((1, 2)) <= 8).all() and (rings.amax((1, 2)) >= 13).all()
    assert torch.equal(semisup.letter_outliers(3, seed=0).images, letters.images)
    assert not torch.equal(semisup.letter_outliers(3, seed=1).images, letters.images)
    # thicker strokes mean more ink, for the same draw of fonts and jitter
    thin = semisup.letter_outliers(3, seed=0, stroke_steps=(0,)).images.float().mean()
    thick = semisup.letter_outliers(3, seed=0, stroke_steps=(2,)).images.float().mean()
    assert thick > 1.5 * thin
    with pytest.raises(ValueError, match="single letters"):
        semisup.letter_outliers(2, letters=["a", "7"])


def test_letters_are_not_digits(splits):
    references = semisup.letter_outliers(10, seed=0)
    queries = semisup.letter_outliers(10, seed=1)

    def flat(images):
        return images[:, 0].flatten(1).float().numpy()

    knn = KNeighborsClassifier(1).fit(
        np.concatenate([flat(splits.train.images), flat(references.images)]),
        [0] * len(splits.train) + [1] * len(references),
    )
    assert (knn.predict(flat(splits.test.images)) == 0).mean() > 0.95  # a held-out digit's nearest neighbour is a digit
    assert (knn.predict(flat(queries.images)) == 1).mean() > 0.8  # a new letter's is a letter
    distances = torch.cdist(torch.from_numpy(flat(queries.images)), torch.from_numpy(flat(splits.train.images)))
    assert distances.min() > 0  # no rendered letter is a copy of a digit


def test_protocol_on_one_digit_geom_is_weak_on_8_and_g_is_not(splits):
    config = dataclasses.replace(semisup.DIGITS_CONFIG, geom_epochs=4, n_test=30)
    results = semisup.run_protocol(
        splits, ["geom", "bce", "proposed"], n_outliers=[32], seeds=[0], config=config,
        outlier_pool=semisup.letter_outliers(4, seed=0), normal_classes=["8"], device="cpu", cache=False, progress=False,
    )  # fmt: skip
    by_method = results.set_index("method")
    assert len(results) == 3 and (by_method["n_outlier_classes"] == 26).all()
    # no OOD classes: the test OOD set is the nine other digits
    assert by_method["auroc_ood"].isna().all() and (by_method["auroc_other_id"] == by_method["auroc"]).all()
    # measured 0.819, 0.905, 0.931
    assert 0.75 < by_method.loc["geom", "auroc"] < 0.88
    assert 0.85 < by_method.loc["bce", "auroc"] < 0.96
    assert 0.88 < by_method.loc["proposed", "auroc"] < 0.98
    assert by_method.loc["proposed", "auroc"] > by_method.loc["geom", "auroc"] + 0.05


def fake_results() -> pd.DataFrame:
    """Two normal classes, two seeds: geom 0.9 on "0" and 0.7 on "8"; proposed 0.95/0.85 (seed 0), 0.97/0.87 (seed 1)."""
    rows = []
    for seed in (0, 1):
        for normal, geom, proposed in (("0", 0.9, 0.95 + 0.02 * seed), ("8", 0.7, 0.85 + 0.02 * seed)):
            rows += [
                {"normal_class": normal, "method": "geom", "seed": seed, "auroc": geom},
                {"normal_class": normal, "method": "proposed", "seed": seed, "auroc": proposed},
            ]
    return pd.DataFrame(rows)


def test_per_class_and_layer_tables_sit_beside_the_paper():
    table = semisup.per_class_table(fake_results(), ["geom", "proposed"])
    assert list(table.index) == ["0", "8", "mean"]
    assert list(table.columns) == [(m, c) for m in ("geom", "proposed") for c in ("mean", "std", "paper")]
    assert table.loc["8", ("geom", "mean")] == pytest.approx(70.0) and table.loc["8", ("geom", "std")] == 0
    assert table.loc["0", ("proposed", "mean")] == pytest.approx(96.0)
    assert table.loc["0", ("proposed", "std")] == pytest.approx(100 * 0.02 / math.sqrt(2))
    assert table.loc["mean", ("proposed", "mean")] == pytest.approx(91.0)
    assert table.loc["0", ("geom", "paper")] == 81.5 and table.loc["8", ("proposed", "paper")] == 97.6
    assert table.loc["mean", ("geom", "paper")] == 92.6
    layers = semisup.layer_table(fake_results(), ["geom", "proposed"])
    assert layers.loc["geom", "mean"] == pytest.approx(80.0) and layers.loc["proposed", "paper"] == 98.0
    with pytest.raises(ValueError, match="bce"):
        semisup.per_class_table(fake_results(), ["geom", "bce"])
    matplotlib.use("Agg")
    fig = semiplots.per_class_bars(table, highlight=["8"])
    assert len(fig.axes[0].patches) == 2 * 3 + 1  # bars per method and row, and the shaded class


def test_class_gap_is_paired_by_seed():
    geom = semisup.class_gap(fake_results(), "geom", classes=["8"])
    assert geom.mean == pytest.approx(0.1) and geom.std == 0  # mean of 0.9 and 0.7, minus 0.7
    proposed = semisup.class_gap(fake_results(), "proposed", classes=["8"])
    assert proposed.differences.tolist() == pytest.approx([0.05, 0.05])
    with pytest.raises(ValueError, match="'3'"):
        semisup.class_gap(fake_results(), "geom", classes=["3"])
    # the paper's: GEOM 92.6 on average, 81.5 and 82.0 on 0 and 8; the proposed 98.0, 99.2 and 97.6
    assert semisup.paper_class_gap("geom") == pytest.approx(10.85)
    assert semisup.paper_class_gap("proposed") == pytest.approx(-0.4)
    assert math.isnan(semisup.paper_class_gap("bce")) and math.isnan(semisup.paper_class_gap("z3"))
