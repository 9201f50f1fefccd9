"""YOLOv8 / YOLO11 blocks in TensorRT's int8 layout: one scale through C2f/C3k2 split and concat, prediction convs float."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import fx, nn

from edgecompress.engine.lint import check_onnx
from edgecompress.export import export_onnx, qdq_summary, verify_onnx
from edgecompress.models import build_model
from edgecompress.models.yolov8 import Bottleneck, ConvBNSiLU
from edgecompress.quant import QuantConv2d, TensorQuantizer, calibrate, default_float_layers, quantize_model
from edgecompress.targets import get_target

SIZE = 128


def _yolov8n() -> nn.Module:
    """The zoo's yolov8n with BatchNorm statistics from a few random batches (fresh ones are the identity)."""
    torch.manual_seed(0)
    model = build_model("yolov8n", num_classes=10).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, SIZE, SIZE))
    return model.eval()


def _images(seed: int, batch: int = 4, size: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _quantizer_of(model: fx.GraphModule, node: object) -> TensorQuantizer | None:
    """The TensorQuantizer a graph node runs, or None for any other node."""
    if not isinstance(node, fx.Node) or node.op != "call_module":
        return None
    module = model.get_submodule(node.target)
    return module if isinstance(module, TensorQuantizer) else None


def _assert_one_quantizer_through(model: fx.GraphModule, split: fx.Node) -> TensorQuantizer:
    """The split's input, each part, the concat gathering them and the concat's output all run one quantizer."""
    shared = _quantizer_of(model, split.args[0])
    assert isinstance(shared, TensorQuantizer), split.name
    part_readers = [reader for part in split.users for reader in part.users]
    assert part_readers and all(_quantizer_of(model, reader) is shared for reader in part_readers)  # parts read through it only
    concat = next(user for reader in part_readers for user in reader.users if user.target is torch.cat)
    assert all(_quantizer_of(model, arg) is shared for arg in concat.args[0])
    (reader,) = concat.users
    assert _quantizer_of(model, reader) is shared  # no requantization after the concat
    (conv,) = reader.users
    conv_layer = model.get_submodule(conv.target)
    assert isinstance(conv_layer, QuantConv2d) and isinstance(conv_layer.input_quantizer, nn.Identity)
    return shared


def test_c2f_split_parts_concat_and_the_conv_after_share_one_quantizer():
    model = quantize_model(_yolov8n(), _images(1, 1))
    chunks = [node for node in model.graph.nodes if node.op == "call_method" and node.target == "chunk"]
    assert len(chunks) == 8  # every C2f block
    shared = [_assert_one_quantizer_through(model, chunk) for chunk in chunks]
    assert len({id(q) for q in shared}) == len(shared)  # one scale per block, not one for the network
    calibrate(model, [_images(2)], method="mse")
    assert all(q.amax.numel() == 1 and float(q.amax) > 0 for q in shared)


class C3k(nn.Module):
    """YOLO11's C3k: two parallel 1x1 convs, bottlenecks on the first, concat, 1x1 conv."""

    def __init__(self, channels: int, repeats: int = 2):
        super().__init__()
        hidden = channels // 2
        self.cv1, self.cv2, self.cv3 = ConvBNSiLU(channels, hidden), ConvBNSiLU(channels, hidden), ConvBNSiLU(2 * hidden, channels)
        self.m = nn.Sequential(*(Bottleneck(hidden, True) for _ in range(repeats)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k2(nn.Module):
    """YOLO11's C3k2: C2f's split (``Tensor.split``, as Ultralytics' forward_split) with C3k blocks."""

    def __init__(self, in_ch: int, out_ch: int, repeats: int = 1):
        super().__init__()
        self.c = out_ch // 2
        self.cv1 = ConvBNSiLU(in_ch, 2 * self.c)
        self.cv2 = ConvBNSiLU((2 + repeats) * self.c, out_ch)
        self.m = nn.ModuleList(C3k(self.c) for _ in range(repeats))

    def forward(self, x):
        parts = self.cv1(x).split((self.c, self.c), 1)
        parts = [parts[0], parts[1]]
        parts.extend(block(parts[-1]) for block in self.m)
        return self.cv2(torch.cat(parts, 1))


def test_c3k2_split_and_concat_share_one_quantizer():
    torch.manual_seed(0)
    model = nn.Sequential(ConvBNSiLU(3, 16, 3, 2), C3k2(16, 32), nn.Conv2d(32, 8, 1)).eval()
    quantized = quantize_model(model, _images(1, 1, 32))
    (split,) = [node for node in quantized.graph.nodes if node.op == "call_method" and node.target == "split"]
    _assert_one_quantizer_through(quantized, split)


def test_prediction_convs_stay_float_by_default_and_quantize_when_asked():
    model = _yolov8n()
    prediction = model.prediction_layers()
    assert default_float_layers(model) == tuple(prediction) and len(prediction) == 6
    default = quantize_model(model, _images(1, 1))
    assert all(type(default.get_submodule(name)) is nn.Conv2d for name in prediction)
    assert isinstance(default.get_submodule("head.box.0.1.0"), QuantConv2d)  # the branch convs before them are int8
    outputs = next(node for node in default.graph.nodes if node.op == "output").args[0]
    assert all(_quantizer_of(default, arg) is None for concat in outputs for arg in concat.args[0])  # outputs stay float

    everything = quantize_model(model, _images(1, 1), float_layers=())
    assert all(isinstance(everything.get_submodule(name), QuantConv2d) for name in prediction)
    outputs = next(node for node in everything.graph.nodes if node.op == "output").args[0]
    assert all(_quantizer_of(everything, arg) is None for concat in outputs for arg in concat.args[0])  # still float outputs

    only_boxes = quantize_model(model, _images(1, 1), float_layers=(), skip=prediction[:3])
    assert [type(only_boxes.get_submodule(name)) is nn.Conv2d for name in prediction] == [True] * 3 + [False] * 3


@pytest.fixture(scope="module")
def yolov8n_int8(tmp_path_factory):
    """(calibrated fake-quant yolov8n, its int8 ONNX export) in the TensorRT layout."""
    torch.set_num_threads(1)
    quantized = quantize_model(_yolov8n(), _images(1, 1))
    calibrate(quantized, [_images(seed) for seed in (2, 3)], method="mse")  # mse: a concat's reader would pick its own scale
    path = export_onnx(quantized, _images(1, 1), tmp_path_factory.mktemp("yolov8n") / "int8.onnx", int8=True, opset=17)
    return quantized, path


@pytest.mark.parametrize("target", ["jetson-orin-nano", "jetson-xavier-nx"])  # TensorRT 10.3 and 8.5
def test_yolov8n_int8_export_lints_clean_for_tensorrt(yolov8n_int8, target):
    _, path = yolov8n_int8
    report = check_onnx(path, get_target(target))
    assert report.ok and not report.warnings, report.findings
    assert sorted(f.node for f in report.findings if f.rule == "float-layer") == sorted(
        f"/{branch}.{level}.2/Conv" for branch in ("box", "cls") for level in range(3))  # the prediction convs, noted
    summary = qdq_summary(path)
    assert (summary.conv, summary.conv_quantized, summary.zero_points_zero) == (63, 57, True)


def test_yolov8n_int8_onnx_matches_fake_quant_torch(yolov8n_int8):
    quantized, path = yolov8n_int8
    graph = onnx.load(str(path)).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    assert all(producers[output.name] == "Concat" for output in graph.output)  # raw maps, not a DequantizeLinear
    report = verify_onnx(quantized, path, (1, 3, SIZE, SIZE), trials=2, optimized=False)  # fresh randn inputs
    assert report.max_rel_error < 1e-4, report
