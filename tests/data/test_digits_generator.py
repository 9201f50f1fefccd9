"""The bundled digits detection set: deterministic, disjoint source digits, valid tight labels."""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompress.data import YoloDetectionDataset, load_data_yaml, make_digits_detection
from edgecompress.data.digits import render_canvas, split_source_digits
from edgecompress.errors import EdgeCompressError
from edgecompress.eval import box_iou


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in (".jpg", ".txt")}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    first = make_digits_detection(tmp_path / "a", n_train=12, n_val=6, seed=3).parent
    second = make_digits_detection(tmp_path / "b", n_train=12, n_val=6, seed=3).parent
    other = make_digits_detection(tmp_path / "c", n_train=12, n_val=6, seed=4).parent
    assert len(_files(first)) == 2 * (12 + 6)
    assert _files(first) == _files(second)
    assert _files(first) != _files(other)


def test_reuses_a_matching_build_and_rebuilds_on_new_parameters(tmp_path):
    yaml_path = make_digits_detection(tmp_path / "d", n_train=4, n_val=2)
    image = tmp_path / "d" / "images" / "train" / "train_00000.jpg"
    stamp = image.stat().st_mtime_ns
    assert make_digits_detection(tmp_path / "d", n_train=4, n_val=2) == yaml_path
    assert image.stat().st_mtime_ns == stamp
    make_digits_detection(tmp_path / "d", n_train=3, n_val=2)
    assert len(list((tmp_path / "d" / "images" / "train").iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()], "temporary build folders left behind"


def _build_in_another_process(root: str) -> list[str]:
    make_digits_detection(root, n_train=120, n_val=30)
    return sorted(path.name for path in (Path(root) / "images" / "train").iterdir())


def test_processes_building_one_set_at_once_queue_and_reuse_it(tmp_path):
    """Builds sharing a runs dir make its bundled set at once: one writes it, none deletes what another is writing."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        listings = pool.map(_build_in_another_process, [str(tmp_path / "shared")] * 3)
    assert listings[0] == listings[1] == listings[2] and len(listings[0]) == 120
    assert len(list((tmp_path / "shared" / "labels" / "val").iterdir())) == 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()], "temporary build folders left behind"


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EdgeCompressError, match="not made by the digits generator"):
        make_digits_detection(tmp_path / "mine", n_train=2, n_val=2)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_source_digit_pools_are_disjoint_stratified_and_complete():
    pools = split_source_digits()
    train, val, calib = (set(pools[k].tolist()) for k in ("train", "val", "calib"))
    assert not (train & val) and not (train & calib) and not (val & calib)
    assert len(train | val | calib) == 1797
    from sklearn.datasets import load_digits

    targets = load_digits().target
    for pool in pools.values():
        assert set(targets[pool].tolist()) == set(range(10))
    assert 0.65 < len(train) / 1797 < 0.75 and 0.15 < len(val) / 1797 < 0.25


def test_canvases_only_use_digits_of_their_pool():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    pool = split_source_digits()["val"]
    sevens = pool[targets[pool] == 7]
    for i in range(10):
        _, boxes = render_canvas(np.random.default_rng(i), sevens, 128)
        assert (boxes[:, 0] == 7).all()


def test_labels_are_valid_tight_and_barely_overlapping(tmp_path):
    config = load_data_yaml(make_digits_detection(tmp_path / "ds", n_train=30, n_val=10, seed=5))
    assert config.nc == 10 and config.names == tuple(str(d) for d in range(10))
    dataset = YoloDetectionDataset.from_config(config, "train", 128)  # validates every label line
    for targets in dataset.labels:
        assert 1 <= len(targets) <= 4
        assert ((targets[:, 1:] > 0) & (targets[:, 1:] <= 1)).all()
        side_px = targets[:, 3:] * 128
        assert (side_px.max(axis=1) >= 8).all() and (side_px.max(axis=1) <= 45).all()
        xyxy = torch.from_numpy(np.concatenate([targets[:, 1:3] - targets[:, 3:] / 2, targets[:, 1:3] + targets[:, 3:] / 2], 1))
        iou = box_iou(xyxy, xyxy).fill_diagonal_(0)
        assert iou.max() <= 0.1 + 1e-4


def test_boxes_enclose_the_ink():
    """Everything outside the boxes is background: its contrast to the canvas level stays small."""
    for seed in range(6):
        image, boxes = render_canvas(np.random.default_rng(seed), split_source_digits()["train"], 128)
        grey = image.astype(np.float32).mean(axis=2) / 255
        outside = np.ones_like(grey, dtype=bool)
        for _, x1, y1, x2, y2 in boxes.astype(int):
            inside = grey[y1:y2, x1:x2]
            assert np.abs(inside - np.median(grey)).max() > 0.3  # the digit stands out inside its box
            outside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = False
        assert np.percentile(np.abs(grey[outside] - np.median(grey)), 99.9) < 0.3


def test_rejects_canvases_too_small_for_a_digit(tmp_path):
    with pytest.raises(EdgeCompressError, match="image_size >= 64"):
        make_digits_detection(tmp_path / "tiny", n_train=2, n_val=2, image_size=32)
    assert not (tmp_path / "tiny").exists()
