"""Analysis (issue #6): input-gradient images (Fig. 5), feature-distance histograms (Fig. 7), reports.

The computations are MLflow-free; `analyze` loads models and data and logs through a RunLogger; the
`analyze` and `report` entry points are commands/analyze.py and commands/report.py.
"""
from ..attacks import input_gradients  # the one ∇ₓ CE (attacks/fgsm.py): re-exported, it is Fig. 5's computation
from .feature_distance import FeatureDistanceResult, feature_distance_figure, feature_distance_summary, feature_distances
from .gradients import gradient_display, gradient_grid_figure, perceptual_alignment

__all__ = ["input_gradients", "gradient_display", "gradient_grid_figure", "perceptual_alignment",
           "feature_distances", "feature_distance_summary", "feature_distance_figure", "FeatureDistanceResult"]
