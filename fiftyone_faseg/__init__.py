"""FiftyOne SDK of FA-Seg: ``fiftyone_faseg``.

Kept light: importing this package imports neither torch nor FiftyOne, so that
``fiftyone_faseg.metrics`` (pure numpy) serves the benchmark harness without them.
Public names are resolved on first use.
"""

from ._lazy import lazy_attributes

_LAZY = {
    "evaluate_faseg": "fiftyone_faseg.evaluation",
    "FASegResults": "fiftyone_faseg.evaluation",
    "reevaluate_faseg": "fiftyone_faseg.evaluation",
    "class_view": "fiftyone_faseg.evaluation",
    "confusion_view": "fiftyone_faseg.evaluation",
    "FASegModel": "fiftyone_faseg.run.model",
    "FASegModelConfig": "fiftyone_faseg.run.model",
    "segment_samples": "fiftyone_faseg.run.segment",
    "iter_segment_samples": "fiftyone_faseg.run.segment",
    "segment_samples_on_ray": "fiftyone_faseg.distributed.engine",
    "RunSummary": "fiftyone_faseg.run.segment",
    "load_segmenter": "fiftyone_faseg.run.models",
    "RunSettings": "fiftyone_faseg.run.settings",
    "RunRecord": "fiftyone_faseg.run.settings",
    "DEFAULT_MODEL": "fiftyone_faseg.constants",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
