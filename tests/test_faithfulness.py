"""Localisation and faithfulness metrics: hand-made cases, and Quantus as an independent route."""

import numpy as np
import pandas as pd
import pytest
import quantus
import torch

from nero_lite import faithfulness as fa


def random_maps_and_masks(n=12, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, side, side, generator=g, dtype=torch.float64)
    masks = torch.rand(n, side, side, generator=g) < 0.2
    return maps, masks


def test_mass_accuracy_and_pointing_of_hand_made_maps():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True  # a quarter of the image
    inside = torch.zeros(1, 4, 4, dtype=torch.float64)
    inside[0, 0, 0], inside[0, 3, 3], inside[0, 2, 2] = 3.0, 1.0, -5.0  # negative relevance is ignored
    assert float(fa.mass_accuracy(inside, mask)[0]) == pytest.approx(0.75)
    assert float(fa.pointing_game(inside, mask)[0]) == 1.0
    assert float(fa.pointing_game(-inside, mask)[0]) == 0.0  # the maximum (5) sits outside
    uniform = torch.ones(1, 4, 4)
    assert float(fa.mass_accuracy(uniform, mask)[0]) == pytest.approx(float(fa.area_share(mask)[0])) == 0.25
    assert float(fa.pointing_game(uniform, mask)[0]) == 1.0  # ties: any maximum counts
    assert torch.isnan(fa.mass_accuracy(-uniform, mask)[0])  # no positive relevance at all
    with pytest.raises(ValueError, match="N×H×W"):
        fa.mass_accuracy(uniform, mask[0])


def test_localisation_agrees_with_quantus():
    maps, masks = random_maps_and_masks()
    positive = maps.clamp_min(0).numpy()  # Quantus sums the raw map; ours counts positive relevance
    expected = quantus.RelevanceMassAccuracy(disable_warnings=True).evaluate_batch(a_batch=positive, s_batch=masks.numpy())
    np.testing.assert_allclose(fa.mass_accuracy(maps, masks).numpy(), expected, rtol=1e-12)
    hits = quantus.PointingGame(disable_warnings=True).evaluate_batch(a_batch=maps.numpy(), s_batch=masks.numpy())
    np.testing.assert_array_equal(fa.pointing_game(maps, masks).numpy(), np.asarray(hits, dtype=float))


class Linear(torch.nn.Module):
    """A fixed linear scorer of 3×16×16 images, two outputs (Quantus explains output 0)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(2, 3 * 16 * 16, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def test_restoration_curve_agrees_with_quantus_region_perturbation():
    """Patches ranked by their summed map, replaced one at a time: the same curve as Quantus's."""
    maps, _ = random_maps_and_masks(n=5)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(5, 3, 16, 16, generator=g)
    model = Linear().eval()
    fill = torch.zeros_like(images)
    with torch.no_grad():
        ours = fa.restoration_curves(lambda x: model(x)[:, 0], images, fill, maps, [k / 16 for k in range(17)], patch=4)
    metric = quantus.RegionPerturbation(
        patch_size=4, regions_evaluation=16, perturb_baseline=0.0, normalise=False, abs=False,
        disable_warnings=True, display_progressbar=False,
    )
    drops = metric(model=model, x_batch=images.numpy(), y_batch=np.zeros(5, dtype=int), a_batch=maps[:, None].numpy(),
                   softmax=False, device="cpu")
    # Quantus records f(x) - f(x_k) after each patch; ours is the curve f(x_k) itself
    np.testing.assert_allclose(ours[:, 0:1] - ours[:, 1:], np.asarray(drops), rtol=1e-4, atol=1e-3)
    assert torch.allclose(ours[:, -1], model(fill)[:, 0].double().detach())  # all replaced: the fill's score


def test_restoration_replaces_the_top_patches_first():
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    fill = torch.full_like(images, 255)
    maps = torch.zeros(1, 8, 8)
    maps[0, 4:, 4:] = 1.0  # the lower-right patch of 4×4 is the most relevant
    seen = []

    def score(batch):
        seen.append(batch.clone())
        return batch.float().mean(dim=(1, 2, 3))

    curve = fa.restoration_curves(score, images, fill, maps, [0, 0.25, 1.0], patch=4)
    assert torch.equal(seen[1][0, :, 4:, 4:], fill[0, :, 4:, 4:]) and int(seen[1][0, :, :4].sum()) == 0
    np.testing.assert_allclose(curve[0].numpy(), [0, 255 / 4, 255])
    assert float(fa.aopc(curve)[0]) == pytest.approx((255 / 4 + 255) / 2)
    with pytest.raises(ValueError, match="divide"):
        fa.restoration_curves(score, images, fill, maps, [0.5], patch=3)
    with pytest.raises(ValueError, match="fractions"):
        fa.restoration_curves(score, images, fill, maps, [1.5], patch=4)


def test_ties_are_broken_at_random_but_reproducibly():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    fill = torch.full_like(images, 255)
    flat = torch.zeros(2, 8, 8)
    picks = []

    def score(batch):
        picks.append(batch[:, 0].flatten(1).bool())
        return batch.float().mean(dim=(1, 2, 3))

    for seed in (0, 0, 1):
        fa.restoration_curves(score, images, fill, flat, [0.25], patch=2, seed=seed)
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])
    assert not torch.equal(picks[0][0], picks[0][1])  # each image gets its own order


def test_grid_share_and_cross_image_correlation():
    maps = torch.rand(6, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.01
    assert fa.grid_share(maps) == pytest.approx(36 / 4096, rel=0.1)  # 2×2 cells × 3×3 px of 64×64
    spots = maps.clone()
    spots[:, ::32, ::32] = 100.0  # a fixed spot at the top-left pixel of every 32-px cell
    assert fa.grid_share(spots) > 0.9
    assert fa.cross_image_correlation(spots) > 0.95
    assert abs(fa.cross_image_correlation(maps)) < 0.05
    with pytest.raises(ValueError, match="multiple"):
        fa.grid_share(torch.ones(2, 40, 40))


def test_centre_prior_and_blur():
    prior = fa.centre_prior(2, 8, 8)
    assert prior.shape == (2, 8, 8) and prior[0, 3:5, 3:5].min() == prior.max()
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    images[..., 8, 8] = 255
    soft = fa.blurred(images, sigma=0.1)
    assert soft.dtype == torch.uint8 and 0 < int(soft[0, 0, 8, 8]) < 255 and int(soft[0, 0, 8, 10]) > 0


def test_compare_maps_measures_every_map_on_the_same_images():
    """On an untrained network: the table is complete, and the maps that know nothing score chance."""
    from nero_lite import detectors
    from nero_lite.data import ImageSet
    from nero_lite.extraction import extract
    from nero_lite.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18d", 3).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 64, 64), dtype=torch.uint8, generator=g)
    train = extract(model, ImageSet(images[:30], torch.arange(30) % 3, ["a", "b", "c"]), "cpu", progress=False)
    nero = detectors.create("nero", pca_fraction=16 / 512).fit(train)
    masks = torch.zeros(10, 64, 64, dtype=torch.bool)
    masks[:, :16, 48:] = True  # a corner square: 1/16 of the image
    fill = images[30:].flip(0)
    result = fa.compare_maps(model, nero, images[30:], masks, fill, fractions=(0.0, 0.1, 0.5, 1.0), device="cpu")
    assert list(result.maps) == list(fa.MAP_KINDS) and all(m.shape == (10, 64, 64) for m in result.maps.values())
    assert len(result.table) == 10 * len(fa.MAP_KINDS)
    summary = result.summary()
    assert list(summary.index) == list(fa.MAP_KINDS)
    assert summary.loc["random", "ratio"] == pytest.approx(1.0, abs=0.1)
    assert summary.loc["centre prior", "mass_accuracy"] < 1 / 32  # the square is far from the centre
    assert np.isnan(summary.loc["centre prior", "aopc"])
    for kind, curves in result.curves.items():
        assert curves.shape == (10, 4)
        # fully replaced: every map ends at the fill's score, whatever its order
        torch.testing.assert_close(curves[:, -1], result.curves["random"][:, -1])


def _benchmark_of(maps_by_class: dict, n_images: int = 12, seeds=(0, 1)) -> fa.Benchmark:
    """A Benchmark whose table is given per class as {map: (mass_accuracy, pointing, aopc)} functions of (image, seed)."""
    rows = []
    for name, maps in maps_by_class.items():
        for seed in seeds:
            for image in range(n_images):
                for kind, (mass, point, gain) in maps.items():
                    rows.append({"seed": seed, "class": name, "image": image, "map": kind, "area": 0.1,
                                 "mass_accuracy": mass(image, seed), "pointing": point(image, seed), "aopc": gain(image, seed)})
    empty = pd.DataFrame()
    return fa.Benchmark(pd.DataFrame(rows), empty, empty, empty)


def test_verdicts_pair_the_score_map_with_each_baseline_image_by_image():
    wiggle = lambda image, seed: 0.001 * ((image * 7 + seed * 3) % 5 - 2)  # noqa: E731  (symmetric, not constant)
    benchmark = _benchmark_of({
        # the score map: 3x the area share, ahead of every map on mass accuracy, its AOPC level with random's
        "polyp": {"score map": (lambda i, s: 0.3 + wiggle(i, s), lambda i, s: 1.0, lambda i, s: 0.2 + wiggle(i, s)),
                  "gradient × input": (lambda i, s: 0.15, lambda i, s: 0.0, lambda i, s: 0.5),
                  "random": (lambda i, s: 0.1, lambda i, s: 0.0, lambda i, s: 0.2 - wiggle(i, s)),
                  "centre prior": (lambda i, s: 0.12, lambda i, s: 0.0, lambda i, s: float("nan"))},
        # the score map at the area share, behind the centre prior; pointing at chance (hits 1 image in 10)
        "ulcer": {"score map": (lambda i, s: 0.1 + wiggle(i, s), lambda i, s: float(i % 10 == 0 and s == 0) + 0.0,
                                lambda i, s: 0.1), "gradient × input": (lambda i, s: 0.1, lambda i, s: 0.0, lambda i, s: 0.0),
                  "random": (lambda i, s: 0.1, lambda i, s: 0.0, lambda i, s: 0.0),
                  "centre prior": (lambda i, s: 0.2, lambda i, s: 0.0, lambda i, s: float("nan"))},
    })
    table = fa.verdicts(benchmark)
    polyp, ulcer = table.loc["polyp"], table.loc["ulcer"]
    assert polyp.ratio == pytest.approx(3.0, rel=0.01) and polyp.localises
    assert polyp["best other map"] == "gradient × input" and polyp["mass accuracy vs it"] == "ahead"
    assert polyp["AOPC vs random"] == "no difference shown"
    assert polyp["best other AOPC"] == "gradient × input" and polyp["AOPC vs best other"] == "behind"
    assert polyp.pointing == 1.0 and polyp["pointing vs chance"] == "ahead"
    assert ulcer.ratio == pytest.approx(1.0, rel=0.01) and not ulcer.localises
    assert ulcer["best other map"] == "centre prior" and ulcer["mass accuracy vs it"] == "behind"
    assert ulcer["AOPC vs random"] == "ahead"
    assert ulcer["pointing vs chance"] == "no difference shown"
    assert not fa.verdicts(benchmark, localises_at=3.5).loc["polyp", "localises"]
