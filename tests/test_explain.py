"""Explanations: relevance conservation of our timm canonizers, CRP concept maps, ViT fallback, sanity check."""

import copy
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from nero_lite import detectors
from nero_lite.canonizers import TimmResNetCanonizer, resnet_composite, vit_composite
from nero_lite.data import ImageSet, to_input
from nero_lite.attribution import (
    GRADIENT_X_INPUT,
    LRP,
    channel_relevance,
    concept_heatmaps,
    concept_layer,
    conditional_heatmaps,
    default_composite,
    lrp_maps,
    score_gradient_maps,
    score_maps,
    token_relevance,
)
from nero_lite.explain import explain, fit_threshold, median_index
from nero_lite.extraction import extract
from nero_lite.models import create_model
from nero_lite.outputs import Outputs
from nero_lite.plots import plot_report, side_by_side
from nero_lite.relevance import layer_relevance, output_relevance
from nero_lite.sanity import randomize_head, region_share

matplotlib.use("Agg")

CLASSES = ["a", "b", "c"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (40, 3, 64, 64), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def train(images) -> ImageSet:
    return ImageSet(images[:32], torch.arange(32) % 3, CLASSES)


def bias_free_resnet(arch: str) -> torch.nn.Module:
    """Random timm ResNet with non-trivial batch-norm statistics whose merged biases vanish.

    Running statistics come from a few forward passes in train mode. The scales are
    random: timm initialises the last batch norm of every block to zero, which switches
    the residual branches off and would hide what the canonizer does. Each shift is set
    to mu*gamma/sigma so that the convolution with the batch norm merged in has no bias:
    biases absorb relevance by design of the LRP rules, so without them any conservation
    error is the canonizer's.
    """
    torch.manual_seed(0)
    model = create_model(arch, len(CLASSES)).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 64, 64) * 2 + 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.copy_(module.running_mean * module.weight / (module.running_var + module.eps).sqrt())
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return bias_free_resnet("resnet18")


@pytest.fixture(scope="module")
def resnet_d() -> torch.nn.Module:
    """timm's ResNet-18-D: a deep stem and average pooling before each 1×1 shortcut convolution."""
    return bias_free_resnet("resnet18d")


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit", len(CLASSES)).eval()


def fitted(model, train):
    outputs = extract(model, train, "cpu", progress=False)
    detector = detectors.create("nero", pca_fraction=16 / outputs.features.shape[1]).fit(outputs)
    return detector, outputs


def relevance_sums(model, x, composite, layer):
    """Sum of the relevance at the output of ``layer`` and at the input, predicted class, per sample."""
    at_layer, at_input = layer_relevance(model, x, [layer, "input"], composite)
    return at_layer.flatten(1).sum(1), at_input.flatten(1).sum(1)


def relative_error(model, x, composite, layer):
    at_layer, at_input = relevance_sums(model, x, composite, layer)
    return float(((at_input - at_layer).abs() / at_layer.abs()).max())


def test_timm_resnet_canonizer_conserves_relevance(resnet, images):
    x = to_input(images[:2])
    # relevance at the head input (after the epsilon rule of the head) vs at the pixels
    ours = relative_error(resnet, x, EpsilonPlusFlat(canonizers=[TimmResNetCanonizer()]), resnet.global_pool)
    assert ours < 1e-3
    # zennit's torchvision canonizer only merges the batch norms: timm's in-place `x += shortcut`
    # hands the full relevance to both branches, doubling it in each of the 8 blocks (~2^8)
    torchvision = relative_error(resnet, x, EpsilonPlusFlat(canonizers=[ResNetCanonizer()]), resnet.global_pool)
    plain = relative_error(resnet, x, EpsilonPlusFlat(), resnet.global_pool)
    assert torchvision > 10 and plain > 10


def test_timm_resnet_canonizer_conserves_through_the_average_pool_shortcut(resnet_d, images):
    x = to_input(images[:2])
    assert isinstance(resnet_d.layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert relative_error(resnet_d, x, resnet_composite(), resnet_d.global_pool) < 1e-3
    # without the canonizer the in-place residual sums double the relevance, as for ResNet-18
    assert relative_error(resnet_d, x, EpsilonPlusFlat(), resnet_d.global_pool) > 10


def test_bias_free_zplus_conserves_with_biases(resnet, images):
    biased = copy.deepcopy(resnet)
    with torch.no_grad():
        for module in biased.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.uniform_(-0.5, 0.5)
    x = to_input(images[:2])
    # zennit's ZPlus lets the positive merged biases absorb relevance; the bias-free z+ rule does not
    assert relative_error(biased, x, resnet_composite(), biased.global_pool) < 1e-3
    assert relative_error(biased, x, EpsilonPlusFlat(canonizers=[TimmResNetCanonizer()]), biased.global_pool) > 1e-2


def test_canonizer_leaves_the_model_unchanged(resnet, images):
    x = to_input(images[:2])
    with torch.no_grad():
        before = resnet(x)
        with EpsilonPlusFlat(canonizers=[TimmResNetCanonizer()]).context(resnet) as modified:
            during = modified(x)
        after = resnet(x)
    torch.testing.assert_close(during, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, before)
    assert "canonizer_sum" not in dict(resnet.layer1[0].named_children())


def test_resnet_report(resnet, images, train):
    detector, train_outputs = fitted(resnet, train)
    test = ImageSet(images[32:], torch.arange(8) % 3, CLASSES)
    threshold = fit_threshold(detector, extract(resnet, test, "cpu", progress=False))
    reports = explain(
        resnet, images[32:34], detector, threshold=threshold, train_outputs=train_outputs, train_images=train,
        k=4, n_references=2, device="cpu",
    )
    relevance = detector.relevance(extract(resnet, to_input(images[32:34]), "cpu", progress=False))[0]
    for report, r in zip(reports, relevance):
        assert report.method == LRP and report.layer == "layer4"
        assert report.heatmap.shape == (64, 64) and report.concept_heatmaps.shape == (4, 64, 64)
        assert np.isfinite(report.heatmap).all() and np.isfinite(report.concept_heatmaps).all()
        assert report.conservation == pytest.approx(1, abs=1e-3)
        assert report.is_ood == (report.score < threshold)
        # the score taken apart: contributions sum to the distance; the largest ones are listed, signed
        assert report.score == pytest.approx(-(report.distance + report.bias_term) * report.norm_factor, rel=1e-5)
        assert report.neuron_contributions.sum() == pytest.approx(report.distance, rel=1e-5)
        assert report.rank == "contribution" and np.all(np.diff(report.contributions) <= 1e-7)
        assert report.contributions[0] == pytest.approx(report.neuron_contributions.max())
        np.testing.assert_allclose(report.deviations, report.relevance[report.channels] - report.centroid_relevance[report.channels], rtol=1e-5, atol=1e-6)
        # the score map carries the distance to the pixels
        assert report.score_map.shape == (64, 64)
        assert report.score_conservation == pytest.approx(1, abs=1e-3)
        assert report.score_map.sum() == pytest.approx(report.distance, rel=1e-3)
        # CRP: the map of channel j carries NERO's neuron relevance R_j, and the k maps together
        # carry the layer relevance restricted to those channels
        sums = report.concept_heatmaps.sum(axis=(1, 2))
        np.testing.assert_allclose(sums, r[report.channels].numpy(), rtol=1e-3, atol=1e-4)
        assert sums.sum() == pytest.approx(float(r[report.channels].sum()), rel=1e-3, abs=4e-4)
        # relevance maximization: references are the training images of highest share R_j / sum |R|
        train_relevance = detector.relevance(train_outputs)[0]
        share = train_relevance / train_relevance.abs().sum(dim=1, keepdim=True)
        for reference in report.references:
            top = share[:, reference.channel].topk(2).indices.numpy()
            np.testing.assert_array_equal(reference.indices, top)
            assert reference.images.shape == (2, 3, 64, 64) and all(p.shape == (32, 32, 3) for p in reference.patches())
        assert [ref.channel for ref in report.references] == report.channels.tolist()
    figure = plot_report(reports[0], max_references=2)
    assert len(figure.axes) == 4 + 4 * 3
    matplotlib.pyplot.close(figure)
    # ranking by the size of the deviation instead: largest |Delta| first
    by_deviation = explain(resnet, images[32:34], detector, threshold=threshold, k=4, rank="deviation", device="cpu")
    for report in by_deviation:
        assert report.rank == "deviation" and np.all(np.diff(np.abs(report.deviations)) <= 1e-7)
        assert np.abs(report.deviations)[0] == pytest.approx(np.abs(report.relevance - report.centroid_relevance).max())
    with pytest.raises(ValueError, match="rank"):
        explain(resnet, images[32:33], detector, threshold=threshold, rank="size", device="cpu")


def test_concept_heatmaps_for_chosen_channels(resnet, train):
    detector, outputs = fitted(resnet, train)
    channels = torch.tensor([[0, 7, 300], [511, 7, 2]])
    maps = concept_heatmaps(resnet, to_input(train.images[:2]), channels)
    assert maps.shape == (2, 3, 64, 64)
    expected = detector.relevance(outputs.subset(slice(0, 2)))[0].gather(1, channels)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), expected, rtol=1e-3, atol=1e-4)


def test_threshold_accepts_95_percent(resnet, images, train):
    detector, train_outputs = fitted(resnet, train)
    threshold = fit_threshold(detector, train_outputs)
    assert (detector.score(train_outputs) >= threshold).float().mean() >= 0.95


def test_vit_lrp_is_finite_and_conserves_at_the_tokens(vit, images):
    x = to_input(images[:2])
    # all the relevance of the head inputs reaches the token embeddings (class token included)
    assert relative_error_tokens(vit, x) < 1e-2
    at_head, at_pixels = relevance_sums(vit, x, vit_composite(), vit.fc_norm)
    assert torch.isfinite(at_pixels).all()
    # zennit's CNN composite has no rule for LayerNorm and attention: the relevance blows up to NaN
    _, plain = relevance_sums(vit, x, EpsilonPlusFlat(), vit.fc_norm)
    assert not torch.isfinite(plain).all()


def relative_error_tokens(model, x):
    """Relative gap between the relevance at the head input and at the token embeddings (after the position embedding)."""
    head, tokens = token_relevance(model, x)
    return float(((tokens.sum(1) - head).abs() / head.abs()).max())


def test_vit_report_and_named_fallback(vit, images, train):
    detector, train_outputs = fitted(vit, train)
    report = explain(vit, images[32:33], detector, threshold=0.0, train_outputs=train_outputs, k=3, device="cpu")[0]
    assert report.method == LRP and report.layer == "fc_norm"
    assert np.isfinite(report.heatmap).all() and np.isfinite(report.concept_heatmaps).all()
    # a composite that gives NaN on the ViT: the report says it fell back, its maps are finite
    with pytest.warns(RuntimeWarning, match="falling back"):
        fallback = explain(
            vit, images[32:33], detector, threshold=0.0, train_outputs=train_outputs, k=3, device="cpu",
            composite=EpsilonPlusFlat(),
        )[0]
    assert fallback.method == GRADIENT_X_INPUT == "gradient_x_input (fallback)"
    assert np.isfinite(fallback.heatmap).all() and np.isfinite(fallback.concept_heatmaps).all()


def test_randomized_head_changes_the_explanation(resnet, images, train):
    """Model-randomization sanity check (Adebayo et al., NeurIPS 2018) at the last layer."""
    detector, train_outputs = fitted(resnet, train)
    randomized = randomize_head(resnet, seed=1)
    assert not torch.equal(randomized.fc.weight, resnet.fc.weight)
    random_detector, random_outputs = fitted(randomized, train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        original = explain(resnet, images[32:34], detector, threshold=0.0, train_outputs=train_outputs, k=2, device="cpu")
        changed = explain(
            randomized, images[32:34], random_detector, threshold=0.0, train_outputs=random_outputs, k=2, device="cpu"
        )
    for a, b in zip(original, changed):
        correlation = np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1]
        assert correlation < 0.9


def test_region_share_of_hand_made_maps():
    region = np.zeros((4, 4), dtype=bool)
    region[2:, :2] = True
    maps = np.ones((2, 4, 4))
    maps[1, 2:, :2] = -7.0  # negative relevance counts by magnitude
    share = region_share(maps, region)
    assert share[0] == pytest.approx(4 / 16) and share[1] == pytest.approx(28 / 40)
    assert region_share(np.zeros((4, 4)), region) == 0.0
    with pytest.raises(ValueError, match="region"):
        region_share(maps, region[:2])


@pytest.mark.parametrize("arch", ["resnet18", "resnet18d"])
def test_score_maps_carry_the_distance_to_the_pixels(arch, resnet, resnet_d, images, train):
    model = {"resnet18": resnet, "resnet18d": resnet_d}[arch]
    detector, _ = fitted(model, train)
    maps = score_maps(model, images[32:], detector, device="cpu", batch_size=3)
    distance = detector.decompose(extract(model, to_input(images[32:]), "cpu", progress=False)).distance
    assert maps.shape == (8, 64, 64)
    # conserved, up to the contributions of channels that are zero everywhere (4-6 % of them here;
    # the average pool has no position to give their relevance to) and of dead units further down
    error = (maps.sum(dim=(1, 2)) - distance).abs() / distance
    assert float(error.median()) < 1e-3 and float(error.max()) < 2e-2
    # batching changes nothing
    torch.testing.assert_close(score_maps(model, images[32:34], detector, device="cpu"), maps[:2], rtol=1e-4, atol=1e-7)


def test_score_gradient_maps_sum_to_the_derivative_along_the_input(resnet, images, train):
    """Gradient × input summed over the pixels is d/dt S(t x) at t = 1: checked by finite differences."""
    detector, _ = fitted(resnet, train)
    maps = score_gradient_maps(resnet, images[32:35], detector, device="cpu")
    x = to_input(images[32:35]).double()
    model = copy.deepcopy(resnet).double()

    def outputs(inputs, labels=None):
        with torch.no_grad():
            features = model.forward_head(model.forward_features(inputs), pre_logits=True)
        return Outputs(features, model.fc(features), labels, model.fc.weight, model.fc.bias)

    d64 = detectors.create("nero", pca_fraction=detector.pca_fraction)
    d64.fit(outputs(to_input(train.images).double(), train.labels))
    step = 1e-5

    def outlier(scale):
        return -d64.score(outputs(x * scale))

    finite = (outlier(1 + step) - outlier(1 - step)) / (2 * step)
    torch.testing.assert_close(maps.sum(dim=(1, 2)).double(), finite, rtol=2e-3, atol=1e-5)


def test_lrp_maps_are_the_report_heatmap(resnet, images, train):
    detector, _ = fitted(resnet, train)
    reports = explain(resnet, images[32:34], detector, threshold=0.0, k=1, device="cpu")
    maps = lrp_maps(resnet, images[32:34], device="cpu")
    np.testing.assert_allclose(maps.numpy(), np.stack([r.heatmap for r in reports]), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("arch", ["resnet_d", "vit"])
def test_a_reports_maps_from_one_forward_pass_are_crps(arch, request, images, train):
    """Two routes: the report's backward passes from one forward pass, and zennit-crp's
    CondAttribution (a forward and backward pass per condition) for the same conditions."""
    model = request.getfixturevalue(arch)
    detector, _ = fitted(model, train)
    x = images[32:35]
    reports = explain(model, x, detector, threshold=0.0, k=3, device="cpu", batch_size=2)
    channels = torch.tensor(np.stack([r.channels for r in reports]))
    crp = concept_heatmaps(model, to_input(x), channels)
    np.testing.assert_allclose(np.stack([r.concept_heatmaps for r in reports]), crp.numpy(), rtol=1e-4, atol=1e-6)
    inputs = to_input(x)
    with torch.no_grad():
        predicted = output_relevance(model(inputs), "predicted")
    width = detector.relevance(extract(model, inputs, "cpu", progress=False))[0].shape[1]
    full = conditional_heatmaps(model, inputs, [list(range(width))] * len(x), predicted, layer=concept_layer(model),
                                composite=default_composite(model))
    np.testing.assert_allclose(np.stack([r.heatmap for r in reports]), full.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.stack([r.score_map for r in reports]), score_maps(model, x, detector, device="cpu").numpy(),
                               rtol=1e-4, atol=1e-7)
    # the scores come from the maps' forward pass (the rules change only the backward pass)
    plain = detector.score(extract(model, inputs, "cpu", progress=False))
    np.testing.assert_allclose([r.score for r in reports], plain.numpy(), rtol=1e-4)


def test_vit_score_maps_are_finite(vit, images, train):
    detector, _ = fitted(vit, train)
    maps = score_maps(vit, images[32:34], detector, device="cpu")
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_single_branch_zplus_equals_the_full_rule_on_resnets(resnet_d, images):
    """Every convolution of a ResNet but the first reads non-negative inputs: the x⁻w⁻ branch adds nothing."""
    from zennit.composites import LAYER_MAP_BASE, SpecialFirstLayerMapComposite
    from zennit.rules import Epsilon, Flat
    from zennit.types import Convolution, Linear

    from nero_lite.canonizers import BiasFreeZPlus

    full = SpecialFirstLayerMapComposite(
        LAYER_MAP_BASE + [(Convolution, BiasFreeZPlus()), (torch.nn.Linear, Epsilon(epsilon=1e-6))],
        [(Linear, Flat())], canonizers=[TimmResNetCanonizer()],
    )
    expected = lrp_maps(resnet_d, images[:3], composite=full, device="cpu")
    torch.testing.assert_close(lrp_maps(resnet_d, images[:3], device="cpu"), expected, rtol=1e-5, atol=1e-8)


def test_token_relevance_is_one_pass_of_layer_relevance(vit, resnet, images):
    x = to_input(images[:2])
    head, tokens = token_relevance(vit, x)
    at_head, at_tokens = layer_relevance(vit, x, [vit.fc_norm, vit.pos_drop], vit_composite())
    assert tokens.shape == (2, at_tokens.shape[1]) and head.shape == (2,)
    torch.testing.assert_close(head, at_head.flatten(1).sum(1))
    torch.testing.assert_close(tokens, at_tokens.sum(2))
    # the softmax target moves relevance; a fixed class gives the same split as layer_relevance
    _, tokens_1 = token_relevance(vit, x, target=1)
    torch.testing.assert_close(tokens_1, layer_relevance(vit, x, vit.pos_drop, vit_composite(), target=1).sum(2))
    with pytest.raises(ValueError, match="VisionTransformer"):
        token_relevance(resnet, x)


def test_median_index_picks_the_median_of_the_selected_scores():
    scores = torch.tensor([5.0, -1.0, 3.0, 9.0, 0.0, 7.0])
    # selected 5, -1, 9, 0 (indices 0, 1, 3, 4): sorted -1, 0, 5, 9, the upper median 5 is index 0
    assert median_index(scores, torch.tensor([True, True, False, True, True, False])) == 0
    # selected 3, 9, 7 (indices 2, 3, 5): the median 7 is index 5
    assert median_index(scores, torch.tensor([False, False, True, True, False, True])) == 5
    assert median_index(scores.numpy(), scores.numpy() > 8) == 3
    with pytest.raises(ValueError, match="no sample"):
        median_index(scores, scores > 100)


def test_centroid_relevance_is_the_reference_of_the_deviation(resnet, train):
    detector, outputs = fitted(resnet, train)
    parts = detector.decompose(outputs)
    relevance = detector.relevance(outputs)[0]
    torch.testing.assert_close(detector.centroid_relevance(parts.centroid), relevance - parts.deviation)
    every = detector.centroid_relevance()
    assert every.shape == (3, relevance.shape[1])
    # one centroid per class: the class's mean training relevance
    torch.testing.assert_close(every[1], relevance[outputs.labels == 1].mean(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(detectors.NotFittedError):
        detectors.create("nero").centroid_relevance()


def test_side_by_side_draws_one_row_per_report(resnet, images, train):
    detector, _ = fitted(resnet, train)
    reports = explain(resnet, images[32:34], detector, threshold=0.0, k=2, device="cpu")
    figure = side_by_side(reports, ["first", "second"], title="two reports")
    assert len(figure.axes) == 2 * (2 + 3) and figure._suptitle.get_text() == "two reports"
    assert figure.axes[0].get_title().startswith("first\n") and figure.axes[2].get_title().startswith("input map")
    matplotlib.pyplot.close(figure)


def test_channel_relevance_at_layer4_is_nero_relevance_and_conserved_to_layer3(resnet, images, train):
    detector, outputs = fitted(resnet, train)
    at3, at4 = channel_relevance(resnet, train.images[:5], [resnet.layer3, resnet.layer4], device="cpu", batch_size=2)
    assert at3.shape == (5, 256) and at4.shape == (5, 512)
    # CRP's channel relevance at layer4 (softmax target) is NERO's neuron relevance R_j
    expected = detector.relevance(outputs.subset(slice(0, 5)))[0]
    torch.testing.assert_close(at4, expected, rtol=1e-3, atol=1e-4)
    # the bias-free model conserves: layer3 holds what layer4 holds
    torch.testing.assert_close(at3.sum(1), at4.sum(1), rtol=1e-3, atol=1e-5)
    (again,) = channel_relevance(resnet, train.images[:5], [resnet.layer3], device="cpu")
    torch.testing.assert_close(again, at3, rtol=1e-4, atol=1e-7)


def test_map_agreement_by_hand():
    from types import SimpleNamespace

    from nero_lite import sanity

    base = np.arange(16.0).reshape(4, 4)
    report = SimpleNamespace(score_map=base, heatmap=-2 * base + 3,
                             concept_heatmaps=np.stack([base, base * 5 + 1, base.T]))
    row = sanity.map_agreement([report]).iloc[0]
    assert row["score vs input map"] == pytest.approx(-1.0)
    rho = np.corrcoef(base.ravel(), base.T.ravel())[0, 1]   # base vs its transpose
    assert row["between concept maps"] == pytest.approx((1.0 + rho + rho) / 3)
    assert row["concept maps"] == 3
    single = SimpleNamespace(score_map=base, heatmap=base, concept_heatmaps=base[None])
    assert np.isnan(sanity.map_agreement([single]).iloc[0]["between concept maps"])
