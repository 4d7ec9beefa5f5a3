"""``python -m nero_lite fit`` and ``flag`` on a tiny fake ImageFolder tree, and the bundle they share."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from image_folders import colour_tree, one_line_error
from nero_lite import bundle as bundles
from nero_lite import cli
from nero_lite.data import Preprocessing, read_imagefolder


def fit_args(root: Path, *extra: str) -> list[str]:
    """``fit`` on the tree, 16-pixel images, two epochs, into root/bundle."""
    return ["fit", "--train", str(root / "train"), "--size", "16", "--epochs", "2", "--out", str(root / "bundle"), *extra]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, one_torch_thread):
    """A tree, the bundle ``fit`` wrote from it (validation images: id/), and the objects it saved."""
    root = colour_tree(tmp_path_factory.mktemp("fit_flag"))
    saved = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(root / "cache"))
        real = bundles.Bundle.save

        def spy(bundle, folder):
            saved.update(bundle=bundle, pool=bundle.pool)
            return real(bundle, folder)

        patch.setattr(bundles.Bundle, "save", spy)
        assert cli.main(fit_args(root, "--val", str(root / "id"), "--mask-corner")) == 0
    return root, saved


@pytest.fixture(scope="module")
def flagged(fitted):
    """``flag`` of the OOD images with the fitted bundle, into root/report."""
    root, _ = fitted
    assert cli.main(["flag", str(root / "bundle"), str(root / "ood"), "--out", str(root / "report"), "--explain", "3",
                     "--device", "cpu"]) == 0
    return root


def _flags(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "flags.csv", keep_default_na=False)


def test_fit_writes_a_complete_bundle(fitted):
    root, _ = fitted
    document = json.loads((root / "bundle" / "bundle.json").read_text())
    assert document["classes"] == ["blue", "green", "red"] and document["arch"] == "resnet18d"
    assert document["preprocessing"]["size"] == 16 and document["preprocessing"]["mask_corner"] is True
    assert set(document["detectors"]) == set(cli.FIT_DETECTORS)
    assert set(document["versions"]) == {"nero_lite", "torch", "timm"}
    assert document["info"]["images"] == {"train": 36, "val": 12}
    assert sorted(p.name for p in (root / "bundle").iterdir()) == ["bundle.json", "detectors", "model.safetensors",
                                                                     "references.safetensors"]
    assert document["references"]["count"] == 36  # 12 training images per class, fewer than POOL_PER_CLASS
    bundle = bundles.load_bundle(root / "bundle")
    val = read_imagefolder(root / "id", size=16, progress=False)
    scores = bundle.score(val, device="cpu", progress=False)
    for name, threshold in bundle.thresholds.items():  # 95 % ID TPR on the 12 validation images: all of them kept
        assert (scores.scores[name] >= threshold).all() and threshold == scores.scores[name].min().item()
        assert not scores.flagged[name].any()


def test_flags_csv_columns_and_values(flagged):
    table = _flags(flagged / "report")
    assert list(table.columns) == list(cli.FLAG_COLUMNS)
    assert len(table) == 10 and all(Path(f).is_file() for f in table.file)
    assert sorted(table.file) == sorted(str(p) for p in (flagged / "ood").rglob("*.png"))
    threshold = bundles.load_bundle(flagged / "bundle").thresholds["nero"]
    assert (table.threshold == threshold).all()
    assert (table.flagged == (table.score < table.threshold)).all()
    assert set(table.predicted) | set(table.nearest) <= {"red", "green", "blue"}
    for cell in table.top_neurons:
        pairs = [pair.split(":") for pair in cell.split(";")]
        assert len(pairs) == bundles.TOP_NEURONS and all(0 <= int(j) < 512 for j, _ in pairs)
        contributions = [float(c) for _, c in pairs]
        assert contributions == sorted(contributions, reverse=True)
    run = json.loads((flagged / "report" / "run.json").read_text())
    assert run["images"] == {"found": 10, "scored": 10, "flagged": int(table.flagged.sum())}
    assert run["explained"] == min(3, int(table.flagged.sum()))


def test_flag_scores_are_bit_identical_to_the_saved_objects(fitted, flagged):
    """The scores of flag (a loaded bundle) equal those of the model and detectors fit saved, bit for bit."""
    _, saved = fitted
    original = saved["bundle"]
    images = read_imagefolder(flagged / "ood", size=16, progress=False)
    expected = original.score(images, device="cpu", progress=False)
    table = _flags(flagged / "report").set_index("file").loc[images.files]
    assert np.array_equal(table.score.to_numpy(), expected.scores["nero"].double().numpy())
    assert list(table.nearest) == [original.classes[k] for k in expected.nearest.tolist()]
    loaded = bundles.load_bundle(flagged / "bundle").score(images, device="cpu", progress=False)
    for name in original.detectors:
        assert torch.equal(loaded.scores[name], expected.scores[name]), name
    assert torch.equal(loaded.top_neurons, expected.top_neurons) and torch.equal(loaded.predicted, expected.predicted)


def test_flagging_the_validation_images_flags_at_most_one(fitted, tmp_path):
    """The threshold accepts every validation image (95 % of 12 rounds up to 12); one ulp of batch rounding at most."""
    root, _ = fitted
    assert cli.main(["flag", str(root / "bundle"), str(root / "id"), "--out", str(tmp_path), "--explain", "0",
                     "--batch-size", "5"]) == 0
    table = _flags(tmp_path)
    assert len(table) == 12 and table.flagged.sum() <= 1


def test_report_is_one_self_contained_page(flagged):
    page = (flagged / "report" / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    table = _flags(flagged / "report")
    explained = min(3, int(table.flagged.sum()))
    concepts = explained * bundles.CONCEPTS * (1 + bundles.REFERENCE_PATCHES)  # per neuron: its map and its patches
    assert len(sources) == 1 + int(table.flagged.sum()) + explained + concepts  # histogram, images, maps, concepts
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.load()
            assert image.width > 0
    for name in table.file[table.flagged]:
        assert name in page


def test_val_fraction_holds_out_a_seeded_share_of_each_class(tmp_path, monkeypatch, one_torch_thread):
    root = colour_tree(tmp_path)
    monkeypatch.setenv("NERO_LITE_CACHE", str(root / "cache"))
    seen = {}
    monkeypatch.setattr(cli.fit, "fit", lambda args, train, val, seconds, given: seen.update(train=train, val=val))
    assert cli.main(fit_args(root, "--val-fraction", "0.25", "--detectors", "msp")) == 0
    train, val = seen["train"], seen["val"]
    assert val.counts() == {"blue": 3, "green": 3, "red": 3} and train.counts() == {"blue": 9, "green": 9, "red": 9}
    assert not set(train.files) & set(val.files)
    assert not (root / "bundle").exists()


# --------------------------------------------------------------------------- bad input
def test_bad_flag_input_is_one_line_before_any_image_is_read(fitted, tmp_path, capsys, monkeypatch):
    root, _ = fitted
    monkeypatch.setattr(cli.flag, "flag", lambda *a: pytest.fail("images were scored before the input was checked"))
    report = str(tmp_path / "report")
    assert "BUNDLE: no bundle folder at" in one_line_error(["flag", str(tmp_path / "none"), str(root / "ood"), "--out", report], capsys)
    assert "IMAGES_DIR: folder not found" in one_line_error(["flag", str(root / "bundle"), str(tmp_path / "none"), "--out", report], capsys)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    assert "IMAGES_DIR: no image files under" in one_line_error(["flag", str(root / "bundle"), str(tmp_path / "empty"), "--out", report], capsys)
    (tmp_path / "a_file").write_text("x")
    assert "--out: " in one_line_error(["flag", str(root / "bundle"), str(root / "ood"), "--out", str(tmp_path / "a_file")], capsys)
    line = one_line_error(["flag", str(root / "bundle"), str(root / "ood"), "--out", report, "--detector", "odin"], capsys)
    assert "the bundle has no detector 'odin'; it has msp, energy, mahalanobis, knn, nero" in line
    assert line.startswith("python -m nero_lite flag: error:") and line.endswith("(see python -m nero_lite flag --help)")
    assert not (tmp_path / "report").exists()


def test_incomplete_or_damaged_bundles_are_refused_in_one_line(fitted, tmp_path, capsys, monkeypatch):
    import shutil

    root, _ = fitted
    monkeypatch.setattr(cli.flag, "flag", lambda *a: pytest.fail("images were scored with a bad bundle"))
    copy = tmp_path / "bundle"
    shutil.copytree(root / "bundle", copy)
    argv = ["flag", str(copy), str(root / "ood"), "--out", str(tmp_path / "report")]
    data = bytearray((copy / "detectors" / "nero.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "detectors" / "nero.safetensors").write_bytes(bytes(data))
    assert "is damaged: detectors/nero.safetensors is not the file the bundle was saved with" in one_line_error(argv, capsys)
    (copy / "model.safetensors").unlink()
    assert "is damaged: model file model.safetensors is missing" in one_line_error(argv, capsys)
    (copy / "bundle.json").write_text("{not json")
    assert "bundle.json is not valid JSON" in one_line_error(argv, capsys)
    (copy / "bundle.json").unlink()
    assert "is not a complete bundle: it has no bundle.json" in one_line_error(argv, capsys)
    with pytest.raises(FileNotFoundError, match="no bundle folder"):
        bundles.load_bundle(tmp_path / "none")


def test_bad_fit_input_is_one_line_before_any_image_is_read(tmp_path, capsys, monkeypatch):
    root = colour_tree(tmp_path)
    monkeypatch.setenv("NERO_LITE_CACHE", str(root / "cache"))
    monkeypatch.setattr(cli.fit, "read_fit", lambda args: pytest.fail("images were read before the options were checked"))
    assert "not allowed with argument" in one_line_error(fit_args(root, "--val", str(root / "id"), "--val-fraction", "0.2"), capsys)
    assert "must lie strictly between 0 and 1" in one_line_error(fit_args(root, "--val-fraction", "1.5"), capsys)
    assert "unknown detector(s) foo" in one_line_error(fit_args(root, "--detectors", "nero,foo"), capsys)
    assert "--val is the --train folder" in one_line_error(fit_args(root, "--val", str(root / "train")), capsys)
    assert "--val: folder not found" in one_line_error(fit_args(root, "--val", str(root / "none")), capsys)
    assert "['grey', 'yellow']" in one_line_error(fit_args(root, "--val", str(root / "ood")), capsys)
    assert "a classifier needs at least two" in one_line_error(fit_args(root, "--train", str(root / "ood" / "grey")), capsys)
    (root / "a_file").write_text("x")
    argv = fit_args(root)
    argv[argv.index("--out") + 1] = str(root / "a_file")
    assert "--out: " in one_line_error(argv, capsys)
    assert "multiple of 8" in one_line_error([*fit_args(root), "--arch", "vit", "--size", "30"], capsys)
    assert not (root / "bundle").exists()


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return capsys.readouterr().out


def test_help_documents_fit_and_flag(capsys):
    fit_help = _help("fit", capsys)
    for option in ("--train", "--val", "--val-fraction", "--out", "--arch", "--weights", "--pretrained", "--recipe",
                   "--size", "--mask-corner", "--mask-text", "--detectors", "--epochs", "--seed", "--device", "--no-cache"):
        assert option in fit_help
    flag_help = _help("flag", capsys)
    for option in ("BUNDLE", "IMAGES_DIR", "--out", "--detector", "--explain", "--batch-size"):
        assert option in flag_help


# --------------------------------------------------------------------------- the reference pool and the concepts
def _decoded(source: str) -> np.ndarray:
    """The pixels of a ``data:image/png;base64`` source."""
    with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


def _shrunk(shown: np.ndarray, original: np.ndarray) -> np.ndarray:
    """A page image brought back to the size of ``original`` (the page enlarges by a whole factor, nearest neighbour)."""
    scale = shown.shape[0] // original.shape[0]
    assert shown.shape[:2] == (original.shape[0] * scale, original.shape[1] * scale)
    return shown[::scale, ::scale]


def _images(card: str, alt: str) -> list[tuple[str, dict[str, str]]]:
    """The sources and ``data-*`` attributes of the ``<img alt=ALT>`` of one card of the page."""
    found = []
    for tag in re.findall(r"<img [^>]*>", card):
        if f'alt="{alt}"' in tag:
            found.append((re.search(r'src="([^"]*)"', tag).group(1), dict(re.findall(r'data-(\w+)="([^"]*)"', tag))))
    return found


def test_the_reference_pool_round_trips_bit_identically(fitted):
    root, saved = fitted
    given = saved["pool"]
    train = read_imagefolder(root / "train", size=16, progress=False)
    assert given.counts() == {"blue": 12, "green": 12, "red": 12}
    masked = Preprocessing(16, mask_corner=True).apply(given)
    assert torch.equal(masked, given.images)  # read_fit masked the training images already
    loaded = bundles.load_bundle(root / "bundle").pool
    assert loaded.images.dtype == torch.uint8 and torch.equal(loaded.images, masked)
    assert torch.equal(loaded.labels, given.labels) and loaded.classes == train.classes
    document = json.loads((root / "bundle" / "bundle.json").read_text())
    assert document["references"]["sha256"] == bundles.sha256(root / "bundle" / "references.safetensors")


def test_reference_pool_is_a_seeded_choice_of_at_most_per_class():
    from nero_lite.data import ImageSet

    labels = torch.tensor([0] * 5 + [1] * 40)
    images = ImageSet(torch.arange(45, dtype=torch.uint8).view(45, 1, 1, 1).expand(45, 3, 2, 2).clone(), labels, ["a", "b"])
    pool = bundles.reference_pool(images, per_class=32, seed=1)
    assert pool.counts() == {"a": 5, "b": 32} and pool.files is None
    chosen = pool.images[:, 0, 0, 0].long()
    assert torch.equal(chosen, chosen.sort().values) and torch.equal(labels[chosen], pool.labels)  # in their order
    assert torch.equal(bundles.reference_pool(images, 32, seed=1).images, pool.images)
    assert not torch.equal(bundles.reference_pool(images, 32, seed=2).images, pool.images)


def test_the_page_shows_the_concepts_and_patches_explain_returns(fitted, tmp_path, monkeypatch):
    """Every concept map and reference patch of report.html is, pixel for pixel, the one explain() returned."""
    root, _ = fitted
    returned = []
    real = bundles.explain

    def spy(*args, **kwargs):
        reports = real(*args, **kwargs)
        returned.extend(reports)
        return reports

    monkeypatch.setattr(bundles, "explain", spy)
    assert cli.main(["flag", str(root / "bundle"), str(root / "ood"), "--out", str(tmp_path), "--explain", "2",
                     "--device", "cpu"]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    cards = [card for card in re.split(r'<div class="card(?=[ "])', page)[1:] if card.startswith(' explained"')]
    assert len(returned) == len(cards) == 2
    table = _flags(tmp_path).sort_values("score")
    for card, report, file in zip(cards, returned, table.file):
        assert f"<b>{file}</b>" in card and report.references, file  # the lowest scores, in order
        maps = _images(card, "concept map")
        assert [int(data["channel"]) for _, data in maps] == report.channels.tolist()
        patches = _images(card, "reference patch")
        expected = [(reference.channel, index, patch) for reference in report.references
                    for index, patch in zip(reference.indices.tolist(), reference.patches())]
        assert len(patches) == len(expected) == bundles.CONCEPTS * bundles.REFERENCE_PATCHES
        for (source, data), (channel, index, patch) in zip(patches, expected):
            assert (int(data["channel"]), int(data["index"])) == (channel, index)
            assert np.array_equal(_shrunk(_decoded(source), patch), patch)
        (why, _), = _images(card, "why flagged")  # the report's score map: red where it pushes away, blue towards
        shown = _shrunk(_decoded(why), report.score_map).astype(int)
        strong = np.abs(report.score_map) > 0.1 * np.abs(report.score_map).max()
        assert strong.any()
        red = shown[..., 0] > shown[..., 2]
        assert np.array_equal(red[strong], report.score_map[strong] > 0)


def test_an_old_bundle_without_a_pool_still_flags_with_the_score_maps_only(fitted, tmp_path):
    import shutil

    root, _ = fitted
    old = tmp_path / "old"
    shutil.copytree(root / "bundle", old)
    document = json.loads((old / "bundle.json").read_text())
    del document["references"]
    (old / "bundle.json").write_text(json.dumps(document))
    (old / "references.safetensors").unlink()
    assert bundles.load_bundle(old).pool is None
    for bundle, out in ((old, tmp_path / "old_report"), (root / "bundle", tmp_path / "report")):
        assert cli.main(["flag", str(bundle), str(root / "ood"), "--out", str(out), "--explain", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "old_report" / "flags.csv").read_bytes() == (tmp_path / "report" / "flags.csv").read_bytes()
    page = (tmp_path / "old_report" / "report.html").read_text(encoding="utf-8")
    assert cli.NO_POOL_NOTE in page
    assert 'alt="why flagged"' in page and 'alt="concept map"' not in page and 'alt="reference patch"' not in page
    assert page.count('alt="why flagged"') == min(2, int(_flags(tmp_path / "report").flagged.sum()))
    assert json.loads((tmp_path / "old_report" / "run.json").read_text())["reference_pool"] is False


def test_a_damaged_reference_pool_is_refused(fitted, tmp_path):
    import shutil

    root, _ = fitted
    copy = tmp_path / "bundle"
    shutil.copytree(root / "bundle", copy)
    data = bytearray((copy / "references.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "references.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="references.safetensors is not the file the bundle was saved with"):
        bundles.load_bundle(copy)
    (copy / "references.safetensors").unlink()
    with pytest.raises(ValueError, match="reference pool file references.safetensors is missing"):
        bundles.load_bundle(copy)


def test_reports_need_nero(fitted):
    root, _ = fitted
    bundle = bundles.load_bundle(root / "bundle")
    bundle.detectors.pop("nero")
    with pytest.raises(ValueError, match="no NERO detector"):
        bundle.reports(bundle.pool.images[:1], device="cpu")


def test_a_bundle_is_built_by_keyword_and_saves_and_loads_itself(fitted, tmp_path):
    root, saved = fitted
    bundle = saved["bundle"]
    with pytest.raises(TypeError):
        bundles.Bundle(bundle.model, bundle.arch, bundle.preprocessing, bundle.classes, bundle.detectors)  # keywords only
    bundle.save(tmp_path / "again")
    loaded = bundles.Bundle.load(tmp_path / "again")
    assert loaded.preprocessing == Preprocessing(16, mask_corner=True) and loaded.size == 16
    assert torch.equal(loaded.pool.images, bundle.pool.images) and loaded.thresholds == bundle.thresholds
    with pytest.raises(ValueError, match="not in the bundle"):
        bundles.Bundle(model=bundle.model, arch=bundle.arch, preprocessing=bundle.preprocessing, classes=bundle.classes,
                       detectors={}, thresholds={"nero": 0.0}, train_fingerprint="")
    # the previous release's spellings still work, with a deprecation warning
    with pytest.warns(DeprecationWarning, match="Bundle.pool"):
        assert loaded.references is loaded.pool
    with pytest.warns(DeprecationWarning, match="POOL_PER_CLASS"):
        assert bundles.REFERENCES_PER_CLASS == bundles.POOL_PER_CLASS
    with pytest.warns(DeprecationWarning, match="Bundle"):
        old = bundles.save_bundle(tmp_path / "old", bundle.model, bundle.arch, 16, True, False, bundle.classes,
                                  bundle.detectors, bundle.thresholds, bundle.train_fingerprint, references=bundle.pool)
    assert bundles.load_bundle(tmp_path / "old").preprocessing == old.preprocessing
