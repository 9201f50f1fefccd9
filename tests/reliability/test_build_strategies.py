"""A build prunes by the strategy named on the command line: ``--strategy iterative`` meets ``--target-macs``
in three passes with training between them, as the prune stage's manifest records."""

from __future__ import annotations

import json

from .conftest import build_args, edgecompress


def test_a_build_prunes_by_the_iterative_strategy_to_its_macs_target(tiny_project, tmp_path):
    runs = tmp_path / "runs"
    # jetson-nano: no int8 (no QAT stage), and its engine stage writes a bundle: the quickest build that prunes
    result = edgecompress(*build_args(tiny_project, runs, "--name", "passes", "--target", "jetson-nano", "--strategy", "iterative",
                                      "--target-macs", "0.4", "--min-channels", "2", "--round-to", "2"))
    assert result.returncode == 0, result.stderr
    manifests = {stage: json.loads((runs / "passes" / stage / "manifest.json").read_text()) for stage in ("baseline", "prune")}
    plan = manifests["prune"]["metrics"]["plan"]
    assert len(plan["passes"]) == 3 and all(p["channels_removed"] > 0 for p in plan["passes"])
    assert plan["target_macs"] == 0.4 and plan["channels_removed"] == sum(p["channels_removed"] for p in plan["passes"])
    assert manifests["prune"]["metrics"]["macs"] <= (1 - 0.4 + 0.005) * manifests["baseline"]["metrics"]["macs"]
