"""A model whose own forward torch.fx cannot trace (an Ultralytics-style routed YOLO11) is analysed on
its torch.export graph and pruned through the public API; only when export fails too is it an error."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import edgecompress as ec
from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx, verify_onnx
from edgecompress.graph import ChannelGraph, Role, analyze
from edgecompress.graph.trace import UntraceableForward, trace_model
from edgecompress.prune import prune_layers, residual_blocks
from edgecompress.stats import model_stats

from ..export.export_models import randomise_batchnorm
from .ultralytics_like import Conv, RoutedDetector

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
SMALL = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def routed() -> tuple[RoutedDetector, RoutedDetector]:
    """The detector before and after ``ec.prune(..., target_macs=0.5)``."""
    torch.manual_seed(0)
    original = randomise_batchnorm(RoutedDetector(num_classes=3))
    pruned = ec.prune(copy.deepcopy(original), X, target_macs=0.5)
    return original, pruned


def test_torch_fx_cannot_trace_the_routed_forward() -> None:
    with pytest.raises(UntraceableForward, match="Proxy object cannot be iterated"):
        trace_model(RoutedDetector(), frozenset())


def test_prune_halves_the_macs_and_keeps_the_output_shape(routed) -> None:
    original, pruned = routed
    before, after = model_stats(original, X), model_stats(pruned, X)
    assert 0.45 * before.macs <= after.macs <= 0.5 * before.macs
    assert after.params < before.params
    fresh = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert pruned(fresh).shape == original(fresh).shape == (2, 4 + 3, 8 * 8 + 4 * 4 + 2 * 2)


def test_channel_counts_the_python_reads_are_never_cut(routed) -> None:
    original, pruned = routed
    psa, detect = pruned.model[10], pruned.model[23]
    attn = psa.m[0].attn
    assert psa.cv1.conv.out_channels == 2 * psa.c == original.model[10].cv1.conv.out_channels  # split((c, c))
    assert attn.qkv.conv.out_channels == attn.head_dim * attn.num_heads + 2 * attn.key_dim * attn.num_heads
    assert attn.qkv.conv.out_channels == original.model[10].m[0].attn.qkv.conv.out_channels
    assert attn.proj.conv.out_channels == attn.pe.conv.out_channels == psa.c
    assert detect.dfl.conv.in_channels == pruned.reg_max == 16
    assert [branch[-1].out_channels for branch in detect.cv2] == [4 * pruned.reg_max] * 3
    assert [branch[-1].out_channels for branch in detect.cv3] == [pruned.num_classes] * 3
    # what nothing reads is cut, inside the attention stage and the head too
    assert psa.m[0].ffn[0].conv.out_channels < original.model[10].m[0].ffn[0].conv.out_channels
    assert all(branch[0].conv.out_channels < 64 for branch in detect.cv2)
    assert pruned.strides == (8, 16, 32)


def test_pruned_model_matches_onnxruntime_on_fresh_inputs(routed, tmp_path) -> None:
    _, pruned = routed
    path = export_onnx(pruned, X, tmp_path / "routed-pruned.onnx", simplify=False)  # onnxsim alone takes ~6 s here
    report = verify_onnx(pruned, path, tuple(X.shape), trials=2, seed=3)
    assert report.max_rel_error < 1e-5 and report.max_abs_error < 1e-3


class TopLevelReads(nn.Module):
    """Its forward passes ``*args`` on, as Ultralytics' does, which stops torch.fx at the top level;
    the Python reads the channel count of an intermediate tensor and of a layer's weight."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(Conv(3, 8, 3), Conv(8, 16, 3))
        self.mid, self.side = Conv(16, 24, 3), Conv(16, 12)
        self.head = nn.Conv2d(24 + 12, 5, 1)
        self.cache = torch.zeros(1, 7, 1, 1)  # a plain tensor attribute: its shape is a constant

    def forward(self, x: Tensor, *args) -> Tensor:
        return self.predict(x, *args)

    def predict(self, x: Tensor, scale: float = 2.0) -> Tensor:
        s = self.stem(x)
        y = self.mid(s)
        if y.shape[1] > 8:
            y = y * scale
        if self.side.conv.weight.shape[0] != 12 or self.cache.shape[1] != 7:
            raise ValueError("side or cache was changed")
        return self.head(torch.cat([y, self.side(s)], 1))


def group_of(graph: ChannelGraph, module: str, role: Role = Role.CONV_OUT):
    found = [g for g in graph.groups if any(m.module == module and m.role == role for m in g.members)]
    assert len(found) == 1
    return found[0]


def test_reads_of_intermediate_tensors_and_weights_keep_their_channels() -> None:
    graph = analyze(randomise_batchnorm(TopLevelReads()), SMALL)
    assert group_of(graph, "stem.0.conv").prunable
    assert group_of(graph, "mid.conv").blocked_reason.startswith("the model's forward reads the channel count of ")
    for layer in ("side.conv", "stem.1.conv"):  # a weight's shape: its input and output channels
        assert group_of(graph, layer).blocked_reason == "the model's forward reads the channel count of side.conv.weight"
    assert graph.layer_macs["mid.conv"] == 16 * 24 * 9 * 144


def test_ignore_names_the_models_own_modules() -> None:
    graph = analyze(randomise_batchnorm(TopLevelReads()), SMALL, ignore=["stem"])
    assert not any(m.module.startswith("stem.") for g in graph.groups for m in g.members)
    assert group_of(graph, "mid.conv", Role.CONV_IN).blocked_reason == "'stem' is in ignore"
    assert group_of(analyze(randomise_batchnorm(TopLevelReads()), SMALL, ignore=["stem.1"]), "stem.0.conv").blocked_reason == "'stem.1' is in ignore"
    with pytest.raises(EdgeCompressError, match="not modules of the model"):
        analyze(TopLevelReads(), SMALL, ignore=["model.stem"])


class Repeated(TopLevelReads):
    """Exportable, but repeats a prunable tensor's channels: no rule maps that."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(2 * 24 + 12, 5, 1)

    def predict(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        return self.head(torch.cat([self.mid(s).repeat(1, 2, 1, 1), self.side(s)], 1))


class ValueGated(TopLevelReads):
    """Control flow on tensor values at the top level: neither torch.fx nor torch.export traces it."""

    def predict(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        return self.head(torch.cat([self.mid(s if s.sum() > 0 else -s), self.side(s)], 1))


def test_when_both_tracers_fail_one_error_names_both() -> None:
    with pytest.raises(EdgeCompressError) as failure:
        analyze(ValueGated(), SMALL)
    message = str(failure.value)
    assert type(failure.value) is EdgeCompressError and "\n" not in message
    assert message.startswith("torch.fx cannot trace the model's forward (TraceError: ")
    assert " and torch.export cannot analyse it (" in message


def test_an_op_without_a_rule_names_the_module_to_ignore() -> None:
    with pytest.raises(EdgeCompressError, match=r"torch.fx cannot trace .* and on its torch.export graph cannot tell how repeat.* ignore=\['mid.act'\]"):
        analyze(Repeated(), SMALL)
    graph = analyze(randomise_batchnorm(Repeated()), SMALL, ignore=["mid"])
    assert group_of(graph, "stem.1.conv").blocked_reason == "'mid' is in ignore"
    assert group_of(graph, "side.conv").prunable


def test_a_traceable_model_takes_the_fx_path(monkeypatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("torch.export must not run for an fx-traceable model")

    monkeypatch.setattr(torch.export, "export", refuse)
    graph = analyze(randomise_batchnorm(nn.Sequential(Conv(3, 16, 3), Conv(16, 8, 3), nn.Conv2d(8, 5, 1))), SMALL)
    assert [g.size for g in graph.prunable_groups] == [16, 8]


def test_layer_pruning_finds_residual_blocks_on_the_export_graph(tmp_path) -> None:
    """prune_layers works on the routed model: the bottlenecks inside C2f/C3k2 are found by their x + f(x) on the
    torch.export graph (attention blocks, whose add reads a computed tensor, are not candidates); removing the
    weakest keeps the output shapes, and channel pruning afterwards still matches onnxruntime."""
    torch.manual_seed(0)
    model = randomise_batchnorm(RoutedDetector(num_classes=3))
    blocks = {block.module: block for block in residual_blocks(model, X)}
    bottlenecks = {name for name, module in model.named_modules() if type(module).__name__ == "Bottleneck" and module.add}
    assert set(blocks) == bottlenecks and len(bottlenecks) >= 3
    weakest = min(blocks.values(), key=lambda block: block.score)
    assert weakest.score == pytest.approx(model.get_submodule(weakest.batchnorm).weight.abs().mean().item())
    removed = prune_layers(model, X, n=2)
    assert removed[0] == weakest.module and all(isinstance(model.get_submodule(name), nn.Identity) for name in removed)
    ec.prune(model, X, target_macs=0.3)
    path = export_onnx(model, X, tmp_path / "layers.onnx", simplify=False)
    report = verify_onnx(model, path, tuple(X.shape), trials=2, seed=4)
    assert report.max_rel_error < 1e-5 and report.max_abs_error < 1e-3
