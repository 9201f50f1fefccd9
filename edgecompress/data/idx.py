"""IDX files (the MNIST family's format) and Fashion-MNIST as an ImageFolder classification set.

An IDX file is a 4-byte magic number, ``0x00 0x00 <dtype code> <number of dims>``, one big-endian
uint32 size per dim, then the data, big-endian, in C order (http://yann.lecun.com/exdb/mnist/,
"THE IDX FILE FORMAT"). Files may be gzipped, as MNIST and Fashion-MNIST ship them.

Fashion-MNIST (Xiao et al., 2017: 70,000 28x28 greyscale product images, 10 classes) comes with
Debian's package ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``.
:func:`make_fashion_mnist` writes it as ``train/`` (the 60,000 training images) and ``val/`` (the
10,000 test images) of class folders, which ``edgecompress build --task classify --data ROOT`` reads.
Write one with ``python -m edgecompress.data.idx --out ROOT [--train N --val N]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..artifacts import atomic_dir, write_json, writers_queued
from ..errors import EdgeCompressError, describe

IDX_DTYPES: dict[int, np.dtype] = {  # the format's type codes; all multi-byte types are big-endian
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs it
FASHION_MNIST_FILES = {  # split -> (images, labels); the upstream test set serves as val
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (  # label -> description, from the dataset's README
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
PARAMS_FILE = "idx_imagefolder.json"
WRITER_VERSION = 1


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (gzipped or not), in native byte order; a truncated, padded
    or garbled file is a one-line error naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise EdgeCompressError(f"cannot read IDX file {path} ({describe(exc)}); download or install it again") from None
    return parse_idx(data, str(path))


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; ``name`` labels the errors."""
    fix = "download or install it again"
    if len(data) < 4:
        raise EdgeCompressError(f"{name} is truncated: {len(data)} bytes, shorter than the 4-byte IDX magic; {fix}")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise EdgeCompressError(f"{name} is not an IDX file (magic {data[:4].hex()} does not start with 0000); {fix}")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{key:02X}" for key in IDX_DTYPES)
        raise EdgeCompressError(f"{name} has unknown IDX type code 0x{code:02X} (known: {known}); {fix}")
    if ndim == 0:
        raise EdgeCompressError(f"{name} declares 0 dimensions; an IDX file holds an array of at least one; {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise EdgeCompressError(f"{name} is truncated inside its header ({len(data)} of {header} bytes); {fix}")
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        problem = "is truncated" if len(data) - header < expected else "has trailing bytes"
        raise EdgeCompressError(
            f"{name} {problem}: shape {shape} of {dtype.name} needs {expected} data bytes, it has {len(data) - header}; {fix}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images: str | os.PathLike, labels: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N,H,W]`` (greyscale) or ``[N,H,W,3]`` (RGB) of unsigned bytes and their ``[N]`` integer labels."""
    pixels, targets = read_idx(images), read_idx(labels)
    if pixels.dtype != np.uint8 or not (pixels.ndim == 3 or (pixels.ndim == 4 and pixels.shape[3] == 3)):
        raise EdgeCompressError(
            f"{images} holds {pixels.dtype} of shape {pixels.shape}; image IDX files must be unsigned bytes [N,H,W] or [N,H,W,3]"
        )
    if targets.ndim != 1 or targets.dtype.kind not in "iu" or len(targets) != len(pixels):
        raise EdgeCompressError(
            f"{labels} holds {targets.dtype} of shape {targets.shape}; it must hold one integer label per image of {images} ({len(pixels)})"
        )
    return pixels, targets.astype(np.int64)


def balanced_subset(labels: np.ndarray, count: int, num_classes: int, seed: int) -> np.ndarray:
    """``count`` sample indices, sorted, drawn at random (fixed ``seed``) in equal numbers from each
    class (the first ``count % num_classes`` classes take one more)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in range(num_classes):
        wanted = count // num_classes + (cls < count % num_classes)
        pool = np.flatnonzero(labels == cls)
        if wanted > len(pool):
            raise EdgeCompressError(f"a subset of {count} needs {wanted} images of class {cls}, which has {len(pool)}; ask for fewer")
        chosen.append(rng.choice(pool, wanted, replace=False))
    return np.sort(np.concatenate(chosen))


def class_folders(names: Sequence[str]) -> list[str]:
    """Folder name per class: its zero-padded label then its name made path-safe (``0_t-shirt-top``),
    so the sorted folders (ImageFolder's class order) keep the labels' order."""
    width = len(str(len(names) - 1))
    return [f"{label:0{width}d}_{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}" for label, name in enumerate(names)]


def write_imagefolder(
    root: str | os.PathLike,
    splits: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    class_names: Sequence[str],
    *,
    limits: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write each split's IDX image/label pair as ``root/<split>/<class folder>/<index>.png``; returns ``root``.

    ``splits`` maps a split name (``train``, ``val``) to its (images, labels) IDX files; ``limits``
    optionally caps a split to a class-balanced random subset of that many images (fixed ``seed``).
    The file name is the image's index in its IDX file. The folder is written whole or not at all,
    and reused as is when written before with the same files and settings.
    """
    root = Path(root).resolve()
    limits = dict(limits or {})
    unknown = sorted(set(limits) - set(splits))
    if unknown:
        raise EdgeCompressError(f"limits name splits {unknown} that are not written; use {sorted(splits)}")
    bad = {split: n for split, n in limits.items() if not isinstance(n, int) or n < len(class_names)}
    if bad:
        raise EdgeCompressError(f"subset sizes {bad} must be integers of at least one image per class ({len(class_names)})")
    params = {
        "writer": "idx-imagefolder", "version": WRITER_VERSION, "classes": list(class_names), "seed": seed,
        "splits": {split: [_fingerprint(Path(path)) for path in pair] for split, pair in splits.items()},
        "limits": limits,
    }
    with writers_queued(root):  # processes writing the same folder at once: the first writes it, the others reuse it
        if _written_with(root, params):
            return root
        if root.exists() and any(root.iterdir()) and not (root / PARAMS_FILE).is_file():
            raise EdgeCompressError(f"{root} exists and was not written by write_imagefolder; pass an empty or new folder")
        folders = class_folders(class_names)
        arrays = {split: read_idx_pair(*pair) for split, pair in splits.items()}
        for split, (_, labels) in arrays.items():
            if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
                raise EdgeCompressError(f"labels of split {split!r} span {labels.min()}..{labels.max()}; {len(class_names)} class names were given")
        with atomic_dir(root) as tmp:
            for split, (images, labels) in arrays.items():
                chosen = balanced_subset(labels, limits[split], len(class_names), seed) if split in limits else np.arange(len(labels))
                _write_split(tmp / split, images, labels, chosen, folders)
            write_json(tmp / PARAMS_FILE, params)
    return root


def _write_split(folder: Path, images: np.ndarray, labels: np.ndarray, chosen: np.ndarray, class_dirs: list[str]) -> None:
    width = len(str(len(images) - 1))
    for name in class_dirs:
        (folder / name).mkdir(parents=True)
    for index in chosen.tolist():
        Image.fromarray(images[index]).save(folder / class_dirs[labels[index]] / f"{index:0{width}d}.png")


def _fingerprint(path: Path) -> dict:
    try:
        stat = path.stat()
    except OSError as exc:
        raise EdgeCompressError(f"cannot read IDX file {path} ({describe(exc)}); check the path") from None
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _written_with(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / PARAMS_FILE).read_text()) == params
    except (OSError, ValueError):
        return False


def fashion_mnist_files(folder: str | os.PathLike = FASHION_MNIST_DIR) -> dict[str, tuple[Path, Path]]:
    """Split -> (images, labels) paths of Fashion-MNIST in ``folder`` (Debian's install path by default)."""
    folder = Path(folder)
    files = {split: (folder / images, folder / labels) for split, (images, labels) in FASHION_MNIST_FILES.items()}
    missing = [path.name for pair in files.values() for path in pair if not path.is_file()]
    if missing:
        raise EdgeCompressError(
            f"Fashion-MNIST files {missing} are not in {folder}; install them with `apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu) or pass the folder holding the four .gz files"
        )
    return files


def make_fashion_mnist(
    root: str | os.PathLike,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    seed: int = 0,
    source: str | os.PathLike = FASHION_MNIST_DIR,
) -> Path:
    """Write Fashion-MNIST as an ImageFolder set (``train/``: its training images, ``val/``: its test
    images), optionally class-balanced subsets of ``n_train`` / ``n_val`` images; returns ``root``."""
    files = fashion_mnist_files(source)
    limits = {split: n for split, n in (("train", n_train), ("val", n_val)) if n is not None}
    return write_imagefolder(root, files, FASHION_MNIST_CLASSES, limits=limits, seed=seed)


def main(argv: list[str] | None = None) -> None:
    """Write Fashion-MNIST as an ImageFolder set and print its folder."""
    parser = argparse.ArgumentParser(prog="python -m edgecompress.data.idx", description=make_fashion_mnist.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write train/ and val/ into")
    parser.add_argument("--train", type=int, help="class-balanced subset of the 60,000 training images")
    parser.add_argument("--val", type=int, help="class-balanced subset of the 10,000 test images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets (default 0)")
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DIR, help=f"folder of the .gz files (default {FASHION_MNIST_DIR})")
    args = parser.parse_args(argv)
    try:
        print(make_fashion_mnist(args.out, n_train=args.train, n_val=args.val, seed=args.seed, source=args.source))
    except EdgeCompressError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
