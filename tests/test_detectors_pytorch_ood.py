"""Agreement with pytorch-ood 0.4.0, an independent implementation, on the same random features.

pytorch-ood returns outlier scores (higher = more OOD): its scores are negated here.
NECO and NERO are not in pytorch-ood.
"""

import pytest
import torch
from pytorch_ood import detector as ood
from torch import nn

from nero_lite import detectors
from nero_lite.outputs import Outputs

N_TRAIN, D, C = 300, 16, 4


@pytest.fixture(scope="module")
def head() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(D, C)


@pytest.fixture(scope="module")
def data(head) -> tuple[Outputs, Outputs]:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(N_TRAIN + 100) % C
    centres = 2 * torch.randn(C, D, generator=g)
    with torch.no_grad():  # a head that classifies the training data reasonably well
        head.weight.copy_(centres / D)
        features = (centres[labels] + torch.randn(len(labels), D, generator=g)).relu()
        outputs = Outputs(features, head(features), labels, head.weight.clone(), head.bias.clone())
    return outputs.subset(slice(0, N_TRAIN)), outputs.subset(slice(N_TRAIN, None))


def ours(name: str, train: Outputs, test: Outputs, **params) -> torch.Tensor:
    return detectors.create(name, **params).fit(train).score(test)


def maps(features: torch.Tensor) -> torch.Tensor:
    """Pooled features as the 1 x 1 feature maps pytorch-ood's ReAct and ASH expect."""
    return features[:, :, None, None]


def test_logit_detectors_agree_exactly(data):
    train, test = data
    z = test.logits
    torch.testing.assert_close(ours("msp", train, test, temperature=2.0), -ood.MaxSoftmax.score(z, t=2.0))
    torch.testing.assert_close(ours("maxlogit", train, test), -ood.MaxLogit.score(z))
    torch.testing.assert_close(ours("energy", train, test, temperature=2.0), -ood.EnergyBased.score(z, t=2.0))
    # pytorch-ood clips probabilities at 1e-7 before the log: equal up to that clip
    torch.testing.assert_close(ours("entropy", train, test), -ood.Entropy.score(z), rtol=0, atol=1e-5)


def test_gradnorm_agrees_with_autograd_route(data, head):
    train, test = data
    theirs = ood.GradNorm(head, param_filter=lambda name: name == "weight", temperature=2.0).predict(test.features)
    torch.testing.assert_close(ours("gradnorm", train, test, temperature=2.0), -theirs)


def test_odin_agrees():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    images = torch.randn(8, 3, 8, 8)
    std = [0.229, 0.224, 0.225]
    for temperature, epsilon in [(1000.0, 0.0014), (100.0, 0.0005)]:
        theirs = ood.ODIN(model, eps=epsilon, temperature=temperature, norm_std=std).predict(images)
        mine = detectors.create("odin", temperature=temperature, epsilon=epsilon, norm_std=std)
        torch.testing.assert_close(mine.score_images(model, images), -theirs)


def test_knn_agrees(data):
    train, test = data
    theirs = ood.KNN(None, k=10).fit_features(train.features, train.labels).predict_features(test.features)
    torch.testing.assert_close(ours("knn", train, test, k=10), -theirs.float())


def test_react_agrees(data, head):
    train, test = data
    react = ood.ReAct(None, lambda x: head(x.flatten(1)), percentile=0.9)
    theirs = react.fit_feature_maps(maps(train.features), train.labels).predict_feature_maps(maps(test.features))
    torch.testing.assert_close(ours("react", train, test, percentile=90), -theirs)


def test_ash_agrees(data, head):
    train, test = data
    ash = ood.ASH(None, lambda x: head(x.flatten(1)), variant="ash-s", percentile=0.9)
    torch.testing.assert_close(ours("ash", train, test, percentile=90), -ash.predict_feature_maps(maps(test.features)))


def test_she_agrees(data, head):
    train, test = data
    theirs = ood.SHE(None, head).fit_features(train.features, train.labels).predict_features(test.features)
    torch.testing.assert_close(ours("she", train, test), -theirs)


def test_vim_agrees(data):
    train, test = data
    vim = ood.ViM(None, d=8, w=train.weight, b=train.bias).fit_features(train.features, train.labels)
    # same subspace and alpha; pytorch-ood eigendecomposes in float32, we in float64
    theirs = vim.predict_features(test.features)
    torch.testing.assert_close(ours("vim", train, test, dim=8), -theirs, rtol=1e-4, atol=1e-4)


def test_mahalanobis_agrees_up_to_a_constant_factor(data):
    train, test = data
    theirs = ood.Mahalanobis(None).fit_features(train.features, train.labels).predict_features(test.features)
    # pytorch-ood: half the distance under the unnormalised scatter matrix (N times our covariance)
    # plus a 1e-6 ridge, so its score is -(ours) / (2 N) up to the ridge
    torch.testing.assert_close(ours("mahalanobis", train, test), -2 * N_TRAIN * theirs, rtol=1e-4, atol=0)
