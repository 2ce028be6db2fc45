"""One engine past one process: Ray Data (:mod:`.engine`, :func:`segment_samples_on_ray`).
FiftyOne's delegated operations schedule a run; see docs/scaling.md."""

from .._lazy import lazy_attributes

_LAZY = {
    "segment_samples_on_ray": "fiftyone_faseg.distributed.engine",
    "RayOptions": "fiftyone_faseg.distributed.engine",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
