"""Models: creation without downloads, one-pass extraction, cached training."""

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from nero_lite import extraction, models, training
from nero_lite.data import ImageSet, to_input


def tiny_set(n=24, size=32, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    # make the classes learnable: brighten one channel per class
    images[torch.arange(n), labels] = (images[torch.arange(n), labels] // 2 + 128).to(torch.uint8)
    return ImageSet(images=images, labels=labels, classes=[f"c{k}" for k in range(classes)])


@pytest.mark.parametrize("arch, dim", [("resnet18", 512), ("vit", 192)])
def test_extract_is_one_pass_and_consistent(arch, dim):
    torch.manual_seed(0)
    model = models.create_model(arch, num_classes=3, img_size=32).eval()
    data = tiny_set(n=10)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    out = extraction.extract(model, data, device="cpu", batch_size=4, progress=False)
    assert len(calls) == 3  # ceil(10 / 4) forward passes, no more
    assert out.features.shape == (10, dim) and out.logits.shape == (10, 3)
    assert out.weight.shape == (3, dim) and out.bias.shape == (3,)
    assert torch.equal(out.labels, data.labels)
    # the logits are the head applied to the features, and what model(x) returns
    torch.testing.assert_close(out.features @ out.weight.T + out.bias, out.logits, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(model(to_input(data.images)), out.logits, atol=1e-4, rtol=1e-4)


def test_extract_on_a_torchvision_model_and_raw_tensors():
    model = torchvision.models.resnet18(num_classes=4).eval()
    out = extraction.extract(model, torch.randn(5, 3, 32, 32), device="cpu", progress=False)
    assert out.features.shape == (5, 512) and out.logits.shape == (5, 4)
    assert torch.equal(out.labels, torch.full((5,), -1))
    assert models.find_head(model) is model.fc


def test_unknown_architecture_and_headless_model():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.create_model("alexnet", 3)
    with pytest.raises(ValueError, match="no nn.Linear"):
        models.find_head(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))


def test_training_is_seeded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path))
    data = tiny_set(n=48)
    recipe = training.Recipe(epochs=3, batch_size=16, lr=3e-3)
    first = training.train_classifier(data, "resnet18", recipe, seed=1, device="cpu", progress=False)
    assert not first.from_cache and len(first.training_history) == 3
    files = sorted(p.suffix for p in (tmp_path / "models").iterdir())
    assert files == [".json", ".safetensors"]  # no temporary files left behind
    second = training.train_classifier(data, "resnet18", recipe, seed=1, device="cpu", progress=False)
    assert second.from_cache and second.training_history == first.training_history
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    # a different seed is a different model, trained afresh
    third = training.train_classifier(data, "resnet18", recipe, seed=2, device="cpu", progress=False)
    assert not third.from_cache
    weights = next((tmp_path / "models").glob("*.safetensors"))
    assert "fc.weight" in load_file(weights)


def test_a_one_cycle_schedule_of_ten_steps_trains():
    """torch's OneCycleLR divides by zero when its warm-up is exactly one step (0.1 of 10 steps)."""
    assert [training.warmup_fraction(n) for n in (2, 3, 10, 20, 200)] == [0.1, 2 / 3, 0.2, 0.1, 0.1]
    model = training.train_classifier(tiny_set(n=12), "resnet18", training.Recipe(epochs=10, batch_size=64), device="cpu",
                                      progress=False, cache=False)
    assert len(model.training_history) == 10


def test_training_learns_a_separable_toy_set(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path))
    data = tiny_set(n=96)
    model = training.train_classifier(data, "resnet18", training.Recipe(epochs=6, batch_size=16, lr=3e-3), device="cpu", progress=False)
    out = extraction.extract(model, data, device="cpu", progress=False)
    assert extraction.accuracy(out) >= 0.9


@pytest.mark.parametrize("arch", ["vit", "deit_small", "resnet18d"])
@pytest.mark.parametrize("size", [12, 16, 20, 30, 32])
def test_the_command_line_and_create_model_accept_the_same_sizes(arch, size, tmp_path):
    """One size rule: --size is refused exactly where create_model raises, with the same reason."""
    from types import SimpleNamespace

    from nero_lite.cli.options import check_model

    problem = check_model(SimpleNamespace(arch=arch, size=size, preset="ours", weights=None, device="cpu",
                                          out=tmp_path / "out", no_cache=True, engine="local", address=None, workers=None,
                                          gpus_per_worker=None))
    if problem is None:
        models.create_model(arch, 3, size)
    else:
        assert problem.startswith("--size: ")
        with pytest.raises(ValueError) as raised:
            models.create_model(arch, 3, size)
        assert str(raised.value) == models.size_problem(arch, size) and "SIZE" in problem


def test_the_names_that_left_models_still_work_for_one_release():
    from nero_lite import devices, extraction, training

    for name, module in (("train_classifier", training), ("Recipe", training), ("extract", extraction),
                         ("accuracy", extraction), ("resolve_device", devices)):
        with pytest.warns(DeprecationWarning, match=f"nero_lite.{module.__name__.split('.')[-1]}.{name}"):
            assert getattr(models, name) is getattr(module, name)
    with pytest.raises(AttributeError):
        models.no_such_name
