"""Every input is checked before the first training step: a bad one is one line and exit status 2, in
seconds, with nothing trained; 16-bit images load at their true brightness; a user's data calibrates int8."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecompress.data import ImageFolderDataset, YoloDetectionDataset, check_images, letterbox, load_calibration_images, load_image
from edgecompress.errors import EdgeCompressError
from edgecompress.prune import plan_pruning
from edgecompress.prune.budget import max_removable_fraction
from edgecompress.run import Run
from edgecompress.settings import BuildConfig

from .conftest import build_args, one_line_error, refusal


def _refused(project: Path, runs: Path, *extra: str) -> str:
    """Build with ``extra`` options (the last of a repeated option wins), expect a one-line refusal with nothing trained."""
    error = one_line_error(refusal(*build_args(project, runs, *extra)))
    assert not list(runs.rglob("model.pt")), "a stage trained before the input was refused"
    return error


def _copy_project(project: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    return copy


def test_empty_calibration_folder_is_refused_before_training(tiny_project, tmp_path):
    (tmp_path / "empty").mkdir()
    error = _refused(tiny_project, tmp_path / "runs", "--calib", str(tmp_path / "empty"))
    assert "no images" in error and "empty" in error and "--calib" in error


def test_calibration_folder_of_non_images_is_refused_before_training(tiny_project, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    assert "no images" in _refused(tiny_project, tmp_path / "runs", "--calib", str(notes))
    (notes / "frame.jpg").write_text("a text file named like an image")
    error = _refused(tiny_project, tmp_path / "runs2", "--calib", str(notes))
    assert "frame.jpg" in error and "cannot read image" in error


def test_missing_calibration_folder_is_refused_by_the_settings_check(tiny_project, tmp_path):
    error = _refused(tiny_project, tmp_path / "runs", "--calib", str(tmp_path / "absent"))
    assert "absent" in error and "--calib" in error
    assert not (tmp_path / "runs").exists()


def test_undecodable_validation_image_is_named_before_training(tiny_project, tmp_path):
    project = _copy_project(tiny_project, tmp_path)
    victim = sorted((project / "data" / "val").rglob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated mid-header
    error = _refused(project, tmp_path / "runs")
    assert victim.name in error and "cannot read image" in error


def test_unreachable_target_macs_is_refused_before_training(tiny_project, tmp_path):
    error = _refused(tiny_project, tmp_path / "runs", "--target-macs", "0.99")
    assert "--target-macs 0.99" in error and "out of reach" in error and "--min-channels" in error


def test_huge_image_size_is_one_line_naming_the_flags(tiny_project, tmp_path):
    error = _refused(tiny_project, tmp_path / "runs", "--image-size", "100000")
    assert "--image-size 100000" in error and "--batch-size" in error and "memory" in error


def test_epochs_0_without_weights_is_refused(tiny_project, tmp_path):
    error = _refused(tiny_project, tmp_path / "runs", "--epochs", "0")
    assert "--weights" in error and "--epochs" in error


def test_zero_lr_is_refused(tiny_project, tmp_path):
    assert "--lr" in _refused(tiny_project, tmp_path / "runs", "--lr", "0")


def test_default_lr_is_gentler_for_a_trained_model(tmp_path):
    """0.01 from scratch, 0.001 from --weights (a trained model); a given --lr is kept either way."""
    weights = str(tmp_path / "weights.pt")
    assert BuildConfig().resolved().lr == 1e-2 and BuildConfig(weights=weights).resolved().lr == 1e-3
    assert BuildConfig(weights=weights, lr=0.05).resolved().lr == BuildConfig(lr=0.05).resolved().lr == 0.05


def test_model_that_rejects_the_image_size_is_one_line(tiny_project, tmp_path):
    fixed = tmp_path / "fixed.py"
    fixed.write_text("import torch.nn as nn\n"
                     "def fixed(num_classes=10):\n"
                     "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, num_classes))\n")
    error = _refused(tiny_project, tmp_path / "runs", "--model", f"{fixed}:fixed", "--image-size", "24")
    assert "--image-size" in error and "24x24" in error


# --- the checks, in-process ---------------------------------------------------------------------------


def _classify_config(project: Path, runs: Path, **overrides) -> BuildConfig:
    settings = dict(target="cpu", task="classify", model=f"{project / 'tiny.py'}:tiny", data=str(project / "data"), image_size=16,
                    batch_size=16, epochs=1, calib_images=32, runs_dir=str(runs))
    return BuildConfig(**{**settings, **overrides}).resolved()


def test_user_data_without_calib_calibrates_on_its_training_images(tiny_project, tmp_path):
    run = Run(_classify_config(tiny_project, tmp_path / "runs"))
    files = run.calibration_files()
    train = (tiny_project / "data" / "train").resolve()
    assert len(files) == 32 and all(train in path.resolve().parents for path in files)
    assert len({path.parent.name for path in files}) == 10  # spread over every class folder, not the first few
    assert "training images of --data" in run.calibration_source() and "32 of the 120" in run.calibration_source()
    assert run.calibration_images().shape == (32, 3, 16, 16)
    bundled = Run(BuildConfig(runs_dir=str(tmp_path / "runs")).resolved())
    assert "bundled" in bundled.calibration_source()
    explicit = Run(_classify_config(tiny_project, tmp_path / "runs", calib=str(tiny_project / "data" / "val")))
    assert all("val" in path.parts for path in explicit.calibration_files()) and "--calib" in explicit.calibration_source()


def test_preflight_passes_a_good_build_and_caches_the_decoding(tiny_project, tmp_path, capsys):
    runs = tmp_path / "runs"
    Run(_classify_config(tiny_project, runs)).preflight()
    assert len(list((runs / "_data" / "checked").iterdir())) == 1
    assert "inputs checked" in capsys.readouterr().err


def test_preflight_measures_the_models_activations_against_free_memory(tiny_project, tmp_path, monkeypatch):
    import psutil

    memory = namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(40 * 2**20))
    config = _classify_config(tiny_project, tmp_path / "runs", image_size=64, batch_size=64)
    config.check()  # the settings' floor passes: 8x an input batch of 64 x 3 x 64 x 64 floats is 24 MiB
    with pytest.raises(EdgeCompressError, match="--image-size 64 with --batch-size 64 needs about"):
        Run(config).preflight()  # measured: the tiny model saves ~20x its input for backward


def test_max_removable_fraction_is_where_the_planner_stops():
    from edgecompress.models import resolve_model

    model, example = resolve_model("resnet20"), torch.randn(1, 3, 32, 32)
    for min_channels, round_to in ((8, 8), (4, 1), (8, 16)):
        reachable = max_removable_fraction(model, example, min_channels=min_channels, round_to=round_to)
        assert 0 < reachable < 1
        plan_pruning(model, example, target_macs=reachable - 0.005, min_channels=min_channels, round_to=round_to)
        with pytest.raises(EdgeCompressError, match="out of reach"):
            plan_pruning(model, example, target_macs=(reachable + 1) / 2, min_channels=min_channels, round_to=round_to)


def test_check_images_names_the_first_broken_file_and_caches_success(tmp_path):
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(paths[-1])
    cache = tmp_path / "cache"
    check_images(paths, cache=cache)
    assert len(list(cache.iterdir())) == 1
    paths[2].write_bytes(paths[2].read_bytes()[:200])  # truncated: changes size, so the cached success no longer applies
    paths[3].write_bytes(b"junk")
    with pytest.raises(EdgeCompressError, match=r"2\.jpg .*1 more images fail too"):
        check_images(paths, cache=cache)


# --- 16-bit and other PIL modes -----------------------------------------------------------------------

SIXTEEN_BIT = np.array([[0, 1000, 32768, 65535]] * 4, dtype=np.uint16)  # a 4x4 ramp, one value per column


def test_16_bit_png_loads_at_its_true_brightness(tmp_path):
    Image.fromarray(SIXTEEN_BIT).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"  # what PIL opens a 16-bit greyscale PNG as
    tensor, _ = letterbox(load_image(tmp_path / "ramp.png"), 4)
    expected = torch.tensor([0, 1000, 32768, 65535]) / 65535
    assert tensor.shape == (3, 4, 4)
    assert torch.allclose(tensor, expected.expand(3, 4, 4), atol=1e-6)  # 16-bit precision kept, not clipped to white


def test_16_bit_images_reach_training_evaluation_and_calibration_unclipped(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "yolo" / "images" / split).mkdir(parents=True)
        Image.fromarray(SIXTEEN_BIT).save(tmp_path / "yolo" / "images" / split / "a.png")
        (tmp_path / "cls" / split / "ramp").mkdir(parents=True)
        Image.fromarray(SIXTEEN_BIT).save(tmp_path / "cls" / split / "ramp" / "a.png")
    images = [
        YoloDetectionDataset(tmp_path / "yolo" / "images" / "val", 4)[0][0],
        ImageFolderDataset(tmp_path / "cls" / "val", 4)[0][0],
        load_calibration_images(tmp_path / "cls" / "train", 4)[0],
    ]
    for image in images:
        assert abs(float(image.mean()) - SIXTEEN_BIT.mean() / 65535) < 1e-4  # was ~1.0: every value above 255 read as white


@pytest.mark.parametrize("mode, value, rgb", [
    ("I;16B", 65535 // 4, (0.25, 0.25, 0.25)),
    ("I", 65535, (1.0, 1.0, 1.0)),
    ("F", 0.5, (0.5, 0.5, 0.5)),
    ("LA", (128, 0), (128 / 255,) * 3),
    ("RGBA", (255, 0, 0, 0), (1.0, 0.0, 0.0)),
    ("CMYK", (0, 255, 255, 0), (1.0, 0.0, 0.0)),
    ("P", 1, (0.0, 1.0, 0.0)),
    ("1", 1, (1.0, 1.0, 1.0)),
])
def test_every_pil_mode_loads_as_rgb_in_0_1(monkeypatch, mode, value, rgb):
    image = Image.new(mode, (4, 4), value)
    if mode == "P":
        image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    monkeypatch.setattr(Image, "open", lambda path: image)  # modes PNG cannot store (I;16B, I, F, CMYK) come from other readers
    tensor, _ = letterbox(load_image(Path("any.png")), 4)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor(rgb), atol=1 / 255 + 1e-6), (mode, tensor[:, 0, 0])
