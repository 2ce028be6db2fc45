"""Which classes each sample is segmented into, and one pixel value per class name.

Class sources (``classes_from``):

-   ``"list"``: the ``classes`` given, for every sample
-   ``"mask_targets"``: every class of the ground truth field's ``mask_targets``
-   ``"gt_field"``: per sample, the classes present in its ground truth mask (the
    paper's "Ground Truth" candidates)
-   ``"tagger"``: per sample, proposed by the BLIP captioner and the CLIP tagger over a
    vocabulary (``classes``, else the ground truth's mask_targets, else PASCAL VOC)
-   ``"candidates"``: per sample, the labels of its ``<label_field>_candidates``
    (e.g. as edited in the App); reruns a field with each sample's own list
"""

import numpy as np

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

from faseg_core.labels import label_dtype
from faseg_core.tokens import clean_classes

from ..constants import BACKGROUND, IGNORE_INDEX
from ..fields import dataset_values, get_mask_targets, int_targets, label_mask
from ..matching import normalize

CANDIDATES = "candidates"
_CHUNK = 10000


def gt_classes(samples, gt_field):
    """`{pixel value: name}` of the ground truth's classes (background and 255 left out)."""
    targets = int_targets(get_mask_targets(samples, gt_field), "ground truth")
    return {v: n for v, n in targets.items() if v not in (0, IGNORE_INDEX) and normalize(n) != BACKGROUND}


def candidate_classes(dataset, ids, field_name):
    """Every class of a per-sample classes field over the samples ``ids`` of a dataset, in
    order of first appearance.

    The field holds :class:`fiftyone.core.labels.Classifications` (as ``<label_field>_candidates``)
    or a list of names.
    """
    if field_name not in dataset.get_field_schema():
        raise ValueError(
            "classes_from='candidates' reads '%s', which dataset '%s' lacks: run FA-Seg once "
            "(it stores each sample's candidates there), edit them with edit_candidates, or "
            "pass classes_field=<a field of class names>" % (field_name, dataset.name)
        )
    path = field_name
    if isinstance(dataset.get_field(field_name), fof.EmbeddedDocumentField):
        path += ".classifications.label"
    names = []
    for start in range(0, len(ids), _CHUNK):
        _, columns = dataset_values(dataset, ids[start : start + _CHUNK], [path])  # every group slice
        labels = columns[path]
        names.extend(name for row in labels if row for name in row if name)
    return clean_classes(names)


def sample_candidates(value):
    """`[(name, confidence, source)]` of one sample's classes field value (Classifications or names)."""
    if value is None:
        return []
    if isinstance(value, fol.Classifications):
        return [(c.label, 1.0 if c.confidence is None else float(c.confidence), c.source or "user")
                for c in value.classifications]
    return [(name, 1.0, "user") for name in value]


def run_vocabulary(samples, classes, classes_from, gt_field, vocabulary=None):
    """Every class name the run may predict, in order (for the tagger: its vocabulary)."""
    if classes_from == "list":
        return clean_classes(classes)
    if classes_from in ("mask_targets", "gt_field"):
        return clean_classes(gt_classes(samples, gt_field).values())
    return list(tagger_vocabulary(samples, classes, gt_field, vocabulary).names)


def run_class_names(dataset, ids, classes, classes_from, gt_field, vocabulary=None, per_sample_field=None):
    """Every class name a run over the samples ``ids`` may write (pixel values are claimed for these)."""
    if classes_from == CANDIDATES:
        return candidate_classes(dataset, ids, per_sample_field)
    return run_vocabulary(dataset, classes, classes_from, gt_field, vocabulary)


def tagger_vocabulary(samples, classes, gt_field, vocabulary=None):
    """The vocabulary the tagger chooses from: given, else `classes`, else the GT's targets, else VOC."""
    from faseg_core.candidates import Vocabulary

    if vocabulary is not None:
        return vocabulary
    if classes:
        return Vocabulary.from_names(clean_classes(classes))
    if gt_field:
        return Vocabulary.from_mask_targets(gt_classes(samples, gt_field))
    return Vocabulary.voc()


MAX_VALUE = 65535  # a PNG mask holds 16-bit values


class ValueAllocator(object):
    """One pixel value per class name, the one rule every writer of mask_targets follows
    (:func:`assign_ids` in memory, :func:`fiftyone_faseg.run.targets.claim_values` by
    atomic database updates).

    A name keeps the value it has. A new name takes its ``preferred`` value (the ground
    truth's, so that predictions and ground truth share values, names compared by
    :func:`fiftyone_faseg.matching.normalize`) when free, else the lowest free value that
    no name of this allocation prefers; never 0 (background) nor 255 (ignored). Names with
    a preferred value are allocated first (:meth:`order`).

    Args:
        names: the class names to allocate
        preferred (None): ``{value: name}`` whose values a name takes when free
    """

    def __init__(self, names, preferred=None):
        self.names = [str(n) for n in names]
        self._preferred = {normalize(n): int(v) for v, n in (preferred or {}).items()}
        self._reserved = {self._preferred[normalize(n)] for n in self.names if normalize(n) in self._preferred}

    def order(self):
        """The names in the order they take values: those with a preferred value first."""
        return sorted(self.names, key=lambda n: normalize(n) not in self._preferred)

    def value(self, name, taken):
        """The value a new ``name`` takes when ``taken`` (values) are in use."""
        value = self._preferred.get(normalize(name))
        if value is not None and value not in taken and value not in (0, IGNORE_INDEX):
            return value
        for value in range(1, MAX_VALUE + 1):
            if value not in taken and value not in self._reserved and value != IGNORE_INDEX:
                return value
        raise ValueError("no pixel value is left for class '%s': a field holds at most %d classes"
                         % (name, MAX_VALUE - 1))


def assign_ids(names, existing=None, preferred=None):
    """`{name: pixel value}`: one value per class name, stable across runs (the rule of
    :class:`ValueAllocator`).

    Args:
        names: the class names of this run.
        existing (None): the label field's current ``{value: name}`` mask_targets; its
            values are kept.
        preferred (None): ``{value: name}`` whose values a name takes when free (the
            ground truth's, so that predictions and ground truth share values).
    """
    ids = {str(n): int(v) for v, n in (existing or {}).items() if int(v) != 0}
    taken = set(ids.values())
    allocator = ValueAllocator(names, preferred)
    for name in allocator.order():
        if name not in ids:
            ids[name] = allocator.value(name, taken)
            taken.add(ids[name])
    return ids


def present_classes(seg, gt_field, names_by_value, sample_id):
    """Names of the ground-truth classes present in a sample's mask (empty when there is none)."""
    if seg is None or not seg.has_mask:
        return []
    values = np.unique(label_mask(seg, gt_field, sample_id))
    return list(dict.fromkeys(names_by_value[v] for v in values.tolist() if v in names_by_value))


def to_mask(label_map, classes, ids):
    """A result's label map (i + 1 = classes[i]) in the run's pixel values."""
    lut = np.array([0] + [ids[name] for name in classes], dtype=np.int64)
    return lut.astype(label_dtype(lut.max()))[label_map]


def kept_indices(names, keep):
    """Indices of ``names`` (a sample's classes) in ``keep`` (names), or None for all."""
    if keep is None:
        return None
    keep = set(keep)
    return [k for k, name in enumerate(names) if name in keep]


def kept_labels(scores, names, keep, threshold, image_size, width, height):
    """The ``(height, width)`` label map of ``(K, h, w)`` scores (0 background, ``k + 1``
    class ``names[k]``) when only the classes ``keep`` (names; None or empty: all) may win:
    what a run with ``keep_classes`` and a re-threshold with ``classes`` both store."""
    from faseg_core.labels import labels_from_scores

    return labels_from_scores(scores, threshold, image_size, width, height, kept_indices(names, keep or None))
