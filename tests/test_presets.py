"""Presets: preset="official" against a transcription of NERO's reference code, preset="ours" unchanged.

Every ``official_*`` function below transcribes, in plain numpy/torch and independently of
nero_lite's code path, the formula of NERO's reference code (github.com/bhattarailab/NERO,
commit 581820c: ``ood/run_nero.py``, ``ood/utils/feature_relevancy_extract.py``,
``ood/cv_uncertainty.py``, ``ood/run_other_algos.py``) or of OpenOOD v1.5
(``openood/evaluators/metrics.py``). Like the code they transcribe, they return outlier
scores (higher = more OOD); nero_lite's scores are their negatives. The reference code
takes the features the head reads (the pooled ResNet features, DeiT's class token).
"""

import numpy as np
import pytest
import torch
from scipy.linalg import pinv
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from torch import nn

from nero_lite import detectors, metrics
from nero_lite.detectors.presets import PRESETS, arch_family, preset_params, official_params
from nero_lite.outputs import Outputs

N_TRAIN, N_TEST, D, C = 300, 60, 192, 3  # D = 192 as DeiT-Tiny (arch "vit"); k = 175 needs D >= 175
ARCHS = {"resnet": "resnet18", "vit": "vit"}


def make_data(family: str, seed: int = 0) -> tuple[Outputs, Outputs]:
    """Training and test outputs of a linear head (float64): post-ReLU features for a ResNet,
    signed ones (as after a LayerNorm) for a transformer, both spread across ReAct's clip."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_TRAIN + N_TEST) % C
    centres = rng.normal(0.0, 1.0, (C, D))
    features = centres[labels] + 0.7 * rng.normal(0.0, 1.0, (len(labels), D))
    if family == "resnet":
        features = np.maximum(features + 0.5, 0.0)
    weight = 0.5 * centres / np.sqrt(D)  # logits of a few units: no saturated softmax
    bias = 0.1 * rng.normal(0.0, 1.0, C)
    test_labels = np.full(N_TEST, -1)
    outputs = Outputs(features, features @ weight.T + bias, np.concatenate([labels[:N_TRAIN], test_labels]), weight, bias)
    return outputs.subset(slice(0, N_TRAIN)), outputs.subset(slice(N_TRAIN, None))


@pytest.fixture(scope="module", params=["resnet", "vit"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def data(family):
    return make_data(family)


def numpy(outputs: Outputs, field: str) -> np.ndarray:
    return getattr(outputs, field).numpy()


def reference(name: str, family: str, train: Outputs, test: Outputs) -> np.ndarray:
    """nero_lite's reference-preset scores, as outlier scores (negated)."""
    return -detectors.create(name, preset="official", arch=ARCHS[family]).fit(train).score(test).numpy()


def model_name(family: str) -> str:
    """The reference code's --model-arch for a family: 'resnet18' or 'deit'."""
    return "resnet18" if family == "resnet" else "deit"


# -- transcriptions of the reference code -------------------------------------------


def official_relevance(features, weight, bias):
    """feature_relevancy_extract.py, LRPModel.forward: rows (features, 1) and their relevance (R, R_b)."""
    output = softmax(features @ weight.T + bias, axis=1)
    activations = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    weight_fc = np.concatenate([weight, bias[:, None]], axis=1)
    out_rel = []
    for i in range(len(activations)):
        z = activations[i][None] * weight_fc
        z_d = z.sum(axis=1, keepdims=True).T + 0  # + epsilon, 0 by default
        out_rel.append((output[i][None] @ (z / z_d.T))[0])
    return activations, np.array(out_rel)


def official_rel_dist(train, valid, ood, labels):
    """run_nero.py, rel_dist."""
    rel_class = [train[cls == labels].mean(axis=0)[None] for cls in np.unique(labels)]
    scores = []
    for data in [valid, ood]:
        rels_diff = [np.linalg.norm(data - class_rels, ord=1, axis=1) for class_rels in rel_class]
        scores.append(np.min(np.asarray(rels_diff), axis=0))
    return scores


def official_nero(train_outputs: Outputs, test_outputs: Outputs) -> np.ndarray:
    """run_nero.py, relevanacy_algo (the ID-test half): k = 175 for every D."""
    w, b = numpy(train_outputs, "weight"), numpy(train_outputs, "bias")
    train = official_relevance(numpy(train_outputs, "features"), w, b)
    valid = official_relevance(numpy(test_outputs, "features"), w, b)
    train_labels = numpy(train_outputs, "labels")
    k, n_component = 175, np.int32(2 * train[1][:, :-1].shape[-1] / 3)
    k_smallest_indices_id = np.argsort(valid[1][:, :-1], axis=1)[:, :k]
    samples_idx_id = np.arange(valid[1][:, :-1].shape[0])[:, None]
    k_features_id = valid[0][:, :-1][samples_idx_id, k_smallest_indices_id]
    pca = PCA(n_components=n_component)
    reduced_train = pca.fit_transform(train[1][:, :-1])
    reduced_valid = pca.transform(valid[1][:, :-1])
    id_features = np.linalg.norm(k_features_id, axis=1, ord=1) / np.linalg.norm(valid[0][:, :-1], axis=1, ord=1)
    scaling_train = official_rel_dist(train[1], train[1], train[1], train_labels)
    scaling_term_bias = scaling_train[0].mean() / np.abs(train[1][:, -1]).mean()
    relevancy_diff = official_rel_dist(reduced_train, reduced_valid, reduced_valid, train_labels)
    return (relevancy_diff[0] + scaling_term_bias * np.abs(valid[1][:, -1])) * id_features


def official_neco(train: Outputs, test: Outputs, model_name: str, neco_dim: int = 100) -> np.ndarray:
    """cv_uncertainty.py, Neco.quantify (from the extracted features on)."""
    train_features, val_features = numpy(train, "features"), numpy(test, "features")
    ss = StandardScaler()
    complete_vectors_train = ss.fit_transform(train_features)
    complete_vectors_test = ss.transform(val_features)
    pca_estimator = PCA(train_features.shape[1])
    pca_estimator.fit_transform(complete_vectors_train)
    cls_test_reduced_all = pca_estimator.transform(complete_vectors_test)
    score_id_maxlogit = numpy(test, "logits").max(axis=-1)
    if model_name in ["deit", "vit", "swin"]:
        complete_vectors_test = val_features
    cls_test_reduced = cls_test_reduced_all[:, :neco_dim]
    score_id = np.array(
        [np.linalg.norm(cls_test_reduced[i]) / np.linalg.norm(complete_vectors_test[i]) for i in range(len(val_features))]
    )
    if model_name != "resnet18":
        score_id *= score_id_maxlogit
    return -score_id


def official_react(test: Outputs, model_name: str) -> np.ndarray:
    """cv_uncertainty.py, ReAct_Energy.quantify: a fixed clip per architecture."""
    clip = 0.9 if model_name == "resnet18" else 0.99
    logits = np.clip(numpy(test, "features"), a_min=None, a_max=clip) @ numpy(test, "weight").T + numpy(test, "bias")
    return -logsumexp(logits, axis=-1)


def official_mahalanobis(train: Outputs, test: Outputs) -> np.ndarray:
    """cv_uncertainty.py, Mahalanobis.quantify (in float64 instead of its float32 scoring)."""
    train_features, train_labels = numpy(train, "features"), numpy(train, "labels")
    train_means, train_feat_centered = [], []
    for i in range(train_labels.max() + 1):
        fs = train_features[train_labels == i]
        train_means.append(fs.mean(axis=0))
        train_feat_centered.extend(fs - fs.mean(axis=0))
    prec = EmpiricalCovariance(assume_centered=True).fit(np.array(train_feat_centered)).precision_
    mean = np.array(train_means)
    score_id = -np.array([(((f - mean) @ prec) * (f - mean)).sum(axis=-1).min() for f in numpy(test, "features")])
    return -score_id


def official_vim(train: Outputs, test: Outputs) -> np.ndarray:
    """cv_uncertainty.py, ViM.quantify (its subspace rule switches at D >= 2048)."""
    train_features, val_features = numpy(train, "features"), numpy(test, "features")
    w, b = numpy(train, "weight"), numpy(train, "bias")
    u = -np.matmul(pinv(w), b)
    DIM = 1000 if val_features.shape[-1] >= 2048 else 512 if val_features.shape[-1] >= 768 else val_features.shape[-1] // 2
    ec = EmpiricalCovariance(assume_centered=True).fit(train_features - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    NS = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[DIM:]]).T)
    vlogit_id_train = np.linalg.norm(np.matmul(train_features - u, NS), axis=-1)
    alpha = numpy(train, "logits").max(axis=-1).mean() / vlogit_id_train.mean()
    vlogit_id_val = np.linalg.norm(np.matmul(val_features - u, NS), axis=-1) * alpha
    return -(-vlogit_id_val + logsumexp(numpy(test, "logits"), axis=-1))


def official_gradnorm(test: Outputs) -> np.ndarray:
    """cv_uncertainty.py, GradNorm.quantify: autograd through the head, targets all ones (on the CPU)."""
    w, b = test.weight.float(), test.bias.float()
    fc = nn.Linear(*w.shape[::-1])
    fc.weight.data[...] = w
    fc.bias.data[...] = b
    logsoftmax = nn.LogSoftmax(dim=-1)
    confs = []
    for i in test.features.float():
        targets = torch.ones((1, w.shape[0]))
        fc.zero_grad()
        loss = torch.mean(torch.sum(-targets * logsoftmax(fc(i[None])), dim=-1))
        loss.backward()
        confs.append(torch.sum(torch.abs(fc.weight.grad.data)).numpy())
    return -np.array(confs)


def official_logit_scores(test: Outputs) -> dict[str, np.ndarray]:
    """cv_uncertainty.py: MSP, MaxLogit, EnergyQuant and EntropyQuant on the logits."""
    logits = numpy(test, "logits")
    probs = np.clip(softmax(logits, axis=1), a_min=1e-6, a_max=None)
    return {
        "msp": -np.max(softmax(logits, axis=1), axis=1),
        "maxlogit": -logits.max(axis=1),
        "energy": -np.log(np.sum(np.exp(logits), axis=1)),
        "entropy": np.sum(-probs * np.log(probs), axis=1),
    }


def official_odin_score(model, inputs):
    """cv_uncertainty.py, odin_score: T = 100, ε = 0.0005."""
    temper, noise_magnitude = 100, 0.0005
    inputs = inputs.clone().requires_grad_(True)
    outputs = model(inputs)
    labels = torch.as_tensor(np.argmax(outputs.data.numpy(), axis=1))
    loss = nn.CrossEntropyLoss()(outputs / temper, labels)
    loss.backward()
    gradient = (torch.ge(inputs.grad.data, 0).float() - 0.5) * 2
    temp_inputs = torch.add(inputs.data, gradient, alpha=-noise_magnitude)
    with torch.no_grad():
        outputs = (model(temp_inputs) / temper).numpy()
    outputs = outputs - np.max(outputs, axis=1, keepdims=True)
    return -np.max(np.exp(outputs) / np.sum(np.exp(outputs), axis=1, keepdims=True), axis=1)


def official_fpr(id_scores, ood_scores) -> float:
    """run_nero.py / run_other_algos.py: FPR@95TPR of outlier scores (the negated nero_lite scores)."""
    scores_in, scores_ood = -np.asarray(id_scores, float), -np.asarray(ood_scores, float)
    recall_num = int(np.floor(0.95 * len(scores_in)))
    thresh = np.sort(scores_in)[recall_num]
    return np.sum(scores_ood <= thresh) / len(scores_ood)


def openood_fpr(id_scores, ood_scores, tpr_th: float = 0.95) -> float:
    """OpenOOD v1.5, openood/evaluators/metrics.py, auc_and_fpr_recall: OOD positive, conf negated."""
    from sklearn import metrics as skm

    conf = np.concatenate([id_scores, ood_scores]).astype(float)
    label = np.concatenate([np.zeros(len(id_scores)), -np.ones(len(ood_scores))])
    ood_indicator = np.zeros_like(label)
    ood_indicator[label == -1] = 1
    fpr_list, tpr_list, _ = skm.roc_curve(ood_indicator, -conf)
    return fpr_list[np.argmax(tpr_list >= tpr_th)]


# -- the reference preset equals the reference code -----------------------------------


def test_nero_reference_fixes_k_at_175(data, family):
    train, test = data
    np.testing.assert_allclose(reference("nero", family, train, test), official_nero(train, test), rtol=1e-9)
    nero = detectors.create("nero", preset="official", arch=ARCHS[family]).fit(train)
    assert nero.k_ == 175
    # ours keeps the share 175 / 512 of D: 66 of 192 neurons, a different score
    ours = -detectors.create("nero").fit(train).score(test).numpy()
    assert detectors.create("nero").fit(train).k_ == 66
    assert not np.allclose(ours, official_nero(train, test), rtol=1e-3)


def test_neco_reference_form_per_architecture(data, family):
    train, test = data
    official = official_neco(train, test, model_name(family))
    np.testing.assert_allclose(reference("neco", family, train, test), official, rtol=1e-9)
    # ours is the ResNet form everywhere: equal for a ResNet, not for a transformer
    ours = -detectors.create("neco").fit(train).score(test).numpy()
    assert np.allclose(ours, official, rtol=1e-9) == (family == "resnet")
    # the standardised denominator with the max-logit factor is neither
    both = -detectors.create("neco", use_maxlogit=True).fit(train).score(test).numpy()
    assert not np.allclose(both, official_neco(train, test, "deit"), rtol=1e-3)


def test_react_reference_clips_at_a_constant(data, family):
    train, test = data
    official = official_react(test, model_name(family))
    np.testing.assert_allclose(reference("react", family, train, test), official, rtol=1e-9)
    assert detectors.create("react", preset="official", arch=ARCHS[family]).fit(train).threshold_ == (
        0.9 if family == "resnet" else 0.99
    )
    # the clip matters on these features, and ours (a training percentile) is another one
    assert not np.allclose(official, -logsumexp(numpy(test, "logits"), axis=1), rtol=1e-3)
    ours = -detectors.create("react").fit(train).score(test).numpy()
    assert not np.allclose(ours, official, rtol=1e-3)


def test_mahalanobis_and_vim_reference_equal_ours(data, family):
    train, test = data
    np.testing.assert_allclose(reference("mahalanobis", family, train, test), official_mahalanobis(train, test), rtol=1e-7)
    np.testing.assert_allclose(reference("vim", family, train, test), official_vim(train, test), rtol=1e-7)


def test_logit_scores_reference_equal_ours(data, family):
    train, test = data
    official = official_logit_scores(test)
    for name in ("msp", "maxlogit", "energy"):
        np.testing.assert_allclose(reference(name, family, train, test), official[name], rtol=1e-9)
    # no probability is below the reference's clip here, so the exact entropy agrees
    assert softmax(numpy(test, "logits"), axis=1).min() > 1e-6
    np.testing.assert_allclose(reference("entropy", family, train, test), official["entropy"], rtol=1e-9)


def test_entropy_is_exact_where_the_reference_clips():
    # float32 softmaxes saturated at 1.0: the reference's clip at 1e-6 gives both samples one
    # entropy, ours still ranks the more confident one higher
    logits = torch.tensor([[30.0, 0.0, 0.0], [40.0, 0.0, 0.0]])
    outputs = Outputs(torch.zeros(2, 1), logits, None, torch.zeros(3, 1), torch.zeros(3))
    probs = np.clip(torch.softmax(logits, dim=1).numpy(), a_min=1e-6, a_max=None)
    official = np.sum(-probs * np.log(probs), axis=1)
    assert official[0] == official[1]
    ours = detectors.create("entropy", preset="official", arch="vit").score(outputs)
    assert ours[1] > ours[0]


def test_gradnorm_reference_is_ours_times_the_number_of_classes(data, family):
    train, test = data
    ours = reference("gradnorm", family, train, test)
    np.testing.assert_allclose(ours * C, official_gradnorm(test), rtol=1e-4)


def test_odin_reference_perturbation(one_torch_thread):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    images = torch.randn(8, 3, 8, 8)
    official = official_odin_score(model, images)
    for arch in ("resnet18", "resnet18d", "vit", "deit_small"):
        odin = detectors.create("odin", preset="official", arch=arch)
        np.testing.assert_allclose(-odin.score_images(model, images).numpy(), official, rtol=1e-5)
    assert not np.allclose(-detectors.create("odin").score_images(model, images).numpy(), official, rtol=1e-3)


def test_detectors_absent_from_the_reference_code_keep_ours():
    for name in ("knn", "ash", "she"):
        assert official_params(name, "resnet18") == {} == official_params(name, "vit")


# -- presets, architectures and errors ------------------------------------------------


def test_reference_covers_the_registry_and_names_its_settings():
    for arch in ("resnet18", "resnet18d", "vit", "deit_small"):
        for name in detectors.available():  # every registry name has reference settings (maybe none)
            detectors.create(name, preset="official", arch=arch)
    assert official_params("nero", "resnet18")["k"] == 175
    assert official_params("react", "resnet18d") == {"threshold": 0.9}
    assert official_params("react", "deit_small") == {"threshold": 0.99}
    assert official_params("neco", "resnet18") == {"dim": 100, "use_maxlogit": False, "denominator": "standardised"}
    assert official_params("neco", "vit") == {"dim": 100, "use_maxlogit": True, "denominator": "raw"}
    assert official_params("odin", "vit") == {"temperature": 100.0, "epsilon": 0.0005, "norm_std": None}
    assert [arch_family(a) for a in ("resnet18", "resnet18d", "vit", "deit_small")] == ["resnet", "resnet", "vit", "vit"]


@pytest.mark.parametrize("name", detectors.available())
def test_ours_is_todays_default(name):
    ours = detectors.create(name, preset="ours")
    assert preset_params(name) == {} and repr(ours) == repr(detectors.create(name)) == f"{type(ours).__name__}()"
    train, test = make_data("resnet")
    torch.testing.assert_close(ours.fit(train).score(test), detectors.create(name).fit(train).score(test))


def test_todays_default_values_are_pinned():
    nero, react, neco = detectors.create("nero"), detectors.create("react"), detectors.create("neco")
    odin = detectors.create("odin")
    assert (nero.k_fraction, nero.k, nero.pca_fraction) == (175 / 512, None, 2 / 3)
    assert (react.percentile, react.threshold) == (90.0, None)
    assert (neco.dim, neco.use_maxlogit, neco.denominator) == (100, False, "standardised")
    assert (odin.temperature, odin.epsilon, odin.norm_std) == (1000.0, 0.0014, None)


def test_keyword_arguments_override_the_preset():
    react = detectors.create("react", preset="official", arch="resnet18", threshold=1.5)
    assert react.threshold == 1.5
    assert detectors.create("nero", preset="official", arch="vit", k=10).k == 10


def test_preset_errors_are_clear():
    assert PRESETS == ("ours", "official")
    with pytest.raises(ValueError, match="unknown preset 'paper'"):
        detectors.create("nero", preset="paper")
    with pytest.raises(ValueError, match="depends on the architecture: pass arch="):
        detectors.create("react", preset="official")
    with pytest.raises(ValueError, match="unknown architecture family of arch='efficientnet'"):
        detectors.create("react", preset="official", arch="efficientnet")
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        official_params("nope", "vit")
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        detectors.create("nope", preset="official", arch="vit")


def test_fixed_k_and_threshold_are_validated():
    train, _ = make_data("resnet")
    with pytest.raises(ValueError, match="k must be a whole number between 1 and D=192"):
        detectors.create("nero", k=193).fit(train)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        detectors.create("react", threshold=float("nan")).fit(train)
    with pytest.raises(ValueError, match="denominator must be"):
        detectors.create("neco", denominator="l1").fit(train)


# -- FPR95 in three conventions -----------------------------------------------------


@pytest.mark.parametrize(
    ("id_scores", "ood_scores", "tpr", "expected"),
    [
        # tpr = 0.5 of n = 4 ID: ours accepts ceil(2) = 2 (threshold 3: OOD 3 accepted, 1/3),
        # the reference floor(2) + 1 = 3 (threshold 2: OOD 3 and 2.5, 2/3); OpenOOD flags the
        # ceil(1.5) = 2 lowest OOD (threshold 2.5) and with them ID 2 and 1 (2/4)
        ([4.0, 3.0, 2.0, 1.0], [3.0, 2.5, 0.0], 0.5, {"ours": 1 / 3, "official": 2 / 3, "openood": 2 / 4}),
        # tpr = 0.95 of n = 20 ID (1..20): ours accepts 19 (threshold 2: 7 of 10 OOD), the
        # reference 20 (threshold 1, tied OOD 1 accepted: 9 of 10); OpenOOD flags all 10 OOD
        # (threshold 8.5) and with them ID 1..8 (8 of 20)
        (
            list(range(1, 21)),
            [0.5, 1.0, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5],
            0.95,
            {"ours": 0.7, "official": 0.9, "openood": 0.4},
        ),
    ],
)
def test_fpr_conventions_by_hand(id_scores, ood_scores, tpr, expected):
    for convention, value in expected.items():
        assert metrics.fpr_at_tpr(id_scores, ood_scores, tpr, convention=convention) == pytest.approx(value)


@pytest.mark.parametrize("n_id", [200, 203])
def test_fpr_conventions_match_their_code(n_id):
    rng = np.random.default_rng(n_id)
    id_scores = np.round(rng.normal(1.0, 1.0, n_id), 1)  # rounding makes ties within and across the sets
    ood_scores = np.round(rng.normal(0.0, 1.0, 150), 1)
    reference = metrics.fpr_at_tpr(id_scores, ood_scores, convention="official")
    assert reference == pytest.approx(official_fpr(id_scores, ood_scores))
    openood = metrics.fpr_at_tpr(id_scores, ood_scores, convention="openood")
    assert openood == pytest.approx(openood_fpr(id_scores, ood_scores))
    # when 0.95 n is not whole, the reference and ours accept the same ceil(0.95 n) ID samples
    if n_id % 20:
        assert metrics.fpr_at_tpr(id_scores, ood_scores) == reference


def test_evaluate_keeps_ours_by_default():
    id_scores, ood_scores = list(range(1, 21)), [0.5, 1.0, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    assert metrics.evaluate(id_scores, ood_scores)["fpr95"] == pytest.approx(0.7)
    assert metrics.evaluate(id_scores, ood_scores, "official")["fpr95"] == pytest.approx(0.9)
    table = metrics.evaluate_table(id_scores, ood_scores, [0] * 10, ["a"], convention="openood")
    assert table.loc["all", "fpr95"] == pytest.approx(0.4)
    assert metrics.evaluate_table(id_scores, ood_scores, [0] * 10, ["a"]).loc["all", "fpr95"] == pytest.approx(0.7)


def test_fpr_convention_errors():
    with pytest.raises(ValueError, match="unknown convention 'sklearn'"):
        metrics.fpr_at_tpr([1.0], [0.0], convention="sklearn")
    with pytest.raises(ValueError, match="needs tpr < 1"):
        metrics.fpr_at_tpr([1.0], [0.0], tpr=1.0, convention="official")


def test_the_papers_table_reads_by_setting():
    from nero_lite.detectors import presets

    deit = presets.paper_table("DeiT-S", "Kvasir-v2")
    assert deit.loc["nero"].tolist() == [92.73, 18.96] and deit.loc["mahalanobis", "auroc"] == 94.50
    gastro = presets.paper_table("ResNet-18", "GastroVision")
    assert gastro.loc["neco", "auroc"] == 79.81 and list(gastro.columns) == ["auroc", "fpr95"]
    assert set(deit.index) <= set(detectors.available())
    with pytest.raises(ValueError, match="the paper reports"):
        presets.paper_table("ViT", "Kvasir-v2")


def test_the_previous_name_reference_still_works_with_a_deprecation_warning():
    """``preset="reference"``, ``reference_params`` and ``convention="reference"`` are the previous names of "official"."""
    from nero_lite.detectors import presets

    with pytest.warns(DeprecationWarning, match='preset="official"'):
        react = detectors.create("react", preset="reference", arch="resnet18")
    assert vars(react) == vars(detectors.create("react", preset="official", arch="resnet18"))
    with pytest.warns(DeprecationWarning, match="official_params"):
        assert presets.reference_params("nero", "vit") == official_params("nero", "vit")
    id_scores, ood_scores = list(range(1, 21)), [0.5, 1.0, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    with pytest.warns(DeprecationWarning, match='convention="official"'):
        assert metrics.fpr_at_tpr(id_scores, ood_scores, convention="reference") == pytest.approx(0.9)
