"""mIoU evaluation of FA-Seg (or any) semantic segmentations inside FiftyOne, and the views
that find its failure cases.

:func:`evaluate_faseg` runs FiftyOne's own
:meth:`evaluate_segmentations() <fiftyone.core.collections.SampleCollection.evaluate_segmentations>`
with a custom method, :class:`FASegEvaluationConfig`, so the run is a regular
``"segmentation"`` evaluation (the App's Model Evaluation panel shows it, with its
confusion matrix and its ``miou`` metric) that matches classes **by name**
(:func:`match_classes`) and writes, sample by sample, the per-sample mIoU, per-class IoU,
confusion pairs and an error overlay (:mod:`.per_sample`). The FA-Seg panel
(``operators/panel.py``) shows :func:`evaluation_summary`; :func:`class_view` and
:func:`confusion_view` are its click-throughs (with :func:`missed_view` and
:func:`false_alarm_view`); :meth:`FASegResults.class_table` is its per-class table; :func:`is_stale` tells whether the
prediction changed since, and :func:`reevaluate_faseg` runs it again.

Modules: :mod:`fiftyone_faseg.matching` (class names), :mod:`.method` (config, method, results),
:mod:`.reading` (masks streamed from the database), :mod:`.results`,
:mod:`.per_sample` (what each sample gets), :mod:`.outputs` (fields, mask_targets, index,
saved view; cleanup and rename), :mod:`.views`, :mod:`.summary`, :mod:`.api`.
"""

from ..constants import MIOU_METRIC_URI
from .api import evaluate_faseg, reevaluate_faseg
from ..matching import UNNAMED, Aliases, match_classes
from .method import FASegEvaluation, FASegEvaluationConfig, accuracy_precision_recall, mask_format_problem
from .results import MIOU_LABEL, FASegResults, as_percent, miou_of
from .outputs import DEFAULT_WORST_K, field_names
from .per_sample import ERROR_TARGETS
from .summary import (
    evaluation_summary,
    has_results,
    is_stale,
    all_faseg_evaluations,
    list_faseg_evaluations,
    preview_miou,
    unfinished_faseg_evaluations,
)
from .views import class_view, confusion_view, false_alarm_view, missed_view
