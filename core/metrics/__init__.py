"""Sample-quality maths shared by the domains: Frechet distance of Gaussian feature fits,
k-NN precision/recall in a feature space, sliced 2-Wasserstein distance of point clouds.

The features themselves (a classifier, an Inception network, a molecule descriptor) belong to
the domain that measures with them.
"""

from .frechet import frechet_distance, gaussian_stats, precision_recall
from .sliced import sliced_wasserstein

__all__ = ["frechet_distance", "gaussian_stats", "precision_recall", "sliced_wasserstein"]
