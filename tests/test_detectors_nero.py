"""NERO: the detector equals the original procedure, re-implemented here step by step."""

import numpy as np
import pytest
import torch

from nero_lite import detectors
from nero_lite.outputs import Outputs

N, D, C = 300, 24, 3


def random_outputs(n: int, seed: int, dtype=torch.float64) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % C
    head = torch.Generator().manual_seed(99)  # the same head for every call
    centres = 2 * torch.randn(C, D, generator=head).abs()
    weight = torch.randn(C, D, generator=head) + centres / 2
    bias = torch.randn(C, generator=head)
    features = (centres[labels] + torch.randn(n, D, generator=g)).relu()
    features, weight, bias = (t.to(dtype) for t in (features, weight, bias))
    return Outputs(features, features @ weight.T + bias, labels, weight, bias)


def reference_nero(
    train: Outputs,
    test: Outputs,
    pca_fraction: float = 2 / 3,
    k: int = round(175 / 512 * D),
    use_pca: bool = True,
    use_bias_term: bool = True,
    use_norm_factor: bool = True,
) -> np.ndarray:
    """NERO as described (papers.md, section 1), one sample at a time, in numpy float64."""
    weight, bias = train.weight.numpy(), train.bias.numpy()
    extended_weight = np.hstack([weight, bias[:, None]])  # the bias is neuron D+1 with activation 1

    def relevance(a):
        rows = []
        for x in a:
            contributions = np.append(x, 1.0)[None, :] * extended_weight  # (C, D+1)
            z = contributions.sum(axis=1)
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            rows.append(sum(p[c] * contributions[c] / z[c] for c in range(C)))
        return np.array(rows)  # (n, D+1): neuron relevances, then the bias relevance

    def min_l1(points, centroids):
        return np.array([min(np.abs(x - m).sum() for m in centroids) for x in points])

    train_rel, test_rel = relevance(train.features.numpy()), relevance(test.features.numpy())
    labels = train.labels.numpy()
    if use_pca:
        # PCA by SVD of the centred training relevance; the L1 distances do not depend on
        # the signs of the components, so any SVD of the same data gives the same scores
        mean = train_rel[:, :D].mean(axis=0)
        _, _, vt = np.linalg.svd(train_rel[:, :D] - mean, full_matrices=False)
        basis = vt[: int(pca_fraction * D)]
        project = lambda r: (r[:, :D] - mean) @ basis.T  # noqa: E731
    else:
        project = lambda r: r[:, :D]  # noqa: E731
    centroids = [project(train_rel)[labels == c].mean(axis=0) for c in range(C)]
    raw_centroids = [train_rel[labels == c].mean(axis=0) for c in range(C)]
    lam = min_l1(train_rel, raw_centroids).mean() / np.abs(train_rel[:, D]).mean()

    scores = []
    for x, r, p in zip(test.features.numpy(), test_rel, project(test_rel)):
        s = min(np.abs(p - m).sum() for m in centroids)
        if use_bias_term:
            s += lam * abs(r[D])
        if use_norm_factor:
            lowest = np.argsort(r[:D])[:k]
            s *= np.abs(x[lowest]).sum() / np.abs(x).sum()
        scores.append(-s)
    return np.array(scores)


@pytest.fixture(scope="module")
def data() -> tuple[Outputs, Outputs]:
    return random_outputs(N, seed=0), random_outputs(100, seed=1)


def test_defaults_reproduce_the_original_procedure(data):
    train, test = data
    nero = detectors.create("nero").fit(train)
    assert nero.pca_.n_components_ == 16 and nero.k_ == 8  # floor(2/3 * 24), round(175/512 * 24)
    expected = reference_nero(train, test)
    np.testing.assert_allclose(nero.score(test).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(nero.score(train).numpy(), reference_nero(train, train), rtol=1e-5)


#: The ablation switches of NeroDetector, one or two at a time.
ABLATIONS = [
    {"use_pca": False},
    {"use_bias_term": False},
    {"use_norm_factor": False},
    {"use_bias_term": False, "use_norm_factor": False},
]


@pytest.mark.parametrize("flags", ABLATIONS)
def test_ablations_reproduce_the_procedure_without_the_term(data, flags):
    train, test = data
    scores = detectors.create("nero", **flags).fit(train).score(test)
    np.testing.assert_allclose(scores.numpy(), reference_nero(train, test, **flags), rtol=1e-5)


def test_fractions_set_pca_and_k(data):
    train, test = data
    nero = detectors.create("nero", pca_fraction=0.5, k_fraction=0.25).fit(train)
    expected = reference_nero(train, test, pca_fraction=0.5, k=6)
    np.testing.assert_allclose(nero.score(test).numpy(), expected, rtol=1e-5)


def test_parts_compose_the_score(data):
    train, test = data
    nero = detectors.create("nero").fit(train)
    relevance, bias_relevance = nero.relevance(test)
    assert relevance.shape == (100, D) and bias_relevance.shape == (100,)
    assert nero.project(test).shape == (100, 16) and nero.centroids_.shape == (C, 16)
    assert nero.lambda_ > 0
    torch.testing.assert_close(nero.bias_term(test), nero.lambda_ * bias_relevance.abs())
    composed = -(nero.distance(test) + nero.bias_term(test)) * nero.norm_factor(test)
    torch.testing.assert_close(nero.score(test), composed)


def test_float32_input_stays_close_to_float64(data):
    train, test = data
    train32, test32 = random_outputs(N, seed=0, dtype=torch.float32), random_outputs(100, seed=1, dtype=torch.float32)
    scores = detectors.create("nero").fit(train32).score(test32)
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), reference_nero(train, test), rtol=1e-3)


def test_kmeans_centroids(data):
    train, _ = data
    nero = detectors.create("nero", centroids_per_class=3).fit(train)
    assert nero.centroids_.shape == (3 * C, 16)
    assert nero.centroid_labels_.tolist() == [c for c in range(C) for _ in range(3)]
    one = detectors.create("nero").fit(train)
    # three k-means centres per class sit closer to the training relevance than one class mean
    assert nero.distance(train).mean() < one.distance(train).mean()
    with pytest.raises(ValueError, match="centroids_per_class"):
        detectors.create("nero", centroids_per_class=1000).fit(train)


def test_head_without_bias_has_no_bias_term(data):
    train, test = data
    no_bias = [Outputs(o.features, o.features @ o.weight.T, o.labels, o.weight, 0 * o.bias) for o in (train, test)]
    nero = detectors.create("nero").fit(no_bias[0])
    assert nero.lambda_ == 0.0
    assert torch.isfinite(nero.score(no_bias[1])).all()


def test_bad_fractions_are_rejected(data):
    train, _ = data
    with pytest.raises(ValueError, match="pca_fraction"):
        detectors.create("nero", pca_fraction=0.01).fit(train)
    with pytest.raises(ValueError, match="k_fraction"):
        detectors.create("nero", k_fraction=2.0).fit(train)


def test_pca_keeps_at_most_one_component_per_training_sample(data):
    """Fewer training samples than pca_fraction * D (a small real data set): PCA keeps N components."""
    train, test = data
    few = Outputs(train.features[:9], train.logits[:9], train.labels[:9], train.weight, train.bias)
    nero = detectors.create("nero", pca_fraction=1.0).fit(few)
    assert nero.pca_.n_components_ == min(9, train.features.shape[1])
    assert torch.isfinite(nero.score(test)).all()


def test_feature_centroid_is_nero_distance_on_features(data):
    """Replacing the relevance by the features in NERO's distance-only score gives FeatureCentroidDetector."""
    train, test = data
    feature = detectors.FeatureCentroidDetector(pca_fraction=0.5).fit(train)
    # a direct computation: SVD basis (the sign of a component does not change an L1 distance)
    a, labels = train.features.double().numpy(), train.labels.numpy()
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    basis = vt[: int(0.5 * a.shape[1])]
    project = lambda x: (x - mean) @ basis.T  # noqa: E731
    centroids = [project(a[labels == c]).mean(axis=0) for c in range(train.num_classes)]
    expected = [-min(np.abs(z - m).sum() for m in centroids) for z in project(test.features.double().numpy())]
    np.testing.assert_allclose(feature.score(test).numpy(), expected, rtol=1e-4, atol=1e-4)
    l2 = detectors.FeatureCentroidDetector(pca_fraction=0.5, p=2).fit(train).score(test)
    assert not torch.allclose(l2, feature.score(test))


def test_normalized_feature_centroid_is_the_same_recipe_on_l1_normalised_features(data):
    """normalize=True equals the plain detector fitted and scored on a / ||a||_1, and is scale-free per image."""
    train, test = data
    unit = lambda o: Outputs(o.features / o.features.abs().sum(1, keepdim=True), o.logits, o.labels, o.weight, o.bias)  # noqa: E731
    normalized = detectors.FeatureCentroidDetector(pca_fraction=0.5, normalize=True).fit(train)
    by_hand = detectors.FeatureCentroidDetector(pca_fraction=0.5).fit(unit(train))
    torch.testing.assert_close(normalized.score(test), by_hand.score(unit(test)))
    scaled = Outputs(test.features * torch.linspace(0.5, 7.0, len(test)).unsqueeze(1).to(test.features),
                     test.logits, test.labels, test.weight, test.bias)
    torch.testing.assert_close(normalized.score(scaled), normalized.score(test))
    plain = detectors.FeatureCentroidDetector(pca_fraction=0.5).fit(train)
    assert not torch.allclose(plain.score(scaled), plain.score(test))


# -- the decomposition of the score ----------------------------------------------------


def hand_made_detector() -> tuple[detectors.NeroDetector, Outputs]:
    """A 3-neuron NERO whose fitted state is set by hand, and one sample with relevance (1, 3, 2) / 7.

    The head has two identical classes, weights (1, 1, 1) and bias 1: for features a = (1, 3, 2)
    both logits are 7, the softmax is (1/2, 1/2), so R_j = a_j / 7 and R_b = 1/7.
    PCA: mean 0, components (1, 1, 0)/sqrt(2) and (0, 0, 1); centroids r_0 = (0.1, 0.2, 0.1)
    and r_1 = (0.5, 0.5, 0.5) of classes 0 and 1 (mu_c = P r_c); lambda = 2; k = 1.
    """
    weight, bias = torch.ones(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    features = torch.tensor([[1.0, 3.0, 2.0]], dtype=torch.float64)
    sample = Outputs(features, features @ weight.T + bias, None, weight, bias)
    g = torch.Generator().manual_seed(0)
    train_features = torch.rand(20, 3, generator=g, dtype=torch.float64)
    train = Outputs(train_features, train_features @ weight.T + bias, torch.arange(20) % 2, weight, bias)
    nero = detectors.create("nero", k_fraction=1 / 3).fit(train)
    components = np.array([[1, 1, 0], [0, 0, np.sqrt(2)]]) / np.sqrt(2)
    nero.pca_.mean_, nero.pca_.components_ = np.zeros(3), components
    nero.centroid_points_ = torch.tensor([[0.1, 0.2, 0.1], [0.5, 0.5, 0.5]], dtype=torch.float64)
    nero.centroids_ = nero.centroid_points_ @ torch.from_numpy(components).T
    nero.centroid_labels_ = torch.tensor([0, 1])
    nero.lambda_ = 2.0
    return nero, sample


def test_decomposition_of_a_hand_computed_case():
    nero, sample = hand_made_detector()
    parts = nero.decompose(sample)
    # Delta = R - r_0 = (3, 16, 13) / 70; P Delta = (19 / (70 sqrt 2), 13 / 70), both positive, so
    # c = Delta * P^T sign(P Delta) = Delta * (1/sqrt 2, 1/sqrt 2, 1); r_1 is farther: |P(R - r_1)|_1 = 0.517
    root = np.sqrt(2)
    np.testing.assert_allclose(parts.deviation[0].numpy(), [3 / 70, 16 / 70, 13 / 70])
    np.testing.assert_allclose(parts.neurons[0].numpy(), [3 / (70 * root), 16 / (70 * root), 13 / 70])
    assert parts.nearest.tolist() == [0] and parts.centroid.tolist() == [0]
    distance = 19 / (70 * root) + 13 / 70
    assert float(parts.distance[0]) == pytest.approx(distance)
    assert float(parts.bias[0]) == pytest.approx(2 / 7)  # lambda |R_b|
    assert float(parts.factor[0]) == pytest.approx(1 / 6)  # k = 1: neuron 0 (R = 1/7) holds |a_0| / |a|_1
    assert float(parts.score[0]) == pytest.approx(-(distance + 2 / 7) / 6)
    assert float(nero.score(sample)[0]) == pytest.approx(-(distance + 2 / 7) / 6)
    labels, nearest_distance = nero.nearest(sample)
    assert labels.tolist() == [0] and float(nearest_distance[0]) == pytest.approx(distance)


def test_a_deviation_the_pca_discards_contributes_nothing():
    nero, sample = hand_made_detector()
    # move the sample along the null space of P, (1, -1, 0): the deviation grows, the distance does not
    shifted = Outputs(sample.features, sample.logits, None, sample.weight, sample.bias)
    base = nero.decompose(shifted)
    nero.centroid_points_ = nero.centroid_points_ + torch.tensor([[0.3, -0.3, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    moved = nero.decompose(shifted)
    assert float(moved.distance[0]) == pytest.approx(float(base.distance[0]))
    assert float(moved.deviation[0].abs().max()) > float(base.deviation[0].abs().max()) + 0.2
    # the two neurons along the discarded direction swap contribution but still sum to the same
    assert float(moved.neurons[0, :2].sum()) == pytest.approx(float(base.neurons[0, :2].sum()))


@pytest.mark.parametrize(
    "flags", [{}, *ABLATIONS, {"centroids_per_class": 3}, {"pca_fraction": 0.25, "target": "predicted"}]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decomposition_recomposes_the_score(flags, dtype):
    train, test = random_outputs(N, seed=0, dtype=dtype), random_outputs(100, seed=1, dtype=dtype)
    nero = detectors.create("nero", **flags).fit(train)
    parts = nero.decompose(test)
    assert parts.neurons.shape == (100, D) and parts.neurons.dtype == dtype
    recomposed = -(parts.neurons.sum(1) + parts.bias) * parts.factor
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(recomposed, nero.score(test), **tolerance)
    torch.testing.assert_close(parts.distance, nero.distance(test), **tolerance)
    if not nero.use_bias_term:
        assert torch.all(parts.bias == 0)
    if not nero.use_norm_factor:
        assert torch.all(parts.factor == 1)
    if not nero.use_pca:
        torch.testing.assert_close(parts.neurons, parts.deviation.abs())
    else:
        # neurons can pull a sample towards its centroid: some contributions are negative
        assert (parts.neurons < 0).any()
    labels, distance = nero.nearest(test)
    torch.testing.assert_close(labels, parts.nearest)
    torch.testing.assert_close(distance, parts.distance, **tolerance)


def test_centroid_points_are_the_class_mean_relevance(data):
    train, _ = data
    nero = detectors.create("nero").fit(train)
    relevance = nero.relevance(train)[0]
    means = torch.stack([relevance[train.labels == c].mean(0) for c in range(C)])
    torch.testing.assert_close(nero.centroid_points_, means)
    # with k-means centroids each reference still projects onto its centroid
    nero = detectors.create("nero", centroids_per_class=2).fit(train)
    mean, components = (torch.as_tensor(v) for v in (nero.pca_.mean_, nero.pca_.components_))
    torch.testing.assert_close((nero.centroid_points_ - mean) @ components.T, nero.centroids_)


def test_decomposition_is_differentiable(data):
    train, test = data
    nero = detectors.create("nero").fit(train)
    features = test.features.clone().requires_grad_(True)
    outputs = Outputs(features, features @ test.weight.T + test.bias, None, test.weight, test.bias)
    (gradient,) = torch.autograd.grad(nero.decompose(outputs).outlier_score.sum(), features)
    # finite differences along a random direction agree with the gradient (the direction leaves the
    # features that are 0 alone: |a| has a kink there)
    direction = torch.randn(features.shape, generator=torch.Generator().manual_seed(3), dtype=features.dtype)
    direction = direction * (test.features != 0)
    step = 1e-6

    def outlier(a):
        return -nero.score(Outputs(a, a @ test.weight.T + test.bias, None, test.weight, test.bias))

    finite = (outlier(test.features + step * direction) - outlier(test.features - step * direction)) / (2 * step)
    torch.testing.assert_close((gradient * direction).sum(1), finite, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("use_pca", [True, False])
def test_p_sets_the_norm_of_every_centroid_distance(data, use_pca):
    train, test = data
    l1 = detectors.create("nero", use_pca=use_pca).fit(train)
    assert detectors.create("nero", use_pca=use_pca, p=1).fit(train).score(test).equal(l1.score(test))
    l2 = detectors.create("nero", use_pca=use_pca, use_bias_term=False, use_norm_factor=False, p=2).fit(train)
    assert repr(l2).endswith("p=2)")
    # the score is minus the Euclidean distance to the nearest centroid, by hand
    projected = l2.project(test)
    by_hand = torch.stack([(projected - m).pow(2).sum(1).sqrt() for m in l2.centroids_]).amin(0)
    torch.testing.assert_close(l2.score(test), -by_hand)
    # lambda is calibrated with the same norm in the raw (D+1)-dim relevance space
    full = detectors.create("nero", use_pca=use_pca, p=2).fit(train)
    relevance, bias_relevance = full.relevance(train)
    raw = torch.cat([relevance, bias_relevance[:, None]], 1)
    centroids = torch.stack([raw[train.labels == c].mean(0) for c in range(C)])
    raw_l2 = torch.cdist(raw, centroids).amin(1).mean() / bias_relevance.abs().mean()
    assert full.lambda_ == pytest.approx(float(raw_l2))
    # the decomposition still recomposes the score exactly
    parts = full.decompose(test)
    torch.testing.assert_close(-(parts.neurons.sum(1) + parts.bias) * parts.factor, full.score(test))
    torch.testing.assert_close(parts.distance, full.distance(test))


@pytest.mark.parametrize("p", [0.5, 0, float("inf"), True, "2"])
def test_p_below_one_or_infinite_is_rejected(data, p):
    with pytest.raises(ValueError, match="p must be"):
        detectors.create("nero", p=p).fit(data[0])
