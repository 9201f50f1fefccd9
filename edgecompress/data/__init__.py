"""Data in: YOLO-layout detection sets and their training augmentations, image-folder classification sets, the
DataLoaders tasks hand out (the same batches whatever the number of workers), calibration images, the checks every
image passes before training, the bundled digits detection set built from scikit-learn's handwritten digits, and IDX
files (Debian's Fashion-MNIST) written as an image-folder set."""

from .augment import AUGMENTATIONS, Augmentation, augment_detection, get_augmentation
from .calib import calib_batches, calibration_paths, load_calibration_images, load_images, spread
from .checks import check_images, image_paths
from .digits import make_calibration_images, make_digits_detection
from .idx import FASHION_MNIST_CLASSES, make_fashion_mnist, read_idx, read_idx_pair, write_imagefolder
from .imagefolder import ImageFolderDataset
from .loaders import evaluation_loader, training_loader
from .preprocess import IMAGE_SUFFIXES, Letterbox, letterbox, list_images, load_image
from .yolo import DataConfig, YoloDetectionDataset, collate_detection, label_path, load_data_yaml, read_labels

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "FASHION_MNIST_CLASSES",
    "IMAGE_SUFFIXES",
    "DataConfig",
    "ImageFolderDataset",
    "Letterbox",
    "YoloDetectionDataset",
    "augment_detection",
    "calib_batches",
    "calibration_paths",
    "check_images",
    "collate_detection",
    "evaluation_loader",
    "get_augmentation",
    "image_paths",
    "label_path",
    "letterbox",
    "list_images",
    "load_calibration_images",
    "load_data_yaml",
    "load_image",
    "load_images",
    "make_calibration_images",
    "make_digits_detection",
    "make_fashion_mnist",
    "read_idx",
    "read_idx_pair",
    "read_labels",
    "spread",
    "training_loader",
    "write_imagefolder",
]
