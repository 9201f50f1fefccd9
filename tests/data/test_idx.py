"""IDX files: every type code, gzipped and raw, malformed files refused; IDX pairs written as an
ImageFolder set the classify task reads; the real Fashion-MNIST from Debian's package when installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompress.data.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    IDX_DTYPES,
    class_folders,
    fashion_mnist_files,
    make_fashion_mnist,
    read_idx,
    write_imagefolder,
)
from edgecompress.errors import EdgeCompressError

SPEC_TYPES = {0x08: "B", 0x09: "b", 0x0B: "h", 0x0C: "i", 0x0D: "f", 0x0E: "d"}  # struct codes of the format's types


def idx_bytes(code: int, values: list, shape: tuple[int, ...]) -> bytes:
    """An IDX file written by hand from the format's description (big-endian header and data)."""
    header = bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", size) for size in shape)
    return header + struct.pack(f">{len(values)}{SPEC_TYPES[code]}", *values)


def write(path: Path, data: bytes, gzipped: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


SAMPLES = {
    0x08: [0, 1, 127, 128, 255, 7],
    0x09: [-128, -1, 0, 1, 127, 5],
    0x0B: [-32768, -2, 0, 300, 32767, 9],
    0x0C: [-(2**31), -70000, 0, 70000, 2**31 - 1, 3],
    0x0D: [-1.5, 0.0, 0.25, 3.0, 1e6, -2.0],
    0x0E: [-1e-300, 0.0, 0.1, 2.5, 1e300, 7.0],
}


def test_every_spec_type_code_is_supported() -> None:
    assert set(IDX_DTYPES) == set(SPEC_TYPES)


@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("code", sorted(SAMPLES), ids=lambda code: f"0x{code:02X}")
def test_read_idx_decodes_every_type_gzipped_or_not(tmp_path: Path, code: int, gzipped: bool) -> None:
    path = write(tmp_path / "a.idx", idx_bytes(code, SAMPLES[code], (2, 3)), gzipped)
    array = read_idx(path)
    assert array.shape == (2, 3)
    assert array.dtype.isnative and array.dtype.kind == IDX_DTYPES[code].kind and array.dtype.itemsize == IDX_DTYPES[code].itemsize
    np.testing.assert_array_equal(array.ravel(), np.array(SAMPLES[code], dtype=array.dtype))


def test_read_idx_keeps_c_order_of_three_dims(tmp_path: Path) -> None:
    values = list(range(24))
    array = read_idx(write(tmp_path / "a", idx_bytes(0x08, values, (2, 3, 4)), gzipped=False))
    np.testing.assert_array_equal(array, np.arange(24).reshape(2, 3, 4))


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda data: data[:-1], r"is truncated: shape \(2, 3\) of int16 needs 12 data bytes, it has 11"),
        (lambda data: data[:9], "truncated inside its header"),
        (lambda data: data[:3], "shorter than the 4-byte IDX magic"),
        (lambda data: data + b"\0", "has trailing bytes"),
        (lambda data: b"\x01" + data[1:], "is not an IDX file"),
        (lambda data: data[:2] + b"\x0a" + data[3:], "unknown IDX type code 0x0A"),
        (lambda data: data[:3] + b"\0", "declares 0 dimensions"),
    ],
    ids=["data", "header", "magic", "trailing", "magic-garbled", "type-code", "no-dims"],
)
def test_malformed_files_are_refused_in_one_line(tmp_path: Path, mangle, message: str) -> None:
    path = write(tmp_path / "bad.idx", mangle(idx_bytes(0x0B, SAMPLES[0x0B], (2, 3))), gzipped=False)
    with pytest.raises(EdgeCompressError, match=message) as caught:
        read_idx(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_truncated_gzip_stream_is_refused(tmp_path: Path) -> None:
    whole = gzip.compress(idx_bytes(0x08, list(range(200)), (200,)))
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(EdgeCompressError, match="cannot read IDX file .*cut.gz"):
        read_idx(path)


def tiny_pair(folder: Path, labels: list[int], side: int = 5) -> tuple[Path, Path]:
    """An image/label IDX pair whose image i is filled with the value 10 * i (so files can be traced back)."""
    pixels = [10 * i for i in range(len(labels)) for _ in range(side * side)]
    images = write(folder / "images.gz", idx_bytes(0x08, pixels, (len(labels), side, side)), gzipped=True)
    return images, write(folder / "labels", idx_bytes(0x08, labels, (len(labels),)), gzipped=False)


def test_write_imagefolder_lays_out_classes_and_balanced_subsets(tmp_path: Path) -> None:
    from edgecompress.tasks.classify import ClassificationTask

    names = ("Cat/kitten", "Dog", "Bird")
    train = tiny_pair(tmp_path, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
    (tmp_path / "v").mkdir()
    val = tiny_pair(tmp_path / "v", [2, 1, 0])
    root = write_imagefolder(tmp_path / "set", {"train": train, "val": val}, names, limits={"train": 6}, seed=3)
    folders = ["0_cat-kitten", "1_dog", "2_bird"]
    assert class_folders(names) == folders
    for split, per_class in (("train", 2), ("val", 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == folders
        assert all(len(list((root / split / name).glob("*.png"))) == per_class for name in folders)
    picked = next((root / "train" / "1_dog").glob("*.png"))
    image = np.asarray(Image.open(picked))
    assert image.shape == (5, 5) and (image == 10 * int(picked.stem)).all()  # the file is the image at that index
    again = write_imagefolder(tmp_path / "set", {"train": train, "val": val}, names, limits={"train": 6}, seed=3)
    assert sorted(again.rglob("*.png")) == sorted(root.rglob("*.png"))
    data = ClassificationTask().load(root, image_size=8, batch_size=4)
    assert data.num_classes == 3 and data.names == folders
    images, labels = next(iter(data.val))
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == [0, 1, 2]


def test_write_imagefolder_refuses_bad_requests_before_writing(tmp_path: Path) -> None:
    pair = tiny_pair(tmp_path, [0, 1, 0, 1])
    with pytest.raises(EdgeCompressError, match="needs 3 images of class 0, which has 2"):
        write_imagefolder(tmp_path / "a", {"train": pair}, ("a", "b"), limits={"train": 6})
    with pytest.raises(EdgeCompressError, match="span 0..1; 1 class names"):
        write_imagefolder(tmp_path / "b", {"train": pair}, ("a",))
    with pytest.raises(EdgeCompressError, match="splits \\['val'\\] that are not written"):
        write_imagefolder(tmp_path / "c", {"train": pair}, ("a", "b"), limits={"val": 2})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EdgeCompressError, match="not written by write_imagefolder"):
        write_imagefolder(tmp_path / "mine", {"train": pair}, ("a", "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_fashion_mnist_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(EdgeCompressError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_files(tmp_path)


@pytest.mark.skipif(
    not all((FASHION_MNIST_DIR / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    files = fashion_mnist_files()
    labels = read_idx(files["val"][1])
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
    assert read_idx(files["train"][1]).shape == (60000,)
    root = make_fashion_mnist(tmp_path / "fashion", n_train=20, n_val=10)
    assert [p.name for p in sorted((root / "train").iterdir())] == class_folders(FASHION_MNIST_CLASSES)
    assert len(list((root / "train").rglob("*.png"))) == 20 and len(list((root / "val").rglob("*.png"))) == 10
    image = Image.open(next((root / "val" / "9_ankle-boot").glob("*.png")))
    assert image.size == (28, 28) and image.mode == "L"
