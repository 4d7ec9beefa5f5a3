"""Relevance at the head: conservation, agreement with zennit's Epsilon rule; relevance deeper in a network."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat, LayerMapComposite
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer

from nero_lite.canonizers import resnet_composite
from nero_lite.models import create_model
from nero_lite.relevance import head_relevance, layer_relevance, output_relevance

TARGETS = ["softmax", "predicted", 2]


@pytest.fixture(scope="module")
def head() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(6, 4).double()


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(32, 6, dtype=torch.float64).relu()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_conservation(head, features, target, epsilon):
    relevance, bias_relevance = head_relevance(features, head.weight, head.bias, target=target, epsilon=epsilon)
    z = head(features)
    o = output_relevance(z, target)
    expected = (o * z / (z + epsilon * z.sign())).sum(dim=1)
    torch.testing.assert_close(relevance.sum(dim=1) + bias_relevance, expected.detach())
    if epsilon == 0:  # all of the output relevance is conserved: 1 per sample
        torch.testing.assert_close(relevance.sum(dim=1) + bias_relevance, torch.ones(32, dtype=torch.float64))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_equals_zennit_epsilon_rule(head, features, target, epsilon):
    relevance, bias_relevance = head_relevance(features, head.weight, head.bias, target=target, epsilon=epsilon)
    o = output_relevance(head(features).detach(), target)
    composite = LayerMapComposite([(nn.Linear, Epsilon(epsilon=epsilon))])
    with Gradient(model=head, composite=composite) as attributor:
        z, zennit_relevance = attributor(features, o)
    torch.testing.assert_close(relevance, zennit_relevance)
    # zennit keeps the bias in the denominator but returns no bias relevance: it is the residual
    propagated = (o * z / (z + epsilon * z.sign())).sum(dim=1).detach()
    torch.testing.assert_close(bias_relevance, propagated - zennit_relevance.sum(dim=1))


def test_softmax_target_by_hand():
    # a = (1, 2), W = I, b = (0, 1): z = (1, 3), p = softmax(z);
    # R_1 = p_1 * 1/1, R_2 = p_2 * 2/3, R_b = p_2 * 1/3
    relevance, bias_relevance = head_relevance(
        torch.tensor([[1.0, 2.0]]), torch.eye(2), torch.tensor([0.0, 1.0]), target="softmax"
    )
    p = torch.softmax(torch.tensor([1.0, 3.0]), dim=0)
    torch.testing.assert_close(relevance, torch.stack([p[0], p[1] * 2 / 3]).view(1, 2))
    torch.testing.assert_close(bias_relevance, (p[1] / 3).view(1))


def test_exact_zero_logit_is_guarded():
    # z = (0, 1): with epsilon = 0 class 0 contributes no relevance instead of a division by zero
    relevance, bias_relevance = head_relevance(torch.tensor([[0.0, 1.0]]), torch.eye(2), torch.zeros(2))
    assert torch.isfinite(relevance).all() and torch.isfinite(bias_relevance).all()
    torch.testing.assert_close(relevance, torch.softmax(torch.tensor([0.0, 1.0]), 0)[1] * torch.tensor([[0.0, 1.0]]))


def test_bad_arguments_are_named(head, features):
    with pytest.raises(ValueError, match="target must be"):
        head_relevance(features, head.weight, head.bias, target="logit")
    with pytest.raises(ValueError, match="target class index"):
        head_relevance(features, head.weight, head.bias, target=4)
    with pytest.raises(ValueError, match="weight must have shape"):
        head_relevance(features, head.weight[:, :5], head.bias)
    with pytest.raises(ValueError, match="epsilon"):
        head_relevance(features, head.weight, head.bias, epsilon=-1.0)


def test_layer_relevance_at_head_input_equals_closed_form(head, features):
    model = nn.Sequential(nn.ReLU(), head)
    composite = LayerMapComposite([(nn.Linear, Epsilon(epsilon=0.0))])
    relevance = layer_relevance(model, features, model[0], composite, target="softmax")
    torch.testing.assert_close(relevance, head_relevance(features, head.weight, head.bias)[0])


def test_layer_relevance_in_resnet18_is_finite_and_shaped():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=3).eval()
    composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    relevance = layer_relevance(model, torch.randn(2, 3, 32, 32), model.layer3, composite, target=1)
    assert relevance.shape == (2, 256, 2, 2)
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    assert not any(p.grad is not None for p in model.parameters())


def test_layer_relevance_of_several_layers_comes_from_one_pass():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, 32).eval()
    composite = resnet_composite()
    x = torch.randn(2, 3, 32, 32)
    layer3, layer4, pixels = layer_relevance(model, x, [model.layer3, model.layer4, "input"], composite, target=1)
    torch.testing.assert_close(layer3, layer_relevance(model, x, model.layer3, composite, target=1))
    torch.testing.assert_close(pixels, layer_relevance(model, x, "input", composite, target=1))
    assert layer4.shape == (2, 512, 1, 1) and pixels.shape == x.shape
    with pytest.raises(ValueError, match="'output'"):
        layer_relevance(model, x, [model.layer3, "output"], composite)


def test_centroid_scores_by_hand():
    from nero_lite.relevance import centroid_scores

    train = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    labels = torch.tensor([0, 0, 1])  # centroids (1, 0) and (10, 10)
    (scores,) = centroid_scores(train, labels, torch.tensor([[1.0, 3.0], [9.0, 9.0]]))
    torch.testing.assert_close(scores, torch.tensor([-3.0, -2.0]))  # L1 to the nearest centroid, negated
