"""The pipeline also compresses classifiers: a ResNet on an ImageFolder of real digit images."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import edgecompress as ec
from edgecompress.pipeline import BuildConfig


@pytest.fixture(scope="module")
def digits_imagefolder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits_cls")
    digits = load_digits()
    for split, indices in {"train": range(0, 400), "val": range(1500, 1600)}.items():
        for i in indices:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{i}.png")
    return root


def test_classifier_build_prunes_quantizes_and_reports(digits_imagefolder, tmp_path):
    run_dir = ec.build(BuildConfig(
        target="jetson-agx-orin", task="classify", model="resnet20", data=str(digits_imagefolder), image_size=32,
        quick=True, epochs=3, train_images=400, runs_dir=str(tmp_path), name="cls", max_drop=0.02,
    ))
    report = json.loads((run_dir / "report.json").read_text())
    rows = {row["model"]: row for row in report["models"]}
    assert set(rows) == {"baseline", "pruned", "int8"}
    assert rows["pruned"]["macs"] < rows["baseline"]["macs"]
    assert rows["baseline"]["metrics_torch"]["top1"] > 0.2  # well above chance (0.1) after two short epochs
    engine = report["stages"]["engine"]["metrics"]
    assert engine["kind"] == "bundle" and engine["precision"] == "int8" and "--int8" in engine["command"]
    sensitivity = json.loads((run_dir / "qat" / "sensitivity.json").read_text())
    assert len(sensitivity["layers"]) >= 21  # every conv of resnet20, plus the placed activation quantizers
    assert sensitivity["within_budget"] or len(sensitivity["skip"]) == len(sensitivity["layers"])
    assert sensitivity["skip"] == report["stages"]["qat"]["metrics"]["kept_float"]
    assert "sensitivity analysis kept" in (run_dir / "report.md").read_text()
