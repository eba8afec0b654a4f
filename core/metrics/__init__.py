"""Sample-quality metrics (classifier-feature FID, precision/recall) and image grids."""

from .fid import (
    ClassifierConfig,
    FeatureClassifier,
    classifier_accuracy,
    fid_with_classifier,
    frechet_distance,
    gaussian_stats,
    precision_recall,
    train_feature_classifier,
)
from .images import save_image_grid

__all__ = [
    "ClassifierConfig",
    "FeatureClassifier",
    "classifier_accuracy",
    "fid_with_classifier",
    "frechet_distance",
    "gaussian_stats",
    "precision_recall",
    "save_image_grid",
    "train_feature_classifier",
]
