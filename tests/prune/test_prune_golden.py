"""Group structures and plans of the test zoo and three bundled models match recorded fingerprints,
so speed work on the analysis cannot change what it finds or cuts.

The fingerprints were recorded with the analysis before issue #3's speed-up; after a deliberate
change of the analysis, review the difference and rerun ``python -m tests.prune.test_prune_golden``
from the repository root.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from edgecompress.graph import ChannelGraph, analyze
from edgecompress.models import build_model
from edgecompress.prune import PrunePlan, plan_pruning

from .prune_zoo import ZOO, build, example_input

FINGERPRINTS = Path(__file__).with_name("golden_fingerprints.json")


def _bundled(name: str, size: int) -> Callable[[], tuple[nn.Module, torch.Tensor]]:
    def make() -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(name, num_classes=10).eval()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.2, 1.5)
        return model, torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

    return make


MODELS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    **{f"test-{name}": (lambda name=name: (build(name), example_input(name))) for name in ZOO},
    "mobilenetv2": _bundled("mobilenetv2", 32),
    "yolo-mbv2": _bundled("yolo-mbv2", 64),
    "yolov8n": _bundled("yolov8n", 64),
}


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def group_fingerprint(graph: ChannelGraph) -> dict[str, object]:
    """Counts plus a digest of every group's size, reason and members (module, role, indices)."""
    lines = [
        f"{group.id} {group.size} {group.blocked_reason!r} " + " ".join(f"{m.module}/{m.role.value}/{m.indices}" for m in group.members)
        for group in graph.groups
    ]
    return {"groups": len(graph.groups), "prunable": len(graph.prunable_groups), "digest": _digest(lines)}


def plan_fingerprint(plan: PrunePlan) -> str:
    return _digest([f"{cut.module} {cut.dim} {cut.size} {cut.removed}" for cut in plan.cuts])


def fingerprint(name: str) -> dict[str, object]:
    model, x = MODELS[name]()
    graph = analyze(model, x)
    plans = {goal: plan_pruning(model, x, **kwargs) for goal, kwargs in (("ratio-0.5", {"ratio": 0.5}), ("macs-0.4", {"target_macs": 0.4}))}
    return {**group_fingerprint(graph), **{goal: plan_fingerprint(plan) for goal, plan in plans.items()}}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_groups_and_plans_match_the_recorded_fingerprints(name: str) -> None:
    recorded = json.loads(FINGERPRINTS.read_text())[name]
    assert fingerprint(name) == recorded


if __name__ == "__main__":
    FINGERPRINTS.write_text(json.dumps({name: fingerprint(name) for name in MODELS}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FINGERPRINTS}")
