"""Two-stage pruning by channel importance, then channel similarity (seed 002), with weight folding.

Stage one removes the ``gamma_ratio`` of prunable channels with the smallest BN gamma (the
``bn-gamma`` criterion, best after sparse training; another can be passed). Stage two runs the pruned
model on calibration batches and, in each channel group it can measure, regresses every channel's feature map on the
other kept channels of the group by **least squares** (not correlation: a channel that is a sum of
two others is fully explained although it correlates with neither perfectly). The score is the
share of the channel's energy the fit leaves unexplained (1 - R^2); the lowest-scoring channels go,
one at a time across all groups, each fit redone on what is still kept. A removed channel
``a_j ~ sum_k c_jk a_k + d_j`` is then folded into the convs that read it: their input weights of
the kept channels k gain ``c_jk`` times the weights of channel j (and their bias ``d_j`` times
them), so the network computes nearly the same before any fine-tuning.

Where it measures: the group's one producing conv, followed through channel-wise layers (BN,
activations, pooling, resizing, depthwise convs: those with a channel-wise rule in the graph
registries) while each feeds only the next; the end of that chain is the feature map measured.

What it folds into, honestly: only when that feature map is read directly, and only, by dense convs
(groups=1) of the group, so the consumers see exactly the measured values and nothing else sees the
channel. Where the map also feeds a concat, a flatten into a linear layer, a grouped conv, an op on
its own or anything else, or where a GroupNorm/LayerNorm normalises across the channels, it falls back
to plain removal (no compensation; ``fold_only=True`` keeps those channels instead). Groups produced by
several convs (a residual add ties them), by a linear layer, by a grouped conv, or by a conv the traced
forward calls more than once are not measured, so stage two leaves them as stage one left them. The
constant ``d_j`` is fitted (features centred) only when every consumer pads without zeros (no padding,
or reflect/replicate/circular), where a constant input map stays constant; with zero padding a folded
bias would be wrong on the border, so there the fit has no constant.

Stage two stops at ``similarity_ratio`` of the channels or at a ``target_macs`` for both stages together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import fx, nn

from ..errors import EdgeCompressError, describe
from ..graph import ChannelGraph, ChannelGroup, Role, analyze
from ..graph.registry import FUNCTION_RULES, METHOD_RULES, MODULE_RULES
from ..graph.rules import passthrough
from ..graph.rules_layers import batchnorm, conv, prelu
from ..graph.trace import UntraceableForward, check_ignore, trace_model
from ..helpers import evaluating, model_device
from .apply import apply_plan
from .budget import CostModel, model_macs
from .criteria import Criterion
from .plan import GroupPlan, LayerCut, PrunePlan, check_arguments, check_ratio, group_rounding, plan_pruning
from .surgery import dimension_size

CHANNELWISE_RULES = (passthrough, batchnorm, prelu)  # graph rules under which channel i stays channel i
RIDGE = 1e-6  # on unit-energy channels: keeps the greedy fits defined when channels are exact copies, and bounds
# every inverse entry by 1 / RIDGE, so one update cancels at most ~6 of float64's 16 digits
REFRESH = 16  # removals from one group between fresh inversions of its moment matrix


@dataclass(frozen=True)
class GroupTreatment:
    """What stage two did with one prunable channel group of the stage-one model."""

    group_id: int
    producer: str  # the conv computing the channels; '' when several layers do
    channels: int
    mode: str  # "fold": measured, removals folded into consumers; "remove": measured, removed plainly; "skip": not measured
    consumers: tuple[str, ...]  # the convs removals are folded into (mode "fold")
    reason: str  # why the group is not folded or not measured; '' for "fold"


@dataclass(frozen=True)
class RemovedChannel:
    """One channel removed by stage two and how well the kept channels of its group explain it."""

    producer: str
    channel: int  # output index of ``producer`` in the stage-one model
    relative_residual: float  # share of the channel's energy (variance, when a constant is fitted) left unexplained
    folded_into: tuple[str, ...]  # the convs whose weights absorbed it; () when removed plainly


@dataclass(frozen=True)
class SimilarityReport:
    """Both stages' plans, how stage two treated each group, and every channel it removed."""

    gamma_plan: PrunePlan
    similarity_plan: PrunePlan
    groups: tuple[GroupTreatment, ...]
    removed: tuple[RemovedChannel, ...]
    macs_before: int  # the whole forward's MACs on the example input (model_stats), before stage one
    macs_after: int  # the same after stage two

    @property
    def gamma_removed(self) -> int:
        return self.gamma_plan.channels_removed

    @property
    def similarity_removed(self) -> int:
        return self.similarity_plan.channels_removed

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for manifests and reports."""
        return {
            "criterion": "similarity",
            "gamma_ratio": self.gamma_plan.ratio,
            "channels_total": self.gamma_plan.channels_total,
            "removed_by_gamma": self.gamma_removed,
            "removed_by_similarity": self.similarity_removed,
            "macs_removed": 1.0 - self.macs_after / max(self.macs_before, 1),
            "folded": sum(1 for channel in self.removed if channel.folded_into),
            "groups": {mode: sum(1 for g in self.groups if g.mode == mode) for mode in ("fold", "remove", "skip")},
            "max_relative_residual": max((c.relative_residual for c in self.removed), default=0.0),
            "removed": [vars(channel) | {"folded_into": list(channel.folded_into)} for channel in self.removed],
            "not_folded": [{"group": g.group_id, "producer": g.producer, "mode": g.mode, "reason": g.reason} for g in self.groups if g.reason],
        }


@dataclass
class _Site:
    """Where a group is measured (``tap``, its channels' indices there) and whether removals fold into its consumers."""

    group: ChannelGroup
    producer: str
    tap: fx.Node
    columns: list[int]
    consumers: tuple[str, ...]
    reason: str  # why removals cannot be folded; '' when they can
    fit_constant: bool
    total: torch.Tensor | None = None
    gram: torch.Tensor | None = None
    rows: int = 0

    def observe(self, value: torch.Tensor) -> None:
        """Accumulate the first and second moments of the measured channels over every position."""
        x = value.detach()[:, self.columns].movedim(1, -1).reshape(-1, len(self.columns)).double()
        total, gram = x.sum(0).cpu(), (x.T @ x).cpu()
        self.total = total if self.total is None else self.total + total
        self.gram = gram if self.gram is None else self.gram + gram
        self.rows += len(x)

    def moments(self) -> torch.Tensor:
        """Covariance when a constant is fitted, else the raw second moments."""
        mean = self.total / self.rows
        second = self.gram / self.rows
        return second - torch.outer(mean, mean) if self.fit_constant else second


class _Recorder(fx.Interpreter):
    """Runs the traced model and hands each measured node's output to its sites."""

    def __init__(self, module: fx.GraphModule, sites: list[_Site]):
        super().__init__(module)
        self.by_node: dict[fx.Node, list[_Site]] = {}
        for site in sites:
            self.by_node.setdefault(site.tap, []).append(site)

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        for site in self.by_node.get(node, ()):
            site.observe(value)
        return value


def prune_by_similarity(
    model: nn.Module,
    example_input: torch.Tensor,
    batches: Iterable[Any],
    *,
    gamma_ratio: float,
    similarity_ratio: float | None = None,
    target_macs: float | None = None,
    ignore: Sequence[str] = (),
    min_channels: int = 1,
    round_to: int = 1,
    fold_only: bool = False,
    criterion: str | Criterion = "bn-gamma",
) -> tuple[nn.Module, SimilarityReport]:
    """Prune ``model`` in place by BN gamma (``gamma_ratio`` of the prunable channels; see ``criterion``), then by
    similarity, folding where it can; returns the model and a :class:`SimilarityReport`.

    Stage two stops at one of: ``similarity_ratio`` (that fraction of the stage-one model's prunable
    channels), or ``target_macs`` (until both stages together remove that fraction of the original
    MACs, as the planner estimates them; nothing when stage one already does). It chooses only among
    measured groups and stops early when all of them are down to max(min_channels, 1) channels.
    ``batches``: a few calibration batches (tensors, or tuples whose first item is the input).
    ``fold_only``: remove stage-two channels only where their contribution is folded into consumers.
    ``round_to``: both stages keep every layer's channel count a multiple of it (as :func:`plan_pruning`),
    stage two by removing from a group as many best-explained channels at a time as that takes.
    ``criterion``: stage one's criterion (seed 002's is BN gamma; one that needs data is prepared on ``batches``).
    """
    check_arguments(gamma_ratio, criterion, min_channels, round_to)
    if (similarity_ratio is None) == (target_macs is None):
        raise EdgeCompressError("pass exactly one of similarity_ratio (e.g. 0.1) or target_macs (e.g. 0.5 halves the MACs)")
    check_ratio(similarity_ratio if similarity_ratio is not None else target_macs)
    inputs = _calibration_inputs(batches, example_input, model_device(model))
    ignored = check_ignore(model, ignore)
    _traced(model, ignored)  # stage two measures on the fx graph: refuse an untraceable model before stage one cuts it
    original = analyze(model, example_input, ignore)
    original_macs = model_macs(model, original)
    gamma_plan = plan_pruning(model, example_input, ratio=gamma_ratio, criterion=criterion, ignore=ignore, min_channels=min_channels,
                              round_to=round_to, graph=original, data=inputs)
    apply_plan(model, gamma_plan)

    graph = analyze(model, example_input, ignore)
    modules = dict(model.named_modules())
    treatments, sites = _sites(model, graph, modules, ignored, inputs)
    candidates = [site for site in sites if not (fold_only and site.reason)]
    if similarity_ratio is not None:
        budget = int(similarity_ratio * sum(group.size for group in graph.prunable_groups))
        done: Callable[[dict[int, int]], bool] = lambda counts: sum(counts.values()) >= budget
    else:
        done = _macs_reached(graph, modules, original_macs, model_macs(model, graph), target_macs)
    chosen = _select(candidates, max(min_channels, 1), {site.group.id: group_rounding(site.group, round_to) for site in candidates}, done)
    removed = [channel for site in candidates for channel in _fold(site, chosen[site.group.id], modules)]
    plan = _cut_plan(graph, candidates, chosen, modules)
    apply_plan(model, plan)
    macs = (original_macs, model_macs(model, analyze(model, example_input, ignore)))
    return model, SimilarityReport(gamma_plan, plan, tuple(treatments), tuple(removed), *macs)


def _sites(
    model: nn.Module, graph: ChannelGraph, modules: dict[str, nn.Module], ignored: frozenset[str], inputs: list[torch.Tensor]
) -> tuple[list[GroupTreatment], list[_Site]]:
    """How stage two treats every prunable group, and the measured sites with their statistics gathered."""
    traced = _traced(model, ignored)
    calls: dict[str, list[fx.Node]] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    treatments, sites = [], []
    for group in graph.prunable_groups:
        found = _site(group, calls, modules, ignored)
        if isinstance(found, str):
            producers = group.members_with(Role.CONV_OUT, Role.LINEAR_OUT)
            treatments.append(GroupTreatment(group.id, producers[0].module if len(producers) == 1 else "", group.size, "skip", (), found))
            continue
        sites.append(found)
        mode = "remove" if found.reason else "fold"
        treatments.append(GroupTreatment(group.id, found.producer, group.size, mode, found.consumers if mode == "fold" else (), found.reason))
    _measure(model, traced, sites, inputs)
    return treatments, sites


def _macs_reached(graph: ChannelGraph, modules: dict[str, nn.Module], original_macs: int, current_macs: int,
                  target: float) -> Callable[[dict[int, int]], bool]:
    """Whether stage one's cut plus ``counts`` more channels per group remove ``target`` of the original MACs
    (each channel of a layer dimension costing the same, as the planner's cost model assumes)."""
    groups = graph.prunable_groups
    cost = CostModel("macs", original_macs, graph, groups, [torch.arange(group.size) for group in groups], modules)
    already = 1.0 - current_macs / max(original_macs, 1)
    return lambda counts: already + cost.removed_fraction([counts.get(group.id, 0) for group in groups]) >= target


def _calibration_inputs(batches: Iterable[Any], example_input: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    inputs = [batch[0] if isinstance(batch, (tuple, list)) and batch else batch for batch in batches]
    if not inputs or not all(isinstance(x, torch.Tensor) and x.dim() == example_input.dim() for x in inputs):
        raise EdgeCompressError(
            f"similarity pruning measures feature maps on calibration batches: pass batches=[tensors shaped like {tuple(example_input.shape)}]"
        )
    return [x.to(device) for x in inputs]


def _traced(model: nn.Module, ignored: frozenset[str]) -> fx.GraphModule:
    try:
        return trace_model(model, ignored)[0]
    except UntraceableForward as exc:
        raise EdgeCompressError(
            f"similarity pruning measures channels on the torch.fx graph, and torch.fx cannot trace the model's forward ({exc.detail}); "
            "use another criterion or make forward traceable"
        ) from None


def _channelwise(node: fx.Node, modules: dict[str, nn.Module], ignored: frozenset[str]) -> bool:
    """Whether ``node`` maps channel i of its one input to channel i of its output, per the graph's rule registries."""
    if node.op == "call_module":
        layer = modules.get(str(node.target))
        if layer is None or str(node.target) in ignored:
            return False
        rule = next((MODULE_RULES[cls] for cls in type(layer).__mro__ if cls in MODULE_RULES), None)
        depthwise = rule is conv and layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
        return rule in CHANNELWISE_RULES or depthwise
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target) in CHANNELWISE_RULES
    return node.op == "call_method" and METHOD_RULES.get(str(node.target)) in CHANNELWISE_RULES


def _user_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "output":
        return "the model output"
    return f"{getattr(node.target, '__name__', node.target)} ({node.name})"


def _site(group: ChannelGroup, calls: dict[str, list[fx.Node]], modules: dict[str, nn.Module], ignored: frozenset[str]) -> _Site | str:
    """Where ``group`` is measured and whether it folds, or why it is not measured."""
    producers = group.members_with(Role.CONV_OUT, Role.LINEAR_OUT)
    if len(producers) != 1:
        return f"{len(producers)} layers produce these channels (tied by an add)"
    producer = producers[0]
    if producer.role is Role.LINEAR_OUT:
        return f"{producer.module} is a linear layer; stage two measures conv feature maps"
    if any(len(indices) != 1 for indices in producer.indices):
        return f"a channel spans several outputs of {producer.module} (a grouped conv)"
    if len(calls.get(producer.module, ())) != 1:
        return f"the traced forward does not call {producer.module} exactly once"
    tap = calls[producer.module][0]
    while len(tap.users) == 1 and _channelwise(user := next(iter(tap.users)), modules, ignored) and user.all_input_nodes == [tap]:
        tap = user
    columns = [indices[0] for indices in producer.indices]
    consumers = tuple(member.module for member in group.members_with(Role.CONV_IN))
    reason = _fold_blocker(group, tap, columns, consumers, calls, modules)
    fit_constant = bool(reason) or all(_pads_constant_to_constant(modules[name]) for name in consumers)
    return _Site(group, producer.module, tap, columns, consumers, reason, fit_constant)


def _fold_blocker(
    group: ChannelGroup, tap: fx.Node, columns: list[int], consumers: tuple[str, ...], calls: dict[str, list[fx.Node]], modules: dict[str, nn.Module]
) -> str:
    """Why removals from ``group`` cannot be folded into the convs reading ``tap``; '' when they can."""
    if group.members_with(Role.NORM):
        return f"{group.members_with(Role.NORM)[0].module} normalises across these channels"
    if not consumers:
        return "no conv reads these channels"
    for user in tap.users:
        if user.op != "call_module" or str(user.target) not in consumers or user.all_input_nodes != [tap]:
            return f"the measured channels also feed {_user_name(user)}"
    for name in consumers:
        layer = modules[name]
        if len(calls.get(name, ())) != 1 or calls[name][0] not in tap.users:
            return f"consumer {name} does not read the measured feature map directly"
        if not isinstance(layer, nn.modules.conv._ConvNd) or layer.transposed or layer.groups != 1:
            return f"consumer {name} is a grouped or transposed conv"
    if any([indices[0] for indices in member.indices] != columns for member in group.members_with(Role.CONV_IN)):
        return "a consumer reads the channels at other indices than the producer writes them"
    return ""


def _pads_constant_to_constant(layer: nn.Module) -> bool:
    """Whether a constant input map stays constant under the conv's padding (so a fitted constant folds into its bias)."""
    padding = layer.padding
    if layer.padding_mode != "zeros" or padding == "valid":
        return True
    return not isinstance(padding, str) and not any(padding)


def _measure(model: nn.Module, traced: fx.GraphModule, sites: list[_Site], inputs: list[torch.Tensor]) -> None:
    recorder = _Recorder(traced, sites)
    with evaluating(model):
        for x in inputs:
            try:
                recorder.run(x)
            except Exception as exc:
                raise EdgeCompressError(
                    f"running the model on a calibration batch of shape {tuple(x.shape)} failed ({describe(exc)}); pass batches the model accepts"
                ) from None


class _GroupFits:
    """Least-squares fits of each kept channel of one group on its other kept channels, all read off the
    inverse P of the (ridged) moment matrix, each channel scaled to unit energy: channel j's unexplained
    share is 1 / P_jj. Removing a channel updates P by its Schur complement (O(n^2)), and every
    ``REFRESH`` removals P is inverted afresh so rounding does not pile up. The ridge only orders the
    removals; folds are fitted without it."""

    def __init__(self, moments: torch.Tensor):
        energy = moments.diagonal()
        self.alive = energy > 1e-12 * float(energy.max().clamp_min(1e-30))  # a channel without energy is fully explained
        scale = torch.where(self.alive, energy, torch.ones_like(energy)).rsqrt()
        self.moments = moments * torch.outer(scale, scale)
        self.kept = list(range(len(moments)))
        self._invert()

    def _invert(self) -> None:
        sub = self.moments[self.kept][:, self.kept]
        self.precision = torch.linalg.inv(sub + RIDGE * torch.eye(len(self.kept), dtype=sub.dtype))
        self.updates = 0

    def best(self) -> tuple[float, int]:
        """The kept channel the others explain best: (unexplained share, channel)."""
        share = torch.where(self.alive[self.kept], 1.0 / self.precision.diagonal(), 0.0).clamp(0.0, 1.0)
        position = int(torch.argmin(share))
        return float(share[position]), self.kept[position]

    def remove(self, channel: int) -> None:
        position = self.kept.index(channel)
        column = self.precision[:, position]
        others = torch.cat([torch.arange(position), torch.arange(position + 1, len(self.kept))])
        del self.kept[position]
        self.updates += 1
        if self.updates == REFRESH:
            self._invert()
        else:
            self.precision = (self.precision - torch.outer(column, column) / column[position])[others[:, None], others]


def _share(residual: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Residual energy over the channel's energy, in [0, 1]; a channel with no energy is fully explained."""
    alive = energy > 1e-12 * float(energy.max().clamp_min(1e-30))
    return torch.where(alive, residual / energy.clamp_min(1e-300), torch.zeros_like(energy)).clamp(0.0, 1.0)


def _select(sites: list[_Site], floor: int, multiples: dict[int, int], done: Callable[[dict[int, int]], bool]) -> dict[int, list[int]]:
    """Per group id, the channels to remove: greedily the group whose kept channels explain one of them best
    (ties to the lower group id), which loses its best-explained channels one at a time, refitted after each,
    down to the next multiple of ``multiples[id]`` (1 channel at a time without rounding), never below
    ``floor`` rounded up to it, until ``done(removed count per group id)``."""
    chosen: dict[int, list[int]] = {site.group.id: [] for site in sites}
    fewest = {site.group.id: min(-(-floor // multiples[site.group.id]) * multiples[site.group.id], site.group.size) for site in sites}

    def next_kept(key: int, kept: int) -> int:
        return (kept - 1) // multiples[key] * multiples[key]

    fits = {site.group.id: _GroupFits(site.moments()) for site in sites if next_kept(site.group.id, site.group.size) >= fewest[site.group.id]}
    best = {key: fit.best() for key, fit in fits.items()}
    while best and not done({key: len(channels) for key, channels in chosen.items()}):
        key = min(best, key=lambda k: (best[k][0], k))
        del best[key]
        fit = fits[key]
        for _ in range(len(fit.kept) - next_kept(key, len(fit.kept))):
            channel = fit.best()[1]
            fit.remove(channel)
            chosen[key].append(channel)
        if next_kept(key, len(fit.kept)) >= fewest[key]:
            best[key] = fit.best()
    return chosen


def _fold(site: _Site, removed: list[int], modules: dict[str, nn.Module]) -> list[RemovedChannel]:
    """Fit each removed channel on the finally kept ones; fold the fit into the consumers when the site allows."""
    if not removed:
        return []
    kept = [c for c in range(site.group.size) if c not in removed]
    moments = site.moments()
    cross = moments[kept][:, removed]
    coefficients = torch.linalg.lstsq(moments[kept][:, kept], cross, driver="gelsd").solution  # (kept, removed)
    residual = moments[removed, removed] - 2 * (coefficients * cross).sum(0) + (coefficients * (moments[kept][:, kept] @ coefficients)).sum(0)
    share = _share(residual, moments[removed, removed])
    folded_into = () if site.reason else site.consumers
    if folded_into:
        mean = site.total / site.rows
        constant = mean[removed] - mean[kept] @ coefficients if site.fit_constant else torch.zeros(len(removed), dtype=mean.dtype)
        for name in folded_into:
            _fold_into(modules[name], [site.columns[c] for c in kept], [site.columns[c] for c in removed], coefficients, constant)
    return [
        RemovedChannel(site.producer, site.columns[c], float(s), folded_into) for c, s in sorted(zip(removed, share.tolist()))
    ]


def _fold_into(layer: nn.Module, kept: list[int], removed: list[int], coefficients: torch.Tensor, constant: torch.Tensor) -> None:
    """Add each removed input channel's weights, scaled by its fit, to the kept input channels (and its constant to the bias)."""
    weight = layer.weight.detach()
    lost = weight[:, removed].double()  # (out, removed, *kernel)
    coefficients, constant = coefficients.to(lost.device), constant.to(lost.device)
    with torch.no_grad():
        weight[:, kept] += torch.einsum("or...,kr->ok...", lost, coefficients).to(weight.dtype)
        if bool(constant.abs().gt(0).any()):
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.out_channels, dtype=weight.dtype, device=weight.device))
            layer.bias += (lost.flatten(2).sum(2) @ constant).to(weight.dtype)


def _cut_plan(graph: ChannelGraph, sites: list[_Site], chosen: dict[int, list[int]], modules: dict[str, nn.Module]) -> PrunePlan:
    """The stage-two removals as a plan for :func:`apply_plan`."""
    removed_by_dim: dict[tuple[str, str], set[int]] = {}
    for site in sites:
        for member in site.group.members:
            for dim in member.role.dims:
                removed_by_dim.setdefault((member.module, dim), set()).update(member.select(chosen[site.group.id]))
    order = {name: position for position, name in enumerate(modules)}
    cuts = tuple(
        LayerCut(module, dim, dimension_size(modules[module], dim), tuple(sorted(indices)))
        for (module, dim), indices in sorted(removed_by_dim.items(), key=lambda item: (order[item[0][0]], item[0][1]))
        if indices
    )
    count = sum(len(channels) for channels in chosen.values())
    return PrunePlan(
        criterion="similarity",
        ratio=None,
        threshold=0.0,
        groups=tuple(
            GroupPlan(site.group.id, site.group.size, site.group.size - len(chosen[site.group.id]), tuple(sorted(chosen[site.group.id])))
            for site in sites
        ),
        cuts=cuts,
        channels_total=sum(group.size for group in graph.prunable_groups),
        channels_removed=count,
        input_shape=graph.input_shape,
        input_dtype=graph.input_dtype,
        output_shapes=graph.output_shapes,
        notes=graph.notes,
    )
