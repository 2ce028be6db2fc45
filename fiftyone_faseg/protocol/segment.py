"""Running FA-Seg on a benchmark under the paper's protocol, resumably.

Candidate classes per image come from one of three sources (``classes_from``):

-   ``"json"``: the paper's per-image files (``candidate_classes_*.json`` and
    ``caption_*_blip1.json``), stored first in the sample fields ``protocol_candidates``
    and ``protocol_caption`` (:func:`store_protocol_inputs`), then segmented by
    :func:`fiftyone_faseg.run.segment.segment_samples` with ``classes_from="candidates"``;
-   ``"gt"``: the classes present in each ground truth mask (the paper's "Ground
    Truth" row), through :func:`fiftyone_faseg.run.segment.segment_samples`;
-   ``"tagger"``: our BLIP captioner + CLIP tagger over the benchmark's vocabulary,
    through :func:`fiftyone_faseg.run.segment.segment_samples`.

Runs always skip samples that already have a mask, so an interrupted run continues
where it stopped. Score maps are always stored (float16) for the threshold sweep.
"""

import logging

import fiftyone as fo

from ..run import segment as frun
from .importers import GT_FIELD, ID_FIELD

logger = logging.getLogger(__name__)

CANDIDATES_FIELD = "protocol_candidates"
CAPTION_FIELD = "protocol_caption"
CLASS_SOURCES = ("json", "gt", "tagger")


def store_protocol_inputs(samples, vocabulary, candidates_path=None, captions_path=None):
    """Stores the paper's per-image candidates and captions in sample fields.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` with ``image_id``
        vocabulary: the benchmark's :class:`faseg_core.candidates.Vocabulary`
        candidates_path (None): a ``candidate_classes_*.json`` (or ``groundtruth_*_val.json``)
        captions_path (None): a ``caption_*_blip1.json``

    Returns:
        a dict with the number of samples that the files do not cover
    """
    from faseg_core.candidates import read_protocol_candidates, read_protocol_captions

    ids = samples.values(ID_FIELD)
    missing = {}
    for path, field, read in (
        (candidates_path, CANDIDATES_FIELD, lambda p: read_protocol_candidates(p, vocabulary)),
        (captions_path, CAPTION_FIELD, read_protocol_captions),
    ):
        if not path:
            continue
        entries = read(path)
        found = [i for i in ids if i in entries]
        if ids and not found:
            raise ValueError(
                "'%s' has none of the %d image ids of this run (e.g. %r; the file has e.g. %r): "
                "is it the file of this benchmark?" % (path, len(ids), ids[0], next(iter(entries), None))
            )
        if len(found) < len(ids):
            logger.warning("'%s' lacks %d of the %d image ids", path, len(ids) - len(found), len(ids))
        missing[field] = len(ids) - len(found)
        if not samples._dataset.has_sample_field(field):
            if field == CANDIDATES_FIELD:
                samples._dataset.add_sample_field(field, fo.ListField, subfield=fo.StringField)
            else:
                samples._dataset.add_sample_field(field, fo.StringField)
        samples.set_values(field, [entries.get(i) for i in ids])
    return missing


def segment(samples, segmenter, config, classes_from, label_field, vocabulary, output_dir, caption_field=None,
            progress=None, overwrite=False, proposer_kwargs=None):
    """Segments the samples that have no ``label_field`` yet.

    Args:
        samples: the benchmark's samples
        segmenter: a loaded :class:`faseg_core.FASeg` (or a
            :class:`fiftyone_faseg.protocol.harness.TimedSegmenter`)
        config: the run's :class:`faseg_core.FASegConfig` (the segmenter's own is not used)
        classes_from: ``"json"``, ``"gt"`` or ``"tagger"``
        label_field: where the masks go
        vocabulary: the benchmark's vocabulary
        output_dir: the folder of masks and score files
        caption_field (None): a field of captions (``"json"`` uses ``protocol_caption``)
        progress (None): True for a progress bar, or ``callable(done, total)``
        overwrite (False): segment every sample again
        proposer_kwargs (None): ``captioner_path`` / ``tagger_model`` for ``"tagger"``

    Returns:
        a :class:`fiftyone_faseg.run.segment.RunSummary`
    """
    if classes_from not in CLASS_SOURCES:
        raise ValueError("unknown classes_from %r: choose one of %s" % (classes_from, CLASS_SOURCES))
    common = dict(label_field=label_field, output_dir=output_dir, progress=progress, gt_field=GT_FIELD,
                  caption_field=caption_field, segmenter=segmenter, config=config, store_scores=True,
                  skip_existing=not overwrite, overwrite=overwrite)
    if classes_from == "json":
        if not samples._dataset.has_sample_field(CANDIDATES_FIELD):
            raise ValueError(
                "field '%s' does not exist: store the candidates first (store_protocol_inputs, or the "
                "--candidates option)" % CANDIDATES_FIELD
            )
        return frun.segment_samples(samples, classes_from="candidates", classes_field=CANDIDATES_FIELD, **common)
    if classes_from == "gt":
        return frun.segment_samples(samples, classes_from="gt_field", **common)
    return frun.segment_samples(samples, classes_from="tagger", vocabulary=vocabulary, **common,
                                **(proposer_kwargs or {}))
