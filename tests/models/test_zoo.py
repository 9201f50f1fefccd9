"""The zoo builds, runs and traces; user models load from every supported spec; bad specs fail clearly."""

import pytest
import torch
import torch.fx

from edgecompress import EdgeCompressError, load_model, save_model
from edgecompress.models import ZOO, build_model, resolve_model


@pytest.mark.parametrize("name", [name for name in ZOO if not name.startswith("yolov8")])  # those: test_yolov8.py
def test_zoo_model_runs_and_traces(name):
    entry = ZOO[name]
    model = build_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, entry.image_size, entry.image_size, generator=torch.Generator().manual_seed(1))
    out = model(x)
    traced = torch.fx.symbolic_trace(model)
    if entry.task == "detect":
        assert [o.shape[-1] for o in out] == [entry.image_size // s for s in model.strides]
        assert all(o.shape[1] == 3 * (5 + 7) for o in out)
        for a, b in zip(out, traced(x)):
            torch.testing.assert_close(a, b)
    else:
        assert out.shape == (2, 7)
        torch.testing.assert_close(out, traced(x))


def test_resolve_from_python_file_and_saved_module(tmp_path):
    source = tmp_path / "mynet.py"
    source.write_text(
        "import torch.nn as nn\n"
        "def make(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
    )
    model = resolve_model(f"{source}:make", num_classes=4)
    assert model[-1].out_features == 4
    saved = save_model(model, tmp_path / "model.pt")
    again = resolve_model(str(saved))
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), again.eval()(x))


def test_weights_roundtrip_and_mismatch(tmp_path):
    model = build_model("resnet20")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = resolve_model("resnet20", weights=tmp_path / "w.pt")
    torch.testing.assert_close(loaded.fc.weight, model.fc.weight)
    with pytest.raises(EdgeCompressError, match="do not fit"):
        resolve_model("vgg11-bn", weights=tmp_path / "w.pt")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no-such-model", "cannot resolve"),
        ("missing_file.py:make", "not found"),
        ("json:no_such_attribute", "no attribute"),
        ("no_such_package_xyz.mod:make", "cannot import"),
    ],
)
def test_bad_model_specs(spec, message):
    with pytest.raises(EdgeCompressError, match=message):
        resolve_model(spec)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EdgeCompressError, match="cannot load model"):
        load_model(bad)
