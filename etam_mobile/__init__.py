"""EfficientTAM Mobile: EfficientTAM split into exportable stages, with a reference tracker."""

__version__ = "0.1.0"
