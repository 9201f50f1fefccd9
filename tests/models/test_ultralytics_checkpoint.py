"""Ultralytics checkpoints: refused without trust, a clear message without the extra, and (where
``ultralytics`` imports: bench/setup_ultralytics_env.sh) loaded as an anchor-free detector whose raw
maps equal the Detect head's, pruned, exported to ONNX and written back for Ultralytics to load.

The first tests run anywhere: their "checkpoint" is pickle bytes written by hand that name an
Ultralytics class, so no Ultralytics code is needed (or run). The rest make real checkpoints locally
from the yaml files Ultralytics ships (nothing is downloaded).
"""

import collections
import importlib.util
import io
import pickle
import struct
import zipfile

import pytest
import torch

from edgecompress import EdgeCompressError
from edgecompress.models import resolve_model
from edgecompress.models.ultralytics import EXTRA, _pickled_globals, is_ultralytics_checkpoint, ultralytics_problem


def _string(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


# {'model': ultralytics.nn.tasks.DetectionModel(), 'train_args': {}}, as opcodes: unpickling would import ultralytics
_FAKE_CHECKPOINT = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + _string("model")
                    + pickle.GLOBAL + b"ultralytics.nn.tasks\nDetectionModel\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ
                    + _string("train_args") + pickle.EMPTY_DICT + pickle.SETITEMS + pickle.STOP)


@pytest.fixture(params=["zip", "legacy"])
def fake_checkpoint(request, tmp_path):
    """A torch zip file (as torch.save writes, and Ultralytics) or a bare pickle, holding the crafted bytes."""
    path = tmp_path / "best.pt"
    if request.param == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("best/data.pkl", _FAKE_CHECKPOINT)
            archive.writestr("best/byteorder", "little")
            archive.writestr("best/version", "3\n")
    else:
        path.write_bytes(_FAKE_CHECKPOINT)
    return path


def test_a_checkpoint_is_recognised_from_its_opcodes_without_running_it(fake_checkpoint, tmp_path):
    assert is_ultralytics_checkpoint(fake_checkpoint)
    torch.save(torch.nn.Conv2d(1, 1, 1), tmp_path / "conv.pt")
    assert not is_ultralytics_checkpoint(tmp_path / "conv.pt")
    assert not is_ultralytics_checkpoint(tmp_path / "missing.pt")
    # protocol 4 names a class with STACK_GLOBAL from two strings; the second class reuses the memoised module name
    pickled = pickle.dumps([collections.OrderedDict, collections.Counter], protocol=4)
    assert list(_pickled_globals(io.BytesIO(pickled))) == ["collections.OrderedDict", "collections.Counter"]


def test_without_trust_the_refusal_names_trust_model_and_one_line(fake_checkpoint):
    with pytest.raises(EdgeCompressError) as error:
        resolve_model(str(fake_checkpoint))
    message = str(error.value)
    assert "\n" not in message
    assert "ultralytics.nn.tasks.DetectionModel" in message and "--trust-model" in message and "trust=True" in message
    if ultralytics_problem():
        assert EXTRA in message


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed here")
def test_with_trust_but_no_ultralytics_the_error_names_the_extra(fake_checkpoint):
    with pytest.raises(EdgeCompressError) as error:
        resolve_model(str(fake_checkpoint), trust=True)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"cannot load model file {fake_checkpoint}: it is an Ultralytics checkpoint")
    assert "not installed" in message and "pip install 'edgecompress[ultralytics]'" in message


# ---------------------------------------------------------------------------------------------- with ultralytics (its own venv)

_MISSING = ultralytics_problem()
needs_ultralytics = pytest.mark.skipif(
    _MISSING is not None,
    reason=f"{_MISSING}: these tests run in the Ultralytics environment (bash bench/setup_ultralytics_env.sh, then "
           "bench/.venv-ultralytics/bin/python -m pytest tests/models/test_ultralytics_checkpoint.py)")
# built from the yaml files Ultralytics ships (yolov5nu.yaml is yolov5.yaml at scale n); nothing is downloaded
FAMILIES = ["yolov8n", "yolo11n", "yolov5nu", "yolov6n", "yolov9t", "yolo12n"]
SIZE = 64


def _tiny_detection_set(root):
    """8 + 8 images of 64 px with one red or blue box each, in the YOLO layout; returns the data.yaml."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(8):
            image = (rng.random((SIZE, SIZE, 3)) * 60).astype(np.uint8)
            w, h = rng.integers(16, 32, 2)
            x0, y0 = rng.integers(0, SIZE - 32, 2)
            image[y0:y0 + h, x0:x0 + w] = (220, 40, 40) if k % 2 == 0 else (40, 40, 220)
            Image.fromarray(image).save(root / "images" / split / f"{k}.png")
            (root / "labels" / split / f"{k}.txt").write_text(f"{k % 2} {(x0 + w / 2) / SIZE} {(y0 + h / 2) / SIZE} {w / SIZE} {h / SIZE}\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: red\n  1: blue\n")
    return data


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    return _tiny_detection_set(tmp_path_factory.mktemp("tiny_set"))


_CHECKPOINTS: dict = {}


@pytest.fixture
def checkpoint(request, data_yaml, tmp_path_factory):
    """``best.pt`` of a one-epoch Ultralytics training of ``family``.yaml (2 classes, 64 px): fp16, train_args and all."""
    family = request.param
    if family not in _CHECKPOINTS:
        import ultralytics
        from ultralytics import YOLO

        try:
            yolo = YOLO(f"{family}.yaml")
        except FileNotFoundError:
            pytest.skip(f"ultralytics {ultralytics.__version__} ships no yaml for {family}")
        project = tmp_path_factory.mktemp(f"train_{family}")
        yolo.train(data=str(data_yaml), epochs=1, imgsz=SIZE, batch=4, workers=0, device="cpu", plots=False,
                                     amp=False, verbose=False, project=str(project), name="run", exist_ok=True)
        _CHECKPOINTS[family] = project / "run" / "weights" / "best.pt"
    return _CHECKPOINTS[family]


def _detect_training_outputs(model, x):
    """The Ultralytics model's own forward with its Detect head in training mode and every BatchNorm in eval mode,
    as one raw map per level (8.4's dict of flattened 'boxes' and 'scores' is compared in that form)."""
    import torch.nn as nn

    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    with torch.no_grad():
        out = model(x)
    model.eval()
    return out


def _assert_maps_equal(maps, reference, reg_max, atol=1e-5):
    if isinstance(reference, dict):  # Ultralytics 8.4: {'boxes': [B, 4*reg_max, N], 'scores': [B, nc, N], 'feats': ...}
        torch.testing.assert_close(torch.cat([m[:, :4 * reg_max].flatten(2) for m in maps], 2), reference["boxes"], atol=atol, rtol=1e-4)
        torch.testing.assert_close(torch.cat([m[:, 4 * reg_max:].flatten(2) for m in maps], 2), reference["scores"], atol=atol, rtol=1e-4)
    else:  # 8.0-8.3: the list of per-level maps
        assert len(maps) == len(reference)
        for a, b in zip(maps, reference):
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@needs_ultralytics
@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_checkpoint_loads_only_with_trust_as_an_fp32_detector(checkpoint):
    from edgecompress.models import UltralyticsDetector

    with pytest.raises(EdgeCompressError, match="--trust-model") as error:
        resolve_model(str(checkpoint))
    assert "\n" not in str(error.value) and "ultralytics.nn.tasks.DetectionModel" in str(error.value)
    saved = torch.load(checkpoint, weights_only=False)
    assert next(saved["model"].parameters()).dtype == torch.float16 and "train_args" in saved  # as Ultralytics writes them

    detector = resolve_model(str(checkpoint), trust=True)
    assert isinstance(detector, UltralyticsDetector) and not detector.training
    assert (detector.num_classes, detector.reg_max, detector.strides, detector.image_size) == (2, 16, (8, 16, 32), SIZE)
    assert detector.class_names == ("red", "blue")
    assert all(p.dtype == torch.float32 for p in detector.parameters())
    names = dict(detector.named_modules())
    assert len(detector.prediction_layers()) == 6
    assert all(isinstance(names[name], torch.nn.Conv2d) for name in detector.prediction_layers())
    assert [names[name].out_channels for name in detector.prediction_layers()] == [64] * 3 + [2] * 3


@needs_ultralytics
@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_raw_maps_equal_the_detect_heads_training_outputs(checkpoint):
    detector = resolve_model(str(checkpoint), trust=True)
    reference = torch.load(checkpoint, weights_only=False)["model"].float()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    running_means = [m.running_mean.clone() for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        maps = detector(x)
    assert [tuple(m.shape) for m in maps] == [(2, 4 * 16 + 2, SIZE // s, SIZE // s) for s in (8, 16, 32)]
    _assert_maps_equal(maps, _detect_training_outputs(reference, x), detector.reg_max)
    after = [m.running_mean for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(running_means, after))  # eval mode: BatchNorms used, not updated


_PRUNED: dict = {}


@pytest.fixture
def pruned(checkpoint):
    """The checkpoint's detector pruned to half its MACs by ec.prune, with its MACs before and after."""
    import edgecompress as ec

    if checkpoint not in _PRUNED:
        detector = resolve_model(str(checkpoint), trust=True)
        x = torch.randn(1, 3, SIZE, SIZE)
        before = ec.model_stats(detector, x)
        ec.prune(detector, x, target_macs=0.5)
        _PRUNED[checkpoint] = detector, before, ec.model_stats(detector, x)
    return _PRUNED[checkpoint]


@needs_ultralytics
@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_prunes_to_half_the_macs_and_exports_to_onnx_with_parity(pruned, tmp_path):
    from edgecompress.export import export_onnx, verify_onnx

    detector, before, after = pruned
    assert 0.45 <= after.macs / before.macs <= 0.52 and after.params < before.params
    with torch.no_grad():
        maps = detector(torch.randn(2, 3, SIZE, SIZE))
    assert [tuple(m.shape) for m in maps] == [(2, 66, SIZE // s, SIZE // s) for s in (8, 16, 32)]
    path = export_onnx(detector, torch.randn(1, 3, SIZE, SIZE), tmp_path / "pruned.onnx")
    report = verify_onnx(detector, path, (1, 3, SIZE, SIZE))
    assert report.max_rel_error < 1e-4, report


@needs_ultralytics
@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_pruned_detector_trains_and_quantizes_to_int8_onnx_in_the_deployed_layout(pruned, tmp_path):
    """What the build's fine-tune, qat and export stages do with it: gradients flow (Ultralytics saves
    checkpoints with them off), fx places quantizers through C2f's chunk, prediction convs stay float."""
    from edgecompress.export import export_onnx, qdq_summary, verify_onnx
    from edgecompress.quant import calibrate, quantize_model
    from edgecompress.tasks import get_task

    detector, _, _ = pruned
    trainable = [p for p in detector.parameters() if p.requires_grad]
    assert trainable and sum(m.sum() for m in detector.train()(torch.rand(2, 3, SIZE, SIZE))).backward() is None
    assert all(p.grad is not None for p in trainable)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    quantized = quantize_model(detector.eval(), x)
    calibrate(quantized, [torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))], method="max")
    deployed = get_task("detect").export_module(quantized.eval())
    path = export_onnx(deployed, x, tmp_path / "int8.onnx", int8=True)
    summary = qdq_summary(path)
    assert summary.conv_quantized == summary.conv - 6  # the six prediction convs stay float
    assert verify_onnx(deployed, path, (1, 3, SIZE, SIZE)).max_rel_error < 1e-3


@needs_ultralytics
@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_pruned_write_back_loads_and_validates_in_ultralytics(pruned, checkpoint, data_yaml, tmp_path):
    from ultralytics import YOLO

    from edgecompress.models.ultralytics import save_ultralytics_checkpoint

    detector = pruned[0]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = detector(x)
    exact = save_ultralytics_checkpoint(detector, tmp_path / "pruned32.pt", half=False)
    model = YOLO(str(exact)).model
    _assert_maps_equal(maps, _detect_training_outputs(model, x), detector.reg_max)
    for module in model.modules():  # Ultralytics' ONNX export swaps C2f.forward for forward_split, which splits by `c`
        if hasattr(module, "forward_split"):
            with torch.no_grad():
                y = torch.randn(1, module.cv1.conv.in_channels, 8, 8)
                torch.testing.assert_close(module.forward_split(y), module(y))
    assert all(isinstance(layer.type, str) for layer in model.model)

    written = save_ultralytics_checkpoint(detector, tmp_path / "pruned.pt")  # fp16, as Ultralytics saves
    yolo = YOLO(str(written))
    assert sum(p.numel() for p in yolo.model.parameters()) == sum(p.numel() for p in detector.model.parameters())
    metrics = yolo.val(data=str(data_yaml), imgsz=SIZE, batch=4, device="cpu", workers=0, plots=False, verbose=False)
    assert 0.0 <= metrics.box.map50 <= 1.0
    again = resolve_model(str(written), trust=True)  # and back into edgecompress
    with torch.no_grad():
        _assert_maps_equal(again(x), maps, detector.reg_max, atol=0.05)


@needs_ultralytics
@pytest.mark.parametrize("checkpoint", ["yolo11n"], indirect=True)
def test_a_stage_model_reloads_with_trust_and_prunes_again_in_a_fresh_registry(checkpoint, tmp_path):
    """A build saves stage models with save_model and reloads them (with --trust-model in a fresh process, whose graph
    registry has no rule for YOLO11's attention yet): the wrapper registers it again from its forward."""
    import edgecompress as ec
    from edgecompress.graph.registry import MODULE_RULES

    detector = resolve_model(str(checkpoint), trust=True)
    ec.save_model(detector, tmp_path / "model.pt")
    for cls in [cls for cls in MODULE_RULES if cls.__module__.startswith("ultralytics.")]:
        del MODULE_RULES[cls]
    again = ec.load_model(tmp_path / "model.pt", trust=True)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        _assert_maps_equal(again(x), detector(x), detector.reg_max, atol=0)
    before = ec.model_stats(again, x).macs
    ec.prune(again, x, target_macs=0.3)
    assert ec.model_stats(again, x).macs < 0.75 * before
