"""``python -m nero_lite evaluate`` (alias ``score``) on a tiny fake ImageFolder tree, and data_scripts/split_for_cli.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import re

import numpy as np
import pandas as pd
import pytest
import torch

from image_folders import colour_tree, draw, one_line_error
from nero_lite import cli, compare, detectors, models, training

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """train/ and id/ with three colour classes, ood/ with two; a private cache."""
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "cache"))
    return colour_tree(tmp_path)


def _args(tree: Path, *extra: str) -> list[str]:
    return ["score", "--train", str(tree / "train"), "--id", str(tree / "id"), "--ood", str(tree / "ood"),
            "--size", "16", "--epochs", "2", "--out", str(tree / "out"), *extra]


def test_score_writes_scores_metrics_and_run(tree, capsys):
    assert cli.main(_args(tree, "--detectors", "msp,energy,nero,odin", "--mask-corner")) == 0
    out = tree / "out"

    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert list(scores.columns) == ["file", "set", "ood_class", "detector", "score", "predicted"]
    assert set(scores.detector) == {"msp", "energy", "nero", "odin"}
    per_detector = scores.groupby("detector").size()
    assert (per_detector == 12 + 10).all()  # 12 ID test images, 10 OOD images
    ids, oods = scores[scores.set == "id"], scores[scores.set == "ood"]
    assert (ids.ood_class == "").all() and set(oods.ood_class) == {"grey", "yellow"}
    assert set(scores.predicted) <= {"red", "green", "blue"}
    assert all(Path(f).exists() for f in scores.file)
    assert np.isfinite(scores.score).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert {tuple(sorted(row)) for row in metrics} == {("aupr_in", "aupr_out", "auroc", "detector", "fpr95", "ood_class")}
    assert {(row["detector"], row["ood_class"]) for row in metrics} == {
        (d, c) for d in ("msp", "energy", "nero", "odin") for c in ("grey", "yellow", "all")
    }
    assert all(0.0 <= row[m] <= 1.0 for row in metrics for m in ("auroc", "fpr95", "aupr_in", "aupr_out"))

    markdown = (out / "metrics.md").read_text().splitlines()
    assert markdown[0].startswith("| detector | ood_class | auroc") and len(markdown) == 2 + len(metrics)

    run = json.loads((out / "run.json").read_text())
    assert run["images"] == {"train": 36, "id": 12, "ood": 10}
    assert run["skipped_files"] == []
    assert run["options"]["mask_corner"] is True
    assert set(run["seconds"]) == {"read", "train", "extract", "detectors", "report", "write"}
    assert run["explained"] == min(8, len(_gallery(out / "report.html")))
    assert "| all |" in capsys.readouterr().out


def test_a_small_training_set_adapts_knn_and_neco_and_skips_what_cannot_be_fitted(tree, capsys, monkeypatch):
    """36 training images: KNN's k=50 and NECO's dim=100 do not fit; SHE is made to fail; the rest is written."""
    def no_correct_sample(self, train):
        raise ValueError("train: class(es) [0] have no correctly classified training sample")

    monkeypatch.setattr(detectors.SHEDetector, "_fit", no_correct_sample)
    assert cli.main(_args(tree, "--detectors", "msp,knn,neco,she")) == 0
    run = json.loads((tree / "out" / "run.json").read_text())
    assert run["detectors"]["adapted"] == {
        "knn": "k=36 instead of 50: there are 36 training images",
        "neco": "dim=36 instead of 100: at most min(training images, features) = 36",
    }
    assert run["detectors"]["skipped"] == {"she": "train: class(es) [0] have no correctly classified training sample"}
    assert set(pd.read_csv(tree / "out" / "scores.csv").detector) == {"msp", "knn", "neco"}
    err = capsys.readouterr().err
    assert "warning: skipped detector she" in err and err.count("skipped detector she") == 1


def test_skipped_files_are_in_run_json_on_cached_reruns_too(tree):
    (tree / "ood" / "grey" / "broken.png").write_bytes(b"not a png")
    draw(tree / "ood" / "loose", 1, (0, 0, 0), seed=0)
    (tree / "ood" / "loose" / "img00.png").rename(tree / "ood" / "stray.png")
    (tree / "ood" / "loose").rmdir()
    for run in ("first", "cached"):
        with pytest.warns(UserWarning, match="skipped 2 image file"):
            assert cli.main(_args(tree, "--detectors", "msp")) == 0
        skipped = json.loads((tree / "out" / "run.json").read_text())["skipped_files"]
        assert skipped == [{"file": str(tree / "ood" / "stray.png"), "reason": "not in a class folder"},
                           {"file": str(tree / "ood" / "grey" / "broken.png"), "reason": "unreadable"}], run


def test_second_run_reuses_the_trained_model(tree):
    cli.main(_args(tree, "--detectors", "msp"))
    cli.main(_args(tree, "--detectors", "msp"))
    assert json.loads((tree / "out" / "run.json").read_text())["model_from_cache"] is True


def test_missing_folder_is_one_line_error(tree, capsys):
    argv = _args(tree)
    argv[argv.index("--ood") + 1] = str(tree / "nowhere")
    assert "--ood: folder not found" in one_line_error(argv, capsys)


def test_empty_class_is_one_line_error(tree, capsys):
    (tree / "ood" / "empty").mkdir()
    assert "'empty' has no image files" in one_line_error(_args(tree), capsys)


def test_test_class_missing_from_train_is_one_line_error(tree, capsys):
    draw(tree / "id" / "purple", 3, (150, 40, 150), seed=30)
    assert "['purple']" in one_line_error(_args(tree), capsys)


def test_unknown_detector_and_missing_command(tree, capsys):
    assert "unknown detector(s) foo" in one_line_error(_args(tree, "--detectors", "msp,foo"), capsys)
    assert "required" in one_line_error([], capsys)


def _option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda tree, argv: _option(argv, "--train", str(tree / "train" / "red" / "img00.png")), "is a file"),
        (lambda tree, argv: _option(argv, "--ood", str(tree / "train")), "--ood is the --train folder"),
        (lambda tree, argv: _option(argv, "--id", str(tree / "train") + "/"), "--id is the --train folder"),
        (lambda tree, argv: [*argv, "--device", "gpu"], "--device: unknown device 'gpu'"),
        (lambda tree, argv: [*argv, "--arch", "vit", "--size", "30"], "multiple of 8"),
    ],
    ids=["file-for-folder", "ood-is-train", "id-is-train", "device-gpu", "vit-size"],
)
def test_bad_options_end_in_one_line_before_anything_is_read(tree, capsys, monkeypatch, change, expected):
    monkeypatch.setattr(cli.evaluate, "read", lambda args: pytest.fail("images were read before the options were checked"))
    line = one_line_error(change(tree, _args(tree)), capsys)
    assert expected in line and line.startswith("python -m nero_lite score: error:")
    assert line.endswith("(see python -m nero_lite score --help)")


def test_unusable_outputs_are_refused_before_anything_is_read(tree, capsys, monkeypatch):
    monkeypatch.setattr(cli.evaluate, "read", lambda args: pytest.fail("images were read before the outputs were checked"))
    (tree / "a_file").write_text("x")
    assert "--out: " in one_line_error(_option(_args(tree), "--out", str(tree / "a_file")), capsys)
    assert "cannot be created" in one_line_error(_option(_args(tree), "--out", str(tree / "a_file" / "out")), capsys)
    monkeypatch.setenv("NERO_LITE_CACHE", str(tree / "a_file" / "cache"))
    assert "the cache (NERO_LITE_CACHE)" in one_line_error(_args(tree), capsys)
    assert not (tree / "out").exists()


def test_a_read_only_out_folder_is_refused_before_anything_is_read(tree, capsys, monkeypatch):
    """As a user without write permission sees it (simulated: the tests may run as root, who may write anywhere)."""
    monkeypatch.setattr(cli.evaluate, "read", lambda args: pytest.fail("images were read before the outputs were checked"))
    (tree / "out").mkdir()

    def read_only(dir=None, **kwargs):
        if Path(dir) == tree / "out":
            raise PermissionError(13, "Permission denied")
        return open(os.devnull, "wb")

    monkeypatch.setattr(cli.options.tempfile, "TemporaryFile", read_only)
    line = one_line_error(_args(tree), capsys)
    assert "--out: " in line and "is not writable (Permission denied)" in line


def test_no_cache_runs_with_an_unusable_cache_and_touches_none(tree, monkeypatch):
    (tree / "a_file").write_text("x")
    monkeypatch.setenv("NERO_LITE_CACHE", str(tree / "a_file" / "cache"))
    assert cli.main(_args(tree, "--detectors", "msp", "--no-cache")) == 0
    monkeypatch.setenv("NERO_LITE_CACHE", str(tree / "unused"))
    assert cli.main(_args(tree, "--detectors", "msp", "--no-cache")) == 0
    assert not (tree / "unused").exists()


def test_a_failed_write_leaves_the_previous_results_whole(tree, monkeypatch):
    assert cli.main(_args(tree, "--detectors", "msp")) == 0
    before = {p.name: p.read_bytes() for p in (tree / "out").iterdir()}
    assert sorted(before) == ["metrics.json", "metrics.md", "report.html", "run.json", "scores.csv"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cli.evaluate, "_markdown", lambda metrics: broken())  # fails after scores.csv and metrics.json
    with pytest.raises(OSError, match="disk full"):
        cli.main(_args(tree, "--detectors", "msp,energy"))
    assert {p.name: p.read_bytes() for p in (tree / "out").iterdir()} == before  # no staging folder left either


def test_an_interrupt_is_one_line(tree, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.evaluate, "read", interrupted)
    assert cli.main(_args(tree)) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0]


def test_cuda_without_a_gpu_is_refused_up_front(tree, capsys, monkeypatch):
    monkeypatch.setattr(cli.evaluate, "read", lambda args: pytest.fail("images were read before the device was checked"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert "CUDA is not available on this machine" in one_line_error([*_args(tree), "--device", "cuda"], capsys)


def test_one_training_class_is_refused_before_reading(tree, capsys):
    for name in ("green", "blue"):
        for folder in (tree / "train" / name, tree / "id" / name):
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()
    assert "a classifier needs at least two ID classes" in one_line_error(_args(tree), capsys)
    assert not (tree / "cache").exists() and not (tree / "out").exists()


def test_a_bar_in_a_class_name_keeps_the_markdown_table_intact(tree):
    (tree / "ood" / "yellow").rename(tree / "ood" / "yellow|green")
    assert cli.main(_args(tree, "--detectors", "msp")) == 0
    rows = (tree / "out" / "metrics.md").read_text().splitlines()
    assert {row.replace("\\|", "").count("|") for row in rows} == {7}  # 6 columns on every row
    assert "yellow\\|green" in rows[2] + rows[3]


# --------------------------------------------------------------------------- starting weights and recipes
def _state_file(path: Path, num_classes: int) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(7)
    model = timm.create_model("resnet18", num_classes=num_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_a_whole_classifier_in_weights_is_used_as_it_is(tree, capsys, monkeypatch):
    monkeypatch.setattr(training, "train_classifier", lambda *a, **k: pytest.fail("a whole classifier was trained again"))
    built, create = [], models.create_model
    monkeypatch.setattr(models, "create_model", lambda *a, **k: built.append(a) or create(*a, **k))
    weights = _state_file(tree / "mine.safetensors", num_classes=3)
    assert cli.main(_args(tree, "--arch", "resnet18", "--weights", str(weights), "--detectors", "msp")) == 0
    assert len(built) == 1  # the model built to check --weights is the one used
    assert "as it is" in capsys.readouterr().err
    run = json.loads((tree / "out" / "run.json").read_text())
    assert run["model_used_as_is"] and run["options"]["weights"] == str(weights)


def test_other_weights_and_the_papers_recipe_are_fine_tuned(tree, capsys, monkeypatch):
    seen = {}
    real = training.train_classifier

    def spy(data, arch, recipe, **kwargs):
        seen.update(recipe=recipe, **kwargs)
        return real(data, arch, recipe, **kwargs)

    monkeypatch.setattr(training, "train_classifier", spy)
    real_compare = compare.compare_detectors

    def compare_spy(outputs, splits, created, **kwargs):
        seen.update(react=dict(vars(created["react"])))  # before fitting: the hyperparameters
        return real_compare(outputs, splits, created, **kwargs)

    monkeypatch.setattr(compare, "compare_detectors", compare_spy)
    weights = _state_file(tree / "imagenet.safetensors", num_classes=1000)
    argv = _args(tree, "--arch", "resnet18", "--weights", str(weights), "--recipe", "paper", "--preset", "official",
                 "--detectors", "msp,react")
    assert cli.main(argv) == 0
    assert "fine-tuning from" in capsys.readouterr().err
    assert seen["weights"] == weights and not seen["pretrained"]
    assert seen["recipe"] == replace(training.Recipe.paper(), epochs=2)
    assert seen["react"] == vars(detectors.create("react", "official", "resnet18")) != vars(detectors.create("react"))
    assert not json.loads((tree / "out" / "run.json").read_text())["model_used_as_is"]


def test_bad_weights_end_in_one_line_before_any_training(tree, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(training, "train_classifier", lambda *a, **k: pytest.fail("training started before the weights were checked"))
    assert "--weights: weights file not found" in one_line_error(_args(tree, "--weights", str(tree / "absent.pt")), capsys)
    torch.save({"model": object()}, tree / "pickled.pt")
    assert "is not a safetensors or weights-only" in one_line_error(_args(tree, "--weights", str(tree / "pickled.pt")), capsys)
    resnet = _state_file(tree / "resnet.safetensors", num_classes=3)
    assert "does not hold vit weights" in one_line_error(_args(tree, "--arch", "vit", "--weights", str(resnet)), capsys)
    assert "unknown architecture 'resnet_nonexistent'" in one_line_error(_args(tree, "--arch", "resnet_nonexistent"), capsys)
    assert "not allowed with argument" in one_line_error(_args(tree, "--pretrained", "--weights", str(resnet)), capsys)
    assert "multiple of 16" in one_line_error(_option(_args(tree, "--arch", "deit_small"), "--size", "24"), capsys)
    assert "--preset official: unknown architecture family" in one_line_error(_args(tree, "--arch", "mobilenetv3_small_050", "--preset", "official"), capsys)
    assert not (tree / "out").exists()


def test_help_documents_every_option(capsys):
    texts = []
    for command in ("evaluate", "score"):  # in this process; the module's own entry point is run below
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]  # score is evaluate under its former name
    for option in ("--train", "--id", "--ood", "--arch", "--size", "--epochs", "--seed", "--mask-corner", "--explain",
                   "--mask-text", "--detectors", "--out", "--device", "--no-cache", "--pretrained", "--weights", "--recipe", "--preset"):
        assert option in texts[0]
    assert "report.html" in texts[0]
    top = subprocess.run([sys.executable, "-m", "nero_lite", "--help"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert "evaluate (score)" in top


def test_help_and_usage_errors_import_no_torch():
    """Parsing loads nothing heavy: --help and a one-line usage error come before torch, timm or pandas."""
    probe = (
        "import sys\n"
        "from nero_lite.cli import main\n"
        "for argv in (['--help'], ['fit', '--help'], ['flag', '--help'], ['evaluate', '--train', 'x'], ['fit', '--detectors', 'nope']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        assert done.code in (0, 2), done.code\n"
        "print(sorted(m for m in ('torch', 'timm', 'pandas', 'numpy', 'zennit', 'PIL') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert "unknown detector(s) nope" in run.stderr


def test_the_names_the_parser_offers_are_the_packages():
    from nero_lite import constants, data
    from nero_lite.detectors import presets

    assert tuple(detectors.available()) == constants.DETECTORS
    assert models.ARCHITECTURES is constants.ARCHITECTURES and presets.PRESETS is constants.PRESETS
    assert (data.CORNER_FRACTION, data.TEXT_MARGIN_FRACTION) == (constants.CORNER_FRACTION, constants.TEXT_MARGIN_FRACTION)


# --------------------------------------------------------------------------- evaluate: score's files and report.html
def _gallery(page: Path) -> list[str]:
    """The cards of report.html's gallery."""
    return re.split(r'<div class="card(?=[ "])', page.read_text(encoding="utf-8"))[1:]


BUNDLE_SCORE_CALLS: list[int] = []


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, one_torch_thread) -> Path:
    """``score`` once to train and cache, then ``evaluate`` into evaluate/ and ``score`` into score/, both from the cache."""
    root = colour_tree(tmp_path_factory.mktemp("evaluate"))
    from nero_lite.bundle import Bundle

    def counted_score(self, *args, **kwargs):  # evaluate reads NERO's nearest class from its own extraction
        BUNDLE_SCORE_CALLS.append(1)
        return unpatched_score(self, *args, **kwargs)

    unpatched_score = Bundle.score
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(root / "cache"))
        patch.setattr(Bundle, "score", counted_score)
        for command, out in (("score", "warm"), ("evaluate", "evaluate"), ("score", "score")):
            argv = _args(root, "--detectors", "msp,nero,energy", "--explain", "2", "--device", "cpu")
            argv[0] = command
            assert cli.main(_option(argv, "--out", str(root / out))) == 0
    return root


def test_score_and_evaluate_write_identical_files(evaluated):
    names = sorted(p.name for p in (evaluated / "evaluate").iterdir())
    assert names == ["metrics.json", "metrics.md", "report.html", "run.json", "scores.csv"]
    assert names == sorted(p.name for p in (evaluated / "score").iterdir())
    for name in ("metrics.json", "metrics.md", "report.html", "scores.csv"):
        assert (evaluated / "evaluate" / name).read_bytes() == (evaluated / "score" / name).read_bytes(), name
    runs = [json.loads((evaluated / out / "run.json").read_text()) for out in ("evaluate", "score")]
    for run in runs:
        del run["seconds"], run["options"]["out"]
    assert runs[0]["options"].pop("command") == "evaluate" and runs[1]["options"].pop("command") == "score"
    assert runs[0] == runs[1] and runs[0]["model_from_cache"] and runs[0]["explained"] == 2


def test_the_evaluate_report_holds_the_metrics_of_metrics_json(evaluated):
    page = (evaluated / "evaluate" / "report.html").read_text(encoding="utf-8")
    cells = re.findall(r'<td data-detector="([^"]*)" data-ood="([^"]*)" data-metric="([^"]*)">([^<]*)</td>', page)
    metrics = json.loads((evaluated / "evaluate" / "metrics.json").read_text())
    expected = {(row["detector"], row["ood_class"], metric): f"{row[metric]:.4f}" for row in metrics
                for metric in ("auroc", "fpr95")}
    assert {(d, o, m): v for d, o, m, v in cells} == expected and len(cells) == len(expected) == 3 * 3 * 2
    assert page.index('class="metrics"') < page.index('alt="score histogram"')  # the metrics come first


def test_the_evaluate_report_flags_the_images_below_nero_at_95_percent_id_tpr(evaluated):
    from nero_lite.metrics import threshold_at_tpr

    scores = pd.read_csv(evaluated / "evaluate" / "scores.csv", keep_default_na=False)
    nero = scores[scores.detector == "nero"].reset_index(drop=True)
    threshold = threshold_at_tpr(torch.tensor(nero.score[nero.set == "id"].to_numpy()), 0.95)
    below = nero[nero.score < threshold].sort_values("score", kind="stable")
    page = evaluated / "evaluate" / "report.html"
    cards = _gallery(page)
    assert len(cards) == min(len(below), cli.GALLERY)
    shown = [re.search(r"<b>([^<]*)</b>", card).group(1) for card in cards]
    assert shown == list(below.file[: len(cards)])
    for card, (_, row) in zip(cards, below.iterrows()):
        truth = "ID test: " if row.set == "id" else f"OOD: {row.ood_class}"
        assert truth in card
    assert not BUNDLE_SCORE_CALLS  # no second forward pass over the shown images
    classes = sorted(p.name for p in (evaluated / "train").iterdir() if p.is_dir())
    assert all(re.search(r"nearest ([^ <]*)", card).group(1) in classes for card in cards)
    explained = [card for card in cards if card.startswith(' explained"')]
    assert len(explained) == min(2, len(cards)) and cards[: len(explained)] == explained
    for card in explained:
        assert card.count('alt="concept map"') == 3 and card.count('alt="reference patch"') == 9
    text = page.read_text(encoding="utf-8")
    assert f"{threshold:.6g}" in text and "95 % ID TPR on the ID test images" in text


# --------------------------------------------------------------------------- data_scripts/split_for_cli.py
def _split_script():
    spec = importlib.util.spec_from_file_location("split_for_cli", ROOT / "data_scripts" / "split_for_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_for_cli_links_a_seeded_stratified_split(tree):
    source = tree / "train"
    counts = _split_script().split(source, tree / "split", ["red", "green"], ["blue"], seed=1)
    assert counts == {"train": {"red": 8, "green": 8}, "id": {"red": 4, "green": 4}, "ood": {"blue": 12}}
    train = {p.name for p in (tree / "split" / "train" / "red").iterdir()}
    test = {p.name for p in (tree / "split" / "id" / "red").iterdir()}
    assert not train & test and len(train | test) == 12
    link = next((tree / "split" / "ood" / "blue").iterdir())
    assert link.is_symlink() and link.resolve().parent == (source / "blue").resolve()
    again = _split_script().split(source, tree / "again", ["red", "green"], ["blue"], seed=1)
    assert again == counts and {p.name for p in (tree / "again" / "train" / "red").iterdir()} == train


def test_split_for_cli_refuses_bad_input(tree, capsys):
    script = _split_script()
    assert script.main([str(tree / "train"), str(tree / "x"), "--id", "red", "--ood", "nope"]) == 2
    assert "class folder not found" in capsys.readouterr().err
    assert script.main([str(tree / "train"), str(tree / "ood"), "--id", "red", "--ood", "blue"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_score_on_the_shared_hyperkvasir_folder(tmp_path, monkeypatch, capsys):
    """The real images beside the repository (NERO_LITE_DATA), split with split_for_cli, at a tiny size."""
    import os

    value = os.environ.get("NERO_LITE_DATA")
    root = Path(value) if value else ROOT.parent / "shared" / "data"
    source = root / "hyperkvasir-lowergi"
    if not source.is_dir():
        pytest.skip(f"HyperKvasir subset not found under {root} (set NERO_LITE_DATA to the folder holding it)")
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "cache"))
    counts = _split_script().split(source, tmp_path / "hk", ["cecum", "bbps-2-3", "bbps-0-1"], ["polyps", "impacted-stool"])
    assert cli.main(["score", "--train", str(tmp_path / "hk" / "train"), "--id", str(tmp_path / "hk" / "id"),
                     "--ood", str(tmp_path / "hk" / "ood"), "--size", "32", "--epochs", "2", "--mask-corner",
                     "--detectors", "msp,nero", "--explain", "2", "--out", str(tmp_path / "out")]) == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["images"] == {"train": sum(counts["train"].values()), "id": sum(counts["id"].values()),
                             "ood": sum(counts["ood"].values())}
    assert run["classes"]["ood"] == ["impacted-stool", "polyps"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {m["ood_class"] for m in metrics} == {"polyps", "impacted-stool", "all"}
    assert run["explained"] == 2 and (tmp_path / "out" / "report.html").read_text().count('alt="reference patch"') == 18


def test_each_command_reads_a_typed_record_with_one_field_per_option():
    import dataclasses

    parser = cli.build_parser()
    argvs = {"evaluate": ["evaluate", "--train", "a", "--id", "b", "--ood", "c"], "fit": ["fit", "--train", "a", "--out", "b"],
             "flag": ["flag", "b", "i", "--out", "o"]}
    records = {"evaluate": cli.evaluate.EvaluateOptions, "fit": cli.fit.FitOptions, "flag": cli.flag.FlagOptions}
    for name, argv in argvs.items():
        namespace = parser.parse_args(argv)
        record = records[name].from_namespace(namespace)
        assert {f.name for f in dataclasses.fields(record)} == set(vars(namespace))
        assert record.as_json()["out"] == str(namespace.out)
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.out = Path("elsewhere")


def test_preset_reference_is_read_as_official_with_a_note(tree, capsys):
    namespace = cli.build_parser().parse_args(_args(tree, "--preset", "reference"))
    assert namespace.preset == "official"
    assert capsys.readouterr().err == "python -m nero_lite: --preset reference is now --preset official (NERO's official code's settings)\n"
    assert "{ours,official}" in cli.build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
