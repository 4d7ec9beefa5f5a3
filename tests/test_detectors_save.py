"""Saved detectors: one safetensors file, no pickle, read back bit for bit."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nero_lite import detectors
from nero_lite.detectors import FeatureCentroidDetector, NeroDetector, NotFittedError
from nero_lite.detectors import saving
from nero_lite.outputs import Outputs

from tests.test_detectors import SMALL, random_outputs, split

FIELDS = ("features", "logits", "labels", "weight", "bias")


def data(dtype: torch.dtype) -> tuple[Outputs, Outputs]:
    outputs = random_outputs()
    return split(Outputs(**{f: getattr(outputs, f) if f == "labels" else getattr(outputs, f).to(dtype) for f in FIELDS}))


def read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a saved detector, read as plain safetensors + JSON."""
    with safe_open(path, framework="pt") as stream:
        metadata = stream.metadata()
    return json.loads(metadata["nero_lite.detector"]), load_file(path)


def digest(text: str, tensors: dict[str, torch.Tensor]) -> str:
    """The checksum as the base module's docstring specifies it."""
    sha = hashlib.sha256(text.encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        sha.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def rewrite(path: Path, edit, fix_checksum: bool = True) -> None:
    """Rewrite a saved detector with ``edit(document)`` applied (and, by default, a matching checksum)."""
    document, tensors = read(path)
    edit(document)
    text = json.dumps(document)
    with safe_open(path, framework="pt") as stream:
        old = stream.metadata()["sha256"]
    save_file(tensors, path, metadata={"nero_lite.detector": text, "sha256": digest(text, tensors) if fix_checksum else old})


@pytest.fixture
def saved_nero(tmp_path) -> tuple[NeroDetector, Path]:
    train, _ = data(torch.float32)
    nero = detectors.create("nero").fit(train)
    path = tmp_path / "nero.safetensors"
    nero.save(path)
    return nero, path


# -- round trip -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", detectors.available())
def test_round_trip_scores_bit_for_bit(name, dtype, tmp_path):
    train, test = data(dtype)
    detector = detectors.create(name, **SMALL.get(name, {})).fit(train)
    path = tmp_path / "sub" / f"{name}.safetensors"  # missing folders are created
    detector.save(path)
    for loaded in (detectors.load(path), type(detector).load(path)):
        assert type(loaded) is type(detector) and repr(loaded) == repr(detector)
        scores = loaded.score(test)
        assert scores.dtype == dtype and torch.equal(scores, detector.score(test))
    # the checksum in the file is the one the docstring specifies
    with safe_open(path, framework="pt") as stream:
        metadata = stream.metadata()
    assert metadata["sha256"] == digest(metadata["nero_lite.detector"], load_file(path))


@pytest.mark.parametrize("name", [n for n in detectors.available() if not detectors.create(n).requires_fit])
def test_an_unfitted_detector_keeps_its_hyperparameters(name, tmp_path):
    _, test = data(torch.float32)
    detector = detectors.create(name, preset="official", arch="vit")
    detector.save(tmp_path / "d.safetensors")
    loaded = detectors.load(tmp_path / "d.safetensors")
    assert vars(loaded) == vars(detector)
    assert torch.equal(loaded.score(test), detector.score(test))


def test_odin_saves_its_hyperparameters(tmp_path):
    odin = detectors.create("odin", temperature=100.0, epsilon=0.0005, norm_std=(0.2, 0.3, 0.25))
    odin.save(tmp_path / "odin.safetensors")
    loaded = detectors.load(tmp_path / "odin.safetensors")
    assert (loaded.temperature, loaded.epsilon, loaded.norm_std) == (100.0, 0.0005, (0.2, 0.3, 0.25))
    document, tensors = read(tmp_path / "odin.safetensors")
    assert document["detector"] == "odin" and document["fitted"] == {} and tensors == {}
    assert document["params"]["norm_std"] == {"tuple": [0.2, 0.3, 0.25]}


NERO_SETTINGS = [
    {},
    {"use_pca": False},
    {"use_bias_term": False},
    {"use_norm_factor": False},
    {"use_bias_term": False, "use_norm_factor": False},
    {"centroids_per_class": 3},
    {"centroids_per_class": 2, "use_pca": False},
    {"k": 2, "pca_fraction": 0.25, "target": "predicted"},
    {"epsilon": 0.01, "random_state": 3, "centroids_per_class": 2},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("settings", NERO_SETTINGS)
def test_nero_round_trip_keeps_every_part(settings, dtype, tmp_path):
    train, test = data(dtype)
    nero = detectors.create("nero", **settings).fit(train)
    nero.save(tmp_path / "nero.safetensors")
    loaded = detectors.load(tmp_path / "nero.safetensors")
    assert {key: getattr(loaded, key) for key in settings} == settings
    assert torch.equal(loaded.score(test), nero.score(test))
    for part, expected in vars(nero.decompose(test)).items():
        assert torch.equal(getattr(loaded.decompose(test), part), expected), part
    for got, expected in zip(loaded.nearest(test), nero.nearest(test), strict=True):
        assert torch.equal(got, expected)
    assert torch.equal(loaded.project(test), nero.project(test))
    assert (loaded.k_, loaded.lambda_) == (nero.k_, nero.lambda_)
    if nero.pca_ is None:
        assert loaded.pca_ is None
    else:  # the PCA comes back whole, for the book's explained-variance plot
        for attribute in ("components_", "mean_", "explained_variance_ratio_"):
            got, expected = getattr(loaded.pca_, attribute), getattr(nero.pca_, attribute)
            assert got.dtype == expected.dtype and got.strides == expected.strides and (got == expected).all()
        assert loaded.pca_.n_components_ == nero.pca_.n_components_
        assert type(loaded.pca_.noise_variance_) is type(nero.pca_.noise_variance_)


def test_a_detector_outside_the_registry_loads_through_its_class(tmp_path):
    train, test = data(torch.float64)
    detector = FeatureCentroidDetector(p=2.0, normalize=True).fit(train)
    detector.save(tmp_path / "fc.safetensors")
    loaded = FeatureCentroidDetector.load(tmp_path / "fc.safetensors")
    assert loaded.p == 2.0 and loaded.normalize and torch.equal(loaded.score(test), detector.score(test))
    with pytest.raises(ValueError, match="holds detector 'feature_centroid'; expected one of: msp, "):
        detectors.load(tmp_path / "fc.safetensors")


def test_saving_again_replaces_the_file(saved_nero):
    nero, path = saved_nero
    train, test = data(torch.float32)
    knn = detectors.create("knn", k=3).fit(train)
    knn.save(path)
    assert torch.equal(detectors.load(path).score(test), knn.score(test))
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_detector_fitted_on_cuda_scores_the_same_after_loading(tmp_path):
    train, test = (o.to("cuda") for o in data(torch.float32))
    nero = detectors.create("nero", centroids_per_class=2).fit(train)
    nero.save(tmp_path / "nero.safetensors")
    loaded = detectors.load(tmp_path / "nero.safetensors")
    assert loaded.centroids_.device.type == "cpu"
    assert torch.equal(loaded.score(test), nero.score(test))


# -- the file ---------------------------------------------------------------------


def test_the_file_is_plain_safetensors_and_json(saved_nero):
    nero, path = saved_nero
    document, tensors = read(path)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then a JSON header
    assert document["format_version"] == saving.FORMAT_VERSION == 1
    assert document["nero_lite_version"] == "0.1.0" and document["detector"] == "nero"
    assert document["params"] == {key: getattr(nero, key) for key in document["params"]} and "pca_fraction" in document["params"]
    fitted = document["fitted"]
    assert fitted["k_"] == nero.k_ and fitted["lambda_"] == nero.lambda_ and fitted["n_features_in_"] == 8
    assert fitted["centroids_"] == {"tensor": "fitted.centroids_"}
    assert torch.equal(tensors["fitted.centroids_"], nero.centroids_)
    assert fitted["pca_"]["estimator"] == "PCA"
    # scikit-learn's components_ are F-ordered: stored transposed, in memory order
    assert fitted["pca_"]["state"]["components_"] == {"array": "fitted.pca_.components_", "axes": [1, 0]}
    assert torch.equal(tensors["fitted.pca_.components_"], torch.from_numpy(nero.pca_.components_.T))


# -- errors -----------------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(error.value)


def test_an_unfitted_detector_that_needs_fitting_is_not_saved(tmp_path):
    with pytest.raises(NotFittedError, match="NeroDetector is not fitted yet: call fit"):
        detectors.create("nero").save(tmp_path / "nero.safetensors")
    assert not list(tmp_path.iterdir())


def test_a_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved detector at"):
        detectors.load(tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError):
        detectors.load(tmp_path)  # a folder is not a saved detector


def test_another_format_version_is_refused(saved_nero):
    _, path = saved_nero
    rewrite(path, lambda document: document.update(format_version=2))
    with pytest.raises(ValueError, match="format version 2; this nero_lite reads 1") as error:
        detectors.load(path)
    one_line(error)


@pytest.mark.parametrize("where", ["tensor", "json"])
def test_a_modified_file_fails_its_checksum(saved_nero, where):
    nero, path = saved_nero
    if where == "tensor":
        data_bytes = bytearray(path.read_bytes())
        data_bytes[-1] ^= 0x01  # one bit of the last tensor
        path.write_bytes(bytes(data_bytes))
    else:
        rewrite(path, lambda document: document["fitted"].update(lambda_=2 * nero.lambda_), fix_checksum=False)
    with pytest.raises(ValueError, match="fails its checksum") as error:
        detectors.load(path)
    one_line(error)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_refused(saved_nero, damage):
    _, path = saved_nero
    content = path.read_bytes()
    path.write_bytes({"truncated": content[: len(content) // 2], "garbage": os.urandom(500), "empty": b""}[damage])
    with pytest.raises(ValueError, match="is not a safetensors file") as error:
        detectors.load(path)
    one_line(error)


def test_other_safetensors_files_are_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="is not a saved nero_lite detector"):
        detectors.load(path)
    save_file({"weight": torch.zeros(2, 2)}, path, metadata={"nero_lite.detector": "{not json"})
    with pytest.raises(ValueError, match="not valid JSON"):
        detectors.load(path)


def test_an_unknown_detector_name_is_refused(saved_nero):
    _, path = saved_nero
    rewrite(path, lambda document: document.update(detector="nope"))
    with pytest.raises(ValueError, match="holds detector 'nope'; expected one of: msp, maxlogit") as error:
        detectors.load(path)
    one_line(error)
    with pytest.raises(ValueError, match="holds detector 'nope'; expected one of: nero$"):
        NeroDetector.load(path)


def test_a_file_of_another_class_is_refused_by_a_class(saved_nero):
    _, path = saved_nero
    with pytest.raises(ValueError, match="holds detector 'nero'; expected one of: knn"):
        detectors.KNNDetector.load(path)
    with pytest.raises(TypeError, match="needs a detector class"):
        detectors.Detector.load(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda document: document["params"].update(no_such_parameter=1),
        lambda document: document["fitted"].update(centroids_={"tensor": "fitted.missing"}),
        lambda document: document["fitted"].update(centroids_={"pickle": "fitted.centroids_"}),
        lambda document: document["fitted"]["pca_"].update(estimator="KMeans"),
        lambda document: document["fitted"].update({"__class__": 1}),
        lambda document: document["fitted"].update(score=1),
    ],
    ids=["parameter", "tensor", "tag", "estimator", "dunder", "method"],
)
def test_an_inconsistent_state_is_refused(saved_nero, edit):
    _, path = saved_nero
    rewrite(path, edit)
    with pytest.raises(ValueError, match="cannot rebuild NeroDetector from the saved state") as error:
        detectors.load(path)
    one_line(error)


def test_state_that_is_not_tensors_or_plain_values_is_not_saved(tmp_path):
    train, _ = data(torch.float32)
    detector = detectors.create("mahalanobis").fit(train)
    detector.extra_ = object()
    with pytest.raises(TypeError, match="cannot save fitted.extra_: a object"):
        detector.save(tmp_path / "m.safetensors")
    detector.extra_ = NeroDetector.estimators[0]()  # a PCA, which Mahalanobis does not list
    with pytest.raises(TypeError, match="cannot save fitted.extra_: a PCA"):
        detector.save(tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


# -- atomic writes ----------------------------------------------------------------


def half_written(monkeypatch):
    """Make the safetensors writer die half-way through the file."""

    def write(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        content = Path(filename).read_bytes()
        Path(filename).write_bytes(content[: len(content) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(saving, "save_file", write)


def test_an_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    train, _ = data(torch.float32)
    nero = detectors.create("nero").fit(train)
    half_written(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        nero.save(tmp_path / "nero.safetensors")
    assert not list(tmp_path.iterdir())


def test_an_interrupted_save_keeps_the_old_file(saved_nero, monkeypatch):
    nero, path = saved_nero
    before = path.read_bytes()
    train, test = data(torch.float32)
    half_written(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        detectors.create("knn", k=3).fit(train).save(path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == [path.name]
    monkeypatch.undo()
    assert torch.equal(detectors.load(path).score(test), nero.score(test))


def test_a_nero_saved_before_the_rename_of_its_centroid_points_loads(tmp_path):
    """``references_`` became ``centroid_points_``: a file with the old name loads into the new one."""
    import warnings

    train, test = split(random_outputs())
    nero = detectors.create("nero").fit(train)
    expected = nero.score(test)
    nero.__dict__["references_"] = nero.__dict__.pop("centroid_points_")  # as the previous release saved it
    nero.save(tmp_path / "old.safetensors")
    loaded = detectors.load(tmp_path / "old.safetensors")
    assert "references_" not in vars(loaded) and torch.equal(loaded.score(test), expected)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert loaded.references_ is loaded.centroid_points_
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
