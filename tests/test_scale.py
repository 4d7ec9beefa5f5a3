"""``--engine ray`` (:mod:`nero_lite.scale`) on a local Ray cluster of two CPUs (Ray 2.60 has no
local mode): the same ``flags.csv``, gallery, features and thresholds as the local engine; every
image scored once when a worker's process dies; the one-line errors before Ray starts; and an
interrupted or failed run that leaves the previous results whole."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import ray.cloudpickle
import torch

from image_folders import colour_tree, one_line_error
from nero_lite import cli, scale
from nero_lite.bundle import load_bundle
from nero_lite.data import read_image


@pytest.fixture(scope="module")
def local_ray():
    """A Ray cluster of two CPUs on this machine for the module; the commands use it as it is."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tree(tmp_path_factory, one_torch_thread) -> Path:
    """The colour tree, a bundle fitted on it locally, and images/: the OOD images, the ID test images and one unreadable file."""
    root = colour_tree(tmp_path_factory.mktemp("scale"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(root / "cache"))
        assert cli.main(["fit", "--train", str(root / "train"), "--val", str(root / "id"), "--size", "16", "--epochs", "2",
                         "--out", str(root / "bundle"), "--device", "cpu"]) == 0
    shutil.copytree(root / "ood", root / "images" / "ood")
    shutil.copytree(root / "id", root / "images" / "id")
    (root / "images" / "broken.png").write_bytes(b"not a png")
    return root


def _flag(root: Path, out: str, *extra: str) -> int:
    return cli.main(["flag", str(root / "bundle"), str(root / "images"), "--out", str(root / out), "--device", "cpu",
                     "--explain", "2", "--batch-size", "5", *extra])


def _gallery(page: str) -> list[str]:
    """The file names of report.html's gallery, in their order."""
    return re.findall(r'<div class="card[^"]*">.*?<br><b>(.*?)</b>', page)


def test_flag_with_ray_writes_what_the_local_engine_writes(tree, local_ray):
    assert _flag(tree, "local") == 0 and _flag(tree, "ray", "--engine", "ray", "--workers", "2") == 0
    local, distributed = (pd.read_csv(tree / out / "flags.csv", keep_default_na=False) for out in ("local", "ray"))
    assert len(local) == 22 and list(distributed.file) == list(local.file)  # 10 OOD + 12 ID images, in the same order
    np.testing.assert_allclose(distributed.score, local.score, rtol=1e-5)
    for column in ("threshold", "flagged", "predicted", "nearest"):
        assert list(distributed[column]) == list(local[column])
    runs = [json.loads((tree / out / "run.json").read_text()) for out in ("local", "ray")]
    assert runs[0]["images"] == runs[1]["images"] and runs[1]["images"]["found"] == 23
    assert runs[0]["skipped_files"] == runs[1]["skipped_files"] == [{"file": str(tree / "images" / "broken.png"), "reason": "unreadable"}]
    assert runs[1]["device"] == "ray: 2 worker(s), 0 GPU(s) each" and runs[1]["options"]["engine"] == "ray"
    pages = [(tree / out / "report.html").read_text() for out in ("local", "ray")]
    lowest = local[local.flagged].sort_values("score", kind="stable").file.head(cli.GALLERY)
    assert _gallery(pages[1]) == _gallery(pages[0]) == list(lowest) and len(lowest) >= 10


class DiesOnce(scale.BundleScorer):
    """A scorer whose process exits on the first batch any instance sees (a marker file remembers it)."""

    marker = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(batch)


def test_a_killed_worker_is_restarted_and_every_image_is_scored_once(tree, local_ray, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    DiesOnce.marker = str(tmp_path / "died")
    files = sorted((tree / "images" / "ood").rglob("*.png"))
    with scale.cluster() as workers:
        batches = list(scale.score_files(tree / "bundle", files, size=16, detector="nero", workers=workers,
                                         batch_size=3, actor=DiesOnce))
    assert Path(DiesOnce.marker).exists()  # a worker did die
    scored = [file for batch in batches for file in batch.files]
    assert scored == [str(file) for file in files]  # each once, in order
    bundle = load_bundle(tree / "bundle")
    expected = bundle.score(torch.stack([read_image(file, 16) for file in files]), device="cpu", progress=False)
    np.testing.assert_allclose([s for batch in batches for s in batch.columns["score"]], expected.scores["nero"], rtol=1e-5)


def test_fit_and_evaluate_with_ray_extract_what_the_local_engine_extracts(tree, local_ray, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tree / "cache"))  # the classifier trained by the fixture is reused
    fit = ["fit", "--train", str(tree / "train"), "--val", str(tree / "id"), "--size", "16", "--epochs", "2", "--device", "cpu"]
    assert cli.main([*fit, "--out", str(tree / "bundle-ray"), "--engine", "ray"]) == 0
    local, distributed = load_bundle(tree / "bundle"), load_bundle(tree / "bundle-ray")
    assert set(local.thresholds) == set(distributed.thresholds)
    for name, threshold in local.thresholds.items():
        assert distributed.thresholds[name] == pytest.approx(threshold, rel=1e-5, abs=1e-6)
    evaluate = ["evaluate", "--train", str(tree / "train"), "--id", str(tree / "id"), "--ood", str(tree / "ood"), "--size", "16",
                "--epochs", "2", "--device", "cpu", "--detectors", "msp,knn,nero", "--explain", "0"]
    assert cli.main([*evaluate, "--out", str(tree / "eval-local")]) == 0
    assert cli.main([*evaluate, "--out", str(tree / "eval-ray"), "--engine", "ray"]) == 0
    scores = [pd.read_csv(tree / out / "scores.csv") for out in ("eval-local", "eval-ray")]
    assert list(scores[0].file) == list(scores[1].file) and len(scores[0]) == 3 * (12 + 10)
    np.testing.assert_allclose(scores[1].score, scores[0].score, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--address", "127.0.0.1:1"], "--address: no Ray cluster answers at 127.0.0.1:1"),
        (["--address", "nowhere"], "--address: give auto or HOST:PORT, got 'nowhere'"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker 1: this machine has 0 GPU(s)"),
    ],
)
def test_bad_engine_options_are_one_line_before_ray_starts(tree, capsys, monkeypatch, extra, expected):
    if expected.startswith("--gpus") and scale.local_gpus() > 0:
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray was started"))
    start = time.perf_counter()
    assert expected in one_line_error(["flag", str(tree / "bundle"), str(tree / "images"), "--out", str(tree / "x"),
                                       "--engine", "ray", *extra], capsys)
    assert time.perf_counter() - start < scale.CONNECT_SECONDS + 1
    assert not (tree / "x").exists()


def test_engine_errors_of_other_options(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray was started"))
    argv = ["flag", str(tmp_path / "none"), str(tree / "images"), "--out", str(tmp_path / "x"), "--engine", "ray"]
    assert "BUNDLE: no bundle folder at" in one_line_error(argv, capsys)
    argv = ["flag", str(tree / "bundle"), str(tree / "images"), "--out", str(tmp_path / "x"), "--workers", "2"]
    assert "--workers: only with --engine ray" in one_line_error(argv, capsys)
    monkeypatch.setitem(sys.modules, "ray.data", None)  # Ray Data not installed
    argv = ["flag", str(tree / "bundle"), str(tree / "images"), "--out", str(tmp_path / "x"), "--engine", "ray"]
    assert f"--engine ray: Ray Data is not installed ({scale.INSTALL})" in one_line_error(argv, capsys)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, scale.EngineError])
def test_an_interrupted_or_failed_ray_run_leaves_the_previous_results_whole(tree, tmp_path, capsys, monkeypatch, failure):
    out = tmp_path / "report"
    assert cli.main(["flag", str(tree / "bundle"), str(tree / "images"), "--out", str(out), "--explain", "0", "--device", "cpu"]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def fails_after_one_batch(folder, files, **kwargs):
        yield scale.ScoredBatch(files=[str(files[0])], columns={name: [0.0] for name in cli.FLAG_COLUMNS[1:]}, unreadable=[])
        raise failure("the cluster went away") if failure is scale.EngineError else failure()

    monkeypatch.setattr(scale, "cluster", lambda *args: contextlib.nullcontext(scale.Workers(count=1, gpus=0, cpus=2, cluster_gpus=0)))
    monkeypatch.setattr(scale, "score_files", fails_after_one_batch)
    for progress in ("0", "1"):  # without and with the progress bar, which is closed before the error line
        monkeypatch.setenv("NERO_LITE_PROGRESS", progress)
        capsys.readouterr()
        status = cli.main(["flag", str(tree / "bundle"), str(tree / "images"), "--out", str(out), "--engine", "ray"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == (130 if failure is KeyboardInterrupt else 1) and (len(lines) == 1 or progress == "1")
        assert lines[-1].startswith("python -m nero_lite flag: ") and lines[-1].endswith(f"results in {out} are as they were")
        assert all(line.startswith("flag: ") for line in lines[:-1])  # only the bar's own lines before it
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # no staging folder left either
