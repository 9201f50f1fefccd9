"""The registry of deployment targets: every board's facts, looked up by name or by an unambiguous alias."""

from __future__ import annotations

from ..engine.target import Target
from ..errors import EdgeCompressError

TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    """Add ``target`` under its name (a later registration of the same name replaces it)."""
    TARGETS[target.name] = target
    return target


def get_target(name: str) -> Target:
    """A registry name, or an alias matching one name's hyphen-separated words ("orin-nano", "4090").

    A name without its kind prefix ("agx-orin" for jetson-agx-orin) picks that target even when longer names
    also contain it (jetson-agx-orin-trt11). Any other alias matching several targets ("orin") is an error
    listing them, rather than a silent pick.
    """
    if name in TARGETS:
        return TARGETS[name]
    unprefixed = [key for key, target in TARGETS.items() if key == f"{target.kind}-{name.lower()}"]
    if len(unprefixed) == 1:
        return TARGETS[unprefixed[0]]
    matches = [key for key in TARGETS if f"-{name.lower()}-" in f"-{key}-"]
    if len(matches) == 1:
        return TARGETS[matches[0]]
    if matches:
        raise EdgeCompressError(f"target {name!r} is ambiguous: {', '.join(matches)}; pass the full name")
    raise EdgeCompressError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)} (run `edgecompress targets` for details)")


def list_targets() -> list[Target]:
    """All targets in registration order: Jetsons (smallest to largest), then GPUs, then the CPU."""
    return list(TARGETS.values())
