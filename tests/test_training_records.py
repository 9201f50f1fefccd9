"""A build records every training stage's epochs (manifest and train.csv), QAT saves the weights it measured best (the
PTQ model among them) and says which, and the report plots the training."""

from __future__ import annotations

import csv
import json
import os

from edgecompress.artifacts import load_model
from edgecompress.models import model_classes
from edgecompress.pipeline import BuildConfig, build
from edgecompress.run import Run
from edgecompress.tasks import torch_predict
from tests.reliability import conftest as reliability

tiny_project = reliability.tiny_project  # the fixture: a tiny classifier and an ImageFolder of real digits

os.environ.setdefault("EDGECOMPRESS_QUIET", "1")
EPOCHS = {"baseline": 2, "sparse": 1, "finetune": 1, "qat": 2}


def _config(project, runs) -> BuildConfig:
    return BuildConfig(target="cpu", task="classify", model=f"{project / 'tiny.py'}:tiny", data=str(project / "data"), calib=str(project / "data" / "train"),
                       image_size=16, batch_size=16, epochs=EPOCHS["baseline"], sparse_epochs=EPOCHS["sparse"], finetune_epochs=EPOCHS["finetune"],
                       qat_epochs=EPOCHS["qat"], calib_images=32, profile_runs=5, profile_rounds=1, runs_dir=str(runs), name="run")


def test_training_stages_log_their_epochs_and_qat_keeps_what_it_measured_best(tiny_project, tmp_path):
    config = _config(tiny_project, tmp_path)
    run_dir = build(config)
    for stage, epochs in EPOCHS.items():
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        rows = manifest["metrics"]["epochs"]
        assert manifest["outputs"]["train_log"] == "train.csv" and [row["epoch"] for row in rows] == list(range(1, epochs + 1)), stage
        with open(run_dir / stage / "train.csv", newline="") as file:
            logged = list(csv.DictReader(file))
        assert [{key: float(value) for key, value in row.items()} for row in logged] == rows, stage
        assert all(row["lr"] > 0 and row["seconds"] >= 0 and row["loss"] > 0 for row in rows), stage
    qat = json.loads((run_dir / "qat" / "manifest.json").read_text())["metrics"]
    assert list(qat["epochs"][0]) == ["epoch", "loss", "lr", "seconds", "top1"]  # QAT is validated every epoch
    measured = [qat["ptq"]["top1"], *(row["top1"] for row in qat["epochs"])]
    assert qat["kept_epoch"] == measured.index(max(measured)) and qat["top1"] == max(measured)
    run = Run(config.resolved())
    saved = load_model(run_dir / "qat" / "model.pt", classes=model_classes(config.model))
    assert run.task.evaluate(torch_predict(saved), saved, run.data.val)["top1"] == qat["top1"]  # the saved weights are the kept ones
    report = (run_dir / "report.md").read_text()
    assert "## Training" in report and "![training loss and top1 per epoch](report/training.png)" in report
    assert (run_dir / "report" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("kept the PTQ model" if qat["kept_epoch"] == 0 else f"kept epoch {qat['kept_epoch']} of 2") in report
