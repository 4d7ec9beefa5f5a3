"""The installed stack imports in a fresh interpreter, as a user's would."""

import subprocess
import sys


def test_stack_imports_in_a_subprocess():
    code = (
        "import nero_lite, timm, torchvision, zennit, crp, torch; "
        "m = timm.create_model('resnet18', pretrained=False, num_classes=3).eval(); "
        "print(m(torch.zeros(1, 3, 32, 32)).shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 3])" in result.stdout


def test_versions_names_the_stack():
    import nero_lite

    found = nero_lite.versions()
    assert set(found) == {"torch", "torchvision", "timm", "zennit", "zennit-crp", "ray", "jupyter-book"}
    assert found["ray"] == "2.60.0"  # the scale extra, installed by make setup
    assert found["torch"].startswith("2.14.1")
