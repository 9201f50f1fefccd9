"""Surgery is exact: channels whose BN gamma and beta (or filters) are zero can be cut without changing outputs."""

from __future__ import annotations

import pytest
import torch

from edgecompress.graph import Role, analyze
from edgecompress.prune import apply_plan, plan_pruning
from edgecompress.prune.plan import PrunePlan

from .prune_zoo import NOT_LOSSLESS, ZOO, build, example_input, outputs


def zero_outputs(module: torch.nn.Module, index: list[int]) -> None:
    """Zero the weights producing output channels ``index`` (a transposed conv stores (in, out / groups, ...))."""
    if not isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
        module.weight[index] = 0
        return
    per_group = module.weight.unflatten(0, (module.groups, -1))  # (groups, in / groups, out / groups, ...)
    width = module.weight.shape[1]
    for channel in index:
        per_group[channel // width, :, channel % width] = 0


def zero_removed_channels(model: torch.nn.Module, plan: PrunePlan, x: torch.Tensor) -> None:
    """Silence the channels the plan removes: BN gamma and beta, producing filters and biases.

    Every activation in the zoo maps 0 to 0 (ReLU, SiLU, PReLU), and GroupNorm loses whole groups, so a silenced channel is exactly 0 wherever it
    is read, and removing it from the readers changes nothing.
    """
    groups = {group.id: group for group in analyze(model, x).groups}
    with torch.no_grad():
        for group_plan in plan.groups:
            for member in groups[group_plan.group_id].members_with(Role.BN, Role.NORM, Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE):
                module = model.get_submodule(member.module)
                index = member.select(group_plan.removed)
                zero_outputs(module, index)
                if module.bias is not None:
                    module.bias[index] = 0


@pytest.mark.parametrize("criterion", ["bn-gamma", "l1"])
@pytest.mark.parametrize("name", sorted(set(ZOO) - NOT_LOSSLESS))
def test_cutting_silenced_channels_is_lossless(name: str, criterion: str, tmp_path) -> None:
    model, x = build(name), example_input(name)
    plan = plan_pruning(model, x, ratio=0.5, criterion=criterion)
    zero_removed_channels(model, plan, x)
    fresh = torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(11))
    expected = outputs(model, fresh)

    apply_plan(model, plan)
    pruned = outputs(model, fresh)
    assert plan.channels_removed > 0
    for want, got in zip(expected, pruned, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    torch.save(model, tmp_path / "pruned.pt")
    reloaded = torch.load(tmp_path / "pruned.pt", weights_only=False)
    for want, got in zip(pruned, outputs(reloaded.eval(), fresh), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
