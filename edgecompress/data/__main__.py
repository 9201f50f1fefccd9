"""``python -m edgecompress.data --out DIR`` (digits detection set) or ``--calib DIR`` (calibration images)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .digits import make_calibration_images, make_digits_detection


def main(argv: list[str] | None = None) -> None:
    """Build the bundled digits detection set and/or the calibration images, print where they went."""
    parser = argparse.ArgumentParser(prog="python -m edgecompress.data", description=__doc__)
    parser.add_argument("--out", type=Path, help="write the digits detection dataset (YOLO layout) here")
    parser.add_argument("--calib", type=Path, help="write calibration images under DIR/images")
    parser.add_argument("--image-size", type=int, default=128, help="canvas side in pixels (default 128)")
    parser.add_argument("--seed", type=int, help="generator seed (default 0 for --out, 1 for --calib)")
    args = parser.parse_args(argv)
    if not (args.out or args.calib):
        parser.error("pass --out DIR and/or --calib DIR")
    if args.out:
        print(make_digits_detection(args.out, image_size=args.image_size, seed=0 if args.seed is None else args.seed))
    if args.calib:
        print(make_calibration_images(args.calib, image_size=args.image_size, seed=1 if args.seed is None else args.seed))


if __name__ == "__main__":
    main()
