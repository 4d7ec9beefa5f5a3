"""Starting weights and the paper's recipe, offline: every file here is written by the test.

``create_model(weights=...)`` loads a whole classifier as it is, or a backbone with a new
head (through timm, which resamples a ViT to the image size); ``pretrained=True`` asks
timm's hub for the tagged ImageNet weights (checked without downloading).
"""

import pytest
import timm
import torch
from safetensors.torch import save_file

from nero_lite import models, training
from nero_lite.data import ImageSet, to_input


def tiny_set(n=24, size=32, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageSet(images=images, labels=labels, classes=[f"c{k}" for k in range(classes)])


def save(model, path):
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_whole_classifier_file_loads_as_it_is(tmp_path, suffix):
    torch.manual_seed(1)
    mine = timm.create_model("resnet18", num_classes=3).eval()
    path = save(mine, tmp_path / f"mine{suffix}")
    torch.manual_seed(2)  # a different initialisation, overwritten by the file
    model = models.create_model("resnet18", 3, 32, weights=path).eval()
    assert model.head_loaded
    for (name, a), b in zip(mine.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    x = to_input(tiny_set(n=4).images)
    with torch.no_grad():
        assert torch.equal(mine(x), model(x))


@pytest.mark.parametrize("head_classes", [1000, 0])
def test_a_backbone_file_gets_a_new_head(tmp_path, head_classes):
    torch.manual_seed(1)
    imagenet = timm.create_model("resnet18", num_classes=head_classes)
    path = save(imagenet, tmp_path / "imagenet.safetensors")
    model = models.create_model("resnet18", 3, 32, weights=path)
    assert not model.head_loaded
    assert model.fc.weight.shape == (3, 512)
    state = imagenet.state_dict()
    loaded = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert loaded.keys() <= state.keys() and len(loaded) == len(state) - (2 if head_classes else 0)
    for name, value in loaded.items():
        assert torch.equal(value, state[name]), name


def test_a_vit_file_is_resampled_to_the_image_size(tmp_path):
    torch.manual_seed(1)
    imagenet = timm.create_model("deit_tiny_patch16_224", num_classes=1000)  # 14×14 patches of 16 px
    path = save(imagenet, tmp_path / "deit_tiny.safetensors")
    model = models.create_model("vit", 3, 64, weights=path)  # 8×8 patches of 8 px
    assert not model.head_loaded
    assert model.pos_embed.shape == (1, 65, 192) and model.patch_embed.proj.weight.shape == (192, 3, 8, 8)
    assert torch.equal(model.cls_token, imagenet.cls_token)
    assert torch.equal(model.blocks[3].mlp.fc1.weight, imagenet.blocks[3].mlp.fc1.weight)
    # the class token's position embedding is kept, the grid part is interpolated
    assert torch.equal(model.pos_embed[:, 0], imagenet.pos_embed[:, 0])


def test_deit_small_and_other_timm_names():
    model = models.create_model("deit_small", 3, 32)
    assert models.find_head(model).in_features == 384 and model.pos_embed.shape == (1, 5, 384)
    with pytest.raises(ValueError, match="multiple of 16"):
        models.create_model("deit_small", 3, 40)
    other = models.create_model("resnet10t", 4, 32)
    assert models.find_head(other).out_features == 4 and not other.head_loaded
    with pytest.raises(ValueError, match="unknown architecture 'resnet_nonexistent'"):
        models.create_model("resnet_nonexistent", 3)


def test_wrong_files_are_refused_with_one_clear_error(tmp_path):
    resnet = save(timm.create_model("resnet18", num_classes=3), tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match=r"does not hold vit weights: 150 of its 150 backbone tensors are missing"):
        models.create_model("vit", 3, 32, weights=resnet)
    pickled = tmp_path / "module.pt"
    torch.save(timm.create_model("resnet18", num_classes=3), pickled)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match="not a safetensors or weights-only torch state dict"):
        models.create_model("resnet18", 3, 32, weights=pickled)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        models.create_model("resnet18", 3, 32, weights=tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="not both"):
        models.create_model("resnet18", 3, 32, pretrained=True, weights=resnet)


def test_pretrained_asks_timm_for_the_papers_weights(monkeypatch):
    calls, real = [], timm.create_model

    def create(name, **kwargs):
        calls.append((name, kwargs))
        return real(name.split(".")[0], **{**kwargs, "pretrained": False})

    monkeypatch.setattr(models.timm, "create_model", create)  # nothing is downloaded
    models.create_model("resnet18", 3, 32, pretrained=True)
    models.create_model("deit_small", 3, 224, pretrained=True)
    assert calls == [
        ("resnet18.tv_in1k", {"pretrained": True, "num_classes": 3}),  # torchvision's ImageNet weights, as the paper
        ("deit_small_patch16_224.fb_in1k", {"pretrained": True, "num_classes": 3, "img_size": 224}),
    ]


def test_the_papers_recipe_and_the_cache_key():
    paper = training.Recipe.paper()
    # model_training/train.py of the official NERO code: Adam(lr=1e-4), batch 32; 20 epochs in the paper
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.batch_size, paper.epochs) == ("adam", 1e-4, 0.0, 32, 20)
    assert paper.schedule == "constant" and paper.augment and paper.photometric and not paper.transpose
    # the default recipe keeps the key it had before the later fields existed (cached weights stay valid)
    assert training.Recipe().key() == {"epochs": 8, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "augment": True}
    assert training.Recipe(photometric=True).key()["photometric"] is True
    with pytest.raises(ValueError, match="optimizer must be"):
        training.Recipe(optimizer="sgd")


def _train(data, recipe, **kwargs):
    return training.train_classifier(data, "resnet18", recipe, device="cpu", cache=False, progress=False, **kwargs)


def test_the_papers_recipe_trains_seeded_with_photometric_augmentation():
    data = tiny_set(n=16)
    recipe = training.Recipe(**{**training.Recipe.paper().__dict__, "epochs": 1, "batch_size": 8})
    first, second = _train(data, recipe, seed=3), _train(data, recipe, seed=3)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    plain = _train(data, training.Recipe(**{**recipe.__dict__, "photometric": False}), seed=3)
    assert not torch.equal(plain.conv1.weight, first.conv1.weight)  # the augmentation changed what it saw


def test_fine_tuning_starts_from_the_file_and_keys_the_cache_on_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NERO_LITE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(5)
    start = timm.create_model("resnet18", num_classes=1000)
    path = save(start, tmp_path / "start.safetensors")
    frozen = training.Recipe(epochs=1, batch_size=8, lr=0.0, weight_decay=0.0)  # lr 0: the weights stay the file's
    data = tiny_set(n=16)
    tuned = training.train_classifier(data, "resnet18", frozen, weights=path, device="cpu", progress=False)
    assert torch.equal(tuned.conv1.weight, start.conv1.weight) and torch.equal(tuned.layer4[1].conv2.weight, start.layer4[1].conv2.weight)
    scratch = training.train_classifier(data, "resnet18", frozen, device="cpu", progress=False)
    assert not scratch.from_cache and not torch.equal(scratch.conv1.weight, start.conv1.weight)
    again = training.train_classifier(data, "resnet18", frozen, weights=path, device="cpu", progress=False)
    assert again.from_cache and torch.equal(again.conv1.weight, start.conv1.weight)
