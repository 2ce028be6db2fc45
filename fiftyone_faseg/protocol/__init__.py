"""Reproducing the FA-Seg paper's table: ``python -m fiftyone_faseg.protocol``.

-   :func:`import_benchmark`: PASCAL VOC 2012, PASCAL Context (59 + background) or
    COCO Object into a persistent FiftyOne dataset with its ground truth
-   :func:`run_protocol`: import, segment resumably (candidates from the paper's JSON
    files, the ground truth or our tagger), evaluate, sweep thresholds, report
-   :func:`fiftyone_faseg.analysis.iterate.sweep`: the mIoU at any thresholds from the stored score maps

Like :mod:`fiftyone_faseg`, importing this package loads neither torch nor FiftyOne.
"""

from fiftyone_faseg._lazy import lazy_attributes

_LAZY = {
    "import_benchmark": "fiftyone_faseg.protocol.importers",
    "run_protocol": "fiftyone_faseg.protocol.harness",
    "make_config": "fiftyone_faseg.protocol.harness",
    "get_benchmark": "fiftyone_faseg.protocol.benchmarks",
    "BENCHMARKS": "fiftyone_faseg.protocol.benchmarks",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
