"""Running FA-Seg over a FiftyOne collection, from what a run is asked to do to what it stores.

- :mod:`.settings`: what a run is asked to do (:class:`RunSettings`, made of the typed parts
  of :mod:`.parts`) and what it recorded (:class:`RunRecord`).
- :mod:`.checks`: every check before the first write (and what a field already holds).
- :mod:`.plan`: what a run will do, and the writes that start and end it.
- :mod:`.segment`: :func:`segment_samples` / :func:`iter_segment_samples`, the driver.
- :mod:`.outputs`, :mod:`.storage`: from rows to stored labels and files.
- :mod:`.classes`, :mod:`.targets`: classes per sample, pixel values per class.
- :mod:`.leases`: one writer per field.
- :mod:`.rerun`: fixing candidate classes and segmenting those samples again
  (:func:`.rerun.set_candidates`, :func:`.rerun.rerun`; not package attributes: the
  submodule has the name).
- :mod:`.model`, :mod:`.models`: FA-Seg as a FiftyOne model, and the bounded model registry.

Importing this package is light; public names are resolved on first use.
"""

from .._lazy import lazy_attributes

_LAZY = {
    "segment_samples": "fiftyone_faseg.run.segment",
    "iter_segment_samples": "fiftyone_faseg.run.segment",
    "RunSummary": "fiftyone_faseg.run.segment",
    "RunSettings": "fiftyone_faseg.run.settings",
    "RunRecord": "fiftyone_faseg.run.settings",
    "FASegModel": "fiftyone_faseg.run.model",
    "FASegModelConfig": "fiftyone_faseg.run.model",
    "load_segmenter": "fiftyone_faseg.run.models",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
