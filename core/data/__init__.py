"""Datasets: where they live, how they are read, and clear errors when they are missing."""

from ..files import atomic_write
from .images import (
    FASHION_MNIST_CLASSES,
    image_folder_classes,
    load_fashion_mnist,
    load_idx_dataset,
    load_image_files,
    load_image_folder,
    load_mnist,
    load_opencv_digits,
    load_sklearn_digits,
    read_idx,
    write_idx,
)
from .paths import DatasetNotFoundError, data_root

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DatasetNotFoundError",
    "atomic_write",
    "data_root",
    "image_folder_classes",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_image_files",
    "load_image_folder",
    "load_mnist",
    "load_opencv_digits",
    "load_sklearn_digits",
    "read_idx",
    "write_idx",
]
