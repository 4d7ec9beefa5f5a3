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
from nero_lite.explain import (
    GRADIENT_X_INPUT,
    LRP,
    concept_heatmaps,
    explain,
    fit_threshold,
    plot_report,
    randomize_head,
    region_share,
)
from nero_lite.models import create_model, extract
from nero_lite.relevance import output_relevance

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


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    """Random timm ResNet-18 with non-trivial batch-norm statistics whose merged biases vanish.

    Running statistics come from a few forward passes in train mode. The scales are
    random: timm initialises the last batch norm of every block to zero, which switches
    the residual branches off and would hide what the canonizer does. Each shift is set
    to mu*gamma/sigma so that the convolution with the batch norm merged in has no bias:
    biases absorb relevance by design of the LRP rules, so without them any conservation
    error is the canonizer's.
    """
    torch.manual_seed(0)
    model = create_model("resnet18", len(CLASSES)).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 64, 64) * 2 + 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.copy_(module.running_mean * module.weight / (module.running_var + module.eps).sqrt())
    return model.eval()


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
    captured = {}
    handle = layer.register_forward_hook(lambda module, args, out: captured.setdefault("layer", out))
    try:
        with composite.context(model) as modified, torch.enable_grad():
            x = x.clone().requires_grad_(True)
            out = modified(x)
            at_layer, at_input = torch.autograd.grad(
                out, [captured["layer"], x], grad_outputs=output_relevance(out.detach(), "predicted")
            )
    finally:
        handle.remove()
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
        # deviations from the class mean, largest magnitude first, signed
        assert np.all(np.diff(np.abs(report.deviations)) <= 1e-7)
        np.testing.assert_allclose(report.deviations, report.relevance[report.channels] - report.centroid_relevance[report.channels], rtol=1e-5, atol=1e-6)
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
    assert len(figure.axes) == 3 + 4 * 3
    matplotlib.pyplot.close(figure)


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
    captured = {}
    handles = [
        model.fc_norm.register_forward_hook(lambda m, a, out: captured.setdefault("head", out)),
        model.pos_drop.register_forward_hook(lambda m, a, out: captured.setdefault("tokens", out)),
    ]
    try:
        with vit_composite().context(model) as modified, torch.enable_grad():
            out = modified(x.clone().requires_grad_(True))
            head, tokens = torch.autograd.grad(
                out, [captured["head"], captured["tokens"]], grad_outputs=output_relevance(out.detach(), "predicted")
            )
    finally:
        for handle in handles:
            handle.remove()
    head, tokens = head.flatten(1).sum(1), tokens.flatten(1).sum(1)
    return float(((tokens - head).abs() / head.abs()).max())


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
