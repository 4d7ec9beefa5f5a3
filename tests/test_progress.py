"""One switch for every progress bar: ``NERO_LITE_PROGRESS`` and the callers' ``progress=``."""

import pytest
import torch

from nero_lite import extraction, models, progress
from nero_lite.data import ImageSet


def tiny_model_and_images():
    torch.manual_seed(0)
    model = models.create_model("resnet18", num_classes=2)
    images = ImageSet(torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8), torch.tensor([0, 1] * 3), ["a", "b"])
    return model, images


@pytest.mark.parametrize(("value", "shown"), [(None, True), ("1", True), ("0", False), ("off", False), (" False ", False)])
def test_environment_switches_every_bar(monkeypatch, capsys, value, shown):
    if value is None:
        monkeypatch.delenv("NERO_LITE_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("NERO_LITE_PROGRESS", value)
    assert progress.enabled() is shown
    model, images = tiny_model_and_images()
    extraction.extract(model, images, "cpu", batch_size=2)
    assert ("extract" in capsys.readouterr().err) is shown


def test_caller_can_hide_a_bar_the_environment_allows(monkeypatch, capsys):
    monkeypatch.setenv("NERO_LITE_PROGRESS", "1")
    model, images = tiny_model_and_images()
    extraction.extract(model, images, "cpu", batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
    assert list(progress.bar(range(3), show=False)) == [0, 1, 2]


def test_book_build_switches_bars_off():
    makefile = open("Makefile").read()
    for target in ("notebooks:", "book:"):
        body = makefile.split(f"\n{target}", 1)[1].split("\n\n", 1)[0]
        assert "NERO_LITE_PROGRESS=0" in body, target
