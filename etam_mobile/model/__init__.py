"""Export-friendly EfficientTAM: one module per stage, one container in checkpoint layout."""
from .efficienttam import EfficientTAM, build_model

__all__ = ["EfficientTAM", "build_model"]
