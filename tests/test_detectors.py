"""Detectors: the shared contract, input validation, and each baseline on a hand-computed case."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from nero_lite import detectors
from nero_lite.detectors import NotFittedError, Paper
from nero_lite.outputs import Outputs

NAMES = "msp maxlogit energy entropy odin mahalanobis vim neco react gradnorm knn ash she nero".split()
# hyperparameters that fit the small random data below (D = 8, N = 120)
SMALL = {"neco": {"dim": 4}, "knn": {"k": 5}}


def head_outputs(features, weight, bias=None, labels=None) -> Outputs:
    """An Outputs record whose logits are computed from the features and the head (float64)."""
    features = torch.as_tensor(features, dtype=torch.float64)
    weight = torch.as_tensor(weight, dtype=torch.float64)
    bias = torch.zeros(len(weight), dtype=torch.float64) if bias is None else torch.as_tensor(bias, dtype=torch.float64)
    labels = None if labels is None else torch.as_tensor(labels)
    return Outputs(features, features @ weight.T + bias, labels, weight, bias)


def random_outputs(n: int = 170, d: int = 8, c: int = 3, seed: int = 0) -> Outputs:
    """ReLU features around class centres, with a head aligned with the centres (float32)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    centres = 3 * torch.randn(c, d, generator=g)
    features = (centres[labels] + torch.randn(n, d, generator=g)).relu()
    weight = centres.relu() / d
    bias = 0.1 * torch.randn(c, generator=g)
    return Outputs(features, features @ weight.T + bias, labels, weight, bias)


def split(outputs: Outputs, n_train: int = 120) -> tuple[Outputs, Outputs]:
    return outputs.subset(slice(0, n_train)), outputs.subset(slice(n_train, None))


IDENTITY = [[1.0, 0.0], [0.0, 1.0]]


# -- registry and contract --------------------------------------------------------


def test_registry_lists_every_method():
    assert detectors.available() == NAMES
    assert isinstance(detectors.create("knn", k=7), detectors.KNNDetector)
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        detectors.create("nope")


def test_fit_each_fits_what_it_can_and_keeps_why_the_others_were_skipped():
    train = random_outputs(n=20)
    created = {"msp": detectors.create("msp"), "knn": detectors.create("knn", k=50), "nero": detectors.create("nero")}
    fitted = detectors.fit_each(created, train, progress=False)
    assert list(fitted.detectors) == ["msp", "nero"] and fitted.detectors["nero"] is created["nero"]
    assert list(fitted.skipped) == ["knn"] and "50" in fitted.skipped["knn"] and "\n" not in fitted.skipped["knn"]
    assert set(fitted.seconds) == {"msp", "nero"} and all(s >= 0 for s in fitted.seconds.values())
    with pytest.raises(ValueError, match="50"):
        detectors.fit_each({"knn": detectors.create("knn", k=50)}, train, skip_failing=False, progress=False)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    train, test = split(random_outputs())
    detector = detectors.create(name, **SMALL.get(name, {}))
    assert not [key for key in vars(detector) if key.endswith("_")], "learned attributes before fit"
    if detector.requires_fit:
        with pytest.raises(NotFittedError, match="fit"):
            detector.score(test)
    assert detector.fit(train) is detector
    scores = detector.score(test)
    assert scores.shape == (len(test),) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    # numpy in: the same record built from arrays gives the same scores
    as_numpy = Outputs(**{f: getattr(test, f).numpy() for f in ("features", "logits", "labels", "weight", "bias")})
    torch.testing.assert_close(detector.score(as_numpy), scores)
    # a chapter prints a table of methods from the class data and the docstrings
    assert isinstance(detector.paper, Paper) and str(detector.paper).endswith(str(detector.paper.year))
    assert ".. math::" in type(detector).__doc__ and str(detector.paper.year) in type(detector).__doc__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    train, test = split(random_outputs())
    cpu = detectors.create(name, **SMALL.get(name, {})).fit(train).score(test)
    cuda = detectors.create(name, **SMALL.get(name, {})).fit(train.to("cuda")).score(test.to("cuda"))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_repr_shows_only_changed_parameters():
    assert repr(detectors.create("msp")) == "MSPDetector()"
    nero = detectors.create("nero", k_fraction=0.25, use_pca=False)
    assert repr(nero) == "NeroDetector(k_fraction=0.25, use_pca=False)"


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["features", "logits"])
def test_nan_or_inf_is_rejected_at_fit_and_score(field):
    train, test = split(random_outputs())
    getattr(test, field)[0, 0] = float("nan")
    getattr(train, field)[1, 1] = float("inf")
    with pytest.raises(ValueError, match=f"outputs.{field} contains NaN or inf"):
        detectors.create("msp").score(test)
    with pytest.raises(ValueError, match=f"train.{field} contains NaN or inf"):
        detectors.create("mahalanobis").fit(train)


def test_feature_dimension_must_match_fit():
    train, _ = split(random_outputs(d=8))
    _, test = split(random_outputs(d=6))
    with pytest.raises(ValueError, match="D=6 columns, but KNNDetector was fitted with D=8"):
        detectors.create("knn", k=5).fit(train).score(test)


@pytest.mark.parametrize("name", ["mahalanobis", "she", "nero"])
def test_class_without_training_samples_is_rejected(name):
    train, _ = split(random_outputs(c=3))
    train.labels[train.labels == 2] = -1  # class 2 now has no labelled sample
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        detectors.create(name).fit(train)


def test_only_outputs_records_are_accepted():
    with pytest.raises(TypeError, match="Outputs record"):
        detectors.create("msp").score(np.zeros((3, 2)))


def test_hyperparameters_are_checked_at_use():
    train, test = split(random_outputs())
    for k in (500, 0, 2.5, True):
        with pytest.raises(ValueError, match="k must be a whole number between 1 and the number of training samples"):
            detectors.create("knn", k=k).fit(train)
    assert detectors.create("knn", k=np.int64(3)).fit(train).score(test).isfinite().all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        detectors.create("energy", temperature=0).score(test)
    with pytest.raises(ValueError, match="dim must be between 1 and D - 1"):
        detectors.create("vim", dim=8).fit(train)
    with pytest.raises(ValueError, match="percentile must be in"):
        detectors.create("react", percentile=100).fit(train)


def test_ash_scores_all_zero_features_as_the_energy_of_the_bias():
    zero = head_outputs([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], [[1.0, 0, 0, 0], [0, 1.0, 0, 0]], bias=[0.5, -0.5])
    scores = detectors.create("ash", percentile=50).score(zero)
    # nothing to scale in the first sample: logits = bias; the second keeps a_0 = 1, scaled by exp(1/1)
    torch.testing.assert_close(scores, torch.tensor([math.log(math.exp(0.5) + math.exp(-0.5)),
                                                     math.log(math.exp(math.e + 0.5) + math.exp(-0.5))], dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_float64_features_with_a_float32_head_are_scored_in_float64(name):
    outputs = random_outputs()
    wide = Outputs(outputs.features.double(), outputs.logits, outputs.labels, outputs.weight, outputs.bias)
    assert {wide.logits.dtype, wide.weight.dtype, wide.bias.dtype} == {torch.float64}
    train, test = split(wide)
    scores = detectors.create(name, **SMALL.get(name, {})).fit(train).score(test)
    assert scores.dtype == torch.float64 and scores.isfinite().all()


@pytest.mark.parametrize("labels", [[0.0, 1.5, 2.0], [0.0, float("nan"), 1.0], [0.0, float("inf"), 1.0]])
def test_labels_must_be_whole_numbers(labels):
    with pytest.raises(ValueError, match="whole class indices"):
        Outputs(torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor(labels), torch.eye(2), torch.zeros(2))
    assert Outputs(torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor([0.0, -1.0, 1.0]), torch.eye(2), torch.zeros(2)).labels.tolist() == [0, -1, 1]


# -- hand-computed cases: logits (ln 3, 0), so softmax = (3/4, 1/4) ------------------

LN3 = head_outputs([[math.log(3), 0.0]], IDENTITY)


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("msp", {}, 0.75),
        ("maxlogit", {}, math.log(3)),
        ("energy", {}, math.log(4)),
        ("energy", {"temperature": 2.0}, 2 * math.log(math.sqrt(3) + 1)),
        ("entropy", {}, 0.75 * math.log(0.75) + 0.25 * math.log(0.25)),
        ("odin", {}, 1 / (1 + 3 ** (-1 / 1000))),  # no perturbation: MSP at T = 1000
        # (|3/4 - 1/2| + |1/4 - 1/2|) * ||a||_1
        ("gradnorm", {}, 0.5 * math.log(3)),
        # T = 2: p = (sqrt3, 1) / (sqrt3 + 1); (1/T) * 2 |p_0 - 1/2| * ||a||_1
        ("gradnorm", {"temperature": 2.0}, (math.sqrt(3) / (math.sqrt(3) + 1) - 0.5) * math.log(3)),
    ],
)
def test_logit_baselines_by_hand(name, params, expected):
    assert detectors.create(name, **params).score(LN3).item() == pytest.approx(expected, rel=1e-12)


def test_gradnorm_closed_form_equals_autograd():
    outputs = random_outputs(n=12, d=5, c=4)
    head = nn.Linear(5, 4).double()
    with torch.no_grad():
        head.weight.copy_(outputs.weight)
        head.bias.copy_(outputs.bias)
    features = outputs.features.double()
    for temperature in (1.0, 2.5):
        expected = []
        for a in features:  # one backward pass per sample: the slow, obvious route
            log_p = torch.log_softmax(head(a) / temperature, dim=0)
            uniform = torch.full_like(log_p, 1 / 4)
            kl = (uniform * (uniform.log() - log_p)).sum()
            (grad_weight,) = torch.autograd.grad(kl, head.weight)
            expected.append(grad_weight.abs().sum())
        record = Outputs(features, head(features).detach(), None, outputs.weight.double(), outputs.bias.double())
        scores = detectors.create("gradnorm", temperature=temperature).score(record)
        torch.testing.assert_close(scores, torch.stack(expected), rtol=1e-12, atol=0)


def test_odin_perturbation_by_hand():
    # f(x) = x: the gradient of -log S_0(x; T) is (p_0 - 1, p_1) / T, of sign (-, +),
    # so x is moved by (+eps, -eps) / std towards the predicted class 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    images = torch.tensor([math.log(3), 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    odin = detectors.create("odin", temperature=10.0, epsilon=0.01, norm_std=(0.5, 2.0))
    moved = torch.tensor([math.log(3) + 0.01 / 0.5, -0.01 / 2.0], dtype=torch.float64)
    expected = torch.softmax(moved / 10.0, dim=0)[0]
    torch.testing.assert_close(odin.score_images(model, images), expected.view(1), rtol=1e-12, atol=0)


# -- hand-computed cases: feature-based baselines ------------------------------------


def test_mahalanobis_by_hand():
    # class 0 around (0, 0), class 1 around (10, 0); centred points (+-1, 0), (0, +-1):
    # shared covariance 0.5 I, precision 2 I
    ring = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]
    features = ring + [[x + 10, y] for x, y in ring]
    train = head_outputs(features, IDENTITY, labels=[0] * 4 + [1] * 4)
    detector = detectors.create("mahalanobis").fit(train)
    # (1, 1): 2 * (1 + 1) = 4 to class 0, 2 * (81 + 1) = 164 to class 1
    assert detector.score(head_outputs([[1.0, 1.0]], IDENTITY)).item() == pytest.approx(-4.0)


def test_knn_by_hand():
    # normalised: (1, 0), (0, 1), (1, 1)/sqrt2; from (1, 0) the distances are 0, sqrt(2 - sqrt2), sqrt2
    train = head_outputs([[2.0, 0.0], [0.0, 3.0], [5.0, 5.0]], IDENTITY)
    detector = detectors.create("knn", k=2).fit(train)
    assert detector.score(head_outputs([[4.0, 0.0]], IDENTITY)).item() == pytest.approx(-math.sqrt(2 - math.sqrt(2)))


def test_vim_by_hand():
    # W = I, b = 0: origin u = 0; covariance diag(9, 1): principal axis x (dim = D // 2 = 1),
    # residual |y| = 1 for every training sample; mean max logit (3 + 3 + 1 - 1) / 4 = 1.5 = alpha
    train = head_outputs([[3.0, 1.0], [3.0, -1.0], [-3.0, 1.0], [-3.0, -1.0]], IDENTITY)
    detector = detectors.create("vim").fit(train)
    assert detector.dim_ == 1 and detector.alpha_ == pytest.approx(1.5)
    expected = math.log(math.e + math.e**2) - 1.5 * 2
    assert detector.score(head_outputs([[1.0, 2.0]], IDENTITY)).item() == pytest.approx(expected)


@pytest.mark.parametrize(("use_maxlogit", "expected"), [(False, 4 / math.sqrt(20)), (True, 3 * 4 / math.sqrt(20))])
def test_neco_by_hand(use_maxlogit, expected):
    # standardised training features lie on the diagonal: the single component is (1, 1)/sqrt2;
    # h = (3, 1)/s projects to 4/(sqrt2 s) and has norm sqrt10/s; max logit 3
    train = head_outputs([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0], [-2.0, -2.0]], IDENTITY)
    detector = detectors.create("neco", dim=1, use_maxlogit=use_maxlogit).fit(train)
    assert detector.score(head_outputs([[3.0, 1.0]], IDENTITY)).item() == pytest.approx(expected)


def test_react_by_hand():
    # the 90th percentile of 1..10 (linear interpolation) is 9.1
    train = head_outputs([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]], IDENTITY)
    detector = detectors.create("react").fit(train)
    assert detector.threshold_ == pytest.approx(9.1)
    expected = math.log(math.exp(9.1) + math.exp(1.0))
    assert detector.score(head_outputs([[20.0, 1.0]], IDENTITY)).item() == pytest.approx(expected)


def test_ash_by_hand():
    # a = 1..10, p = 90: keep the largest (10), scale by exp(55 / 10); the head reads neuron 10 only
    weight = np.zeros((2, 10))
    weight[0, 9] = 1e-3
    outputs = head_outputs(np.arange(1.0, 11.0)[None], weight)
    z0 = 1e-3 * 10 * math.exp(5.5)
    assert detectors.create("ash").score(outputs).item() == pytest.approx(math.log(math.exp(z0) + 1))


def test_she_by_hand():
    # (2, 1) with label 1 is predicted 0: left out; patterns (4, 1) and (1, 3)
    train = head_outputs([[3.0, 1.0], [1.0, 3.0], [5.0, 1.0], [2.0, 1.0]], IDENTITY, labels=[0, 1, 0, 1])
    detector = detectors.create("she").fit(train)
    scores = detector.score(head_outputs([[2.0, 0.5], [0.0, 1.0]], IDENTITY))
    torch.testing.assert_close(scores, torch.tensor([8.5, 3.0], dtype=torch.float64))
