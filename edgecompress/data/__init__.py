"""Data in: YOLO-layout detection sets, image-folder classification sets, calibration images, and the
bundled digits detection set built from scikit-learn's handwritten digits."""

from .calib import calib_batches, load_calibration_images
from .digits import make_calibration_images, make_digits_detection
from .imagefolder import ImageFolderDataset
from .preprocess import IMAGE_SUFFIXES, Letterbox, letterbox, list_images, load_rgb
from .yolo import DataConfig, YoloDetectionDataset, collate_detection, label_path, load_data_yaml, read_labels

__all__ = [
    "IMAGE_SUFFIXES",
    "DataConfig",
    "ImageFolderDataset",
    "Letterbox",
    "YoloDetectionDataset",
    "calib_batches",
    "collate_detection",
    "label_path",
    "letterbox",
    "list_images",
    "load_calibration_images",
    "load_data_yaml",
    "load_rgb",
    "make_calibration_images",
    "make_digits_detection",
    "read_labels",
]
