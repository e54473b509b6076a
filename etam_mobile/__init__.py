"""EfficientTAM Mobile: EfficientTAM split into exportable stages, with a reference tracker."""

__version__ = "0.1.0"


def open_tracker(*args, **kwargs):
    """A streaming tracker (etam_mobile.runtime.stream.open_tracker); imported lazily so
    `import etam_mobile` stays cheap."""
    from .runtime.stream import open_tracker as _open

    return _open(*args, **kwargs)
