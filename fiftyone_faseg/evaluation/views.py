"""Views of an FA-Seg evaluation's failure cases, read from what it stored on the samples
(nothing is recomputed): samples sorted by one class's IoU, the samples where one
(ground truth, prediction) confusion covers the most pixels, and where a class was missed
or falsely predicted.
"""

from fiftyone import ViewField as F

from .outputs import owned


def class_view(samples, eval_key, class_name, worst_first=True):
    """The samples where ``class_name`` is in the ground truth or the prediction, sorted
    by that class's IoU in the sample (worst first); ``<eval_key>_classes`` shows only
    that class.

    Example usage::

        from fiftyone_faseg.evaluation import class_view

        session.view = class_view(dataset, "faseg_eval", "person")

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        eval_key: an FA-Seg evaluation key
        class_name: a class of the evaluation
        worst_first (True): sort by increasing IoU

    Returns:
        a :class:`fiftyone.core.view.DatasetView`
    """
    field = _field(samples, eval_key, "classes", class_name)
    view = samples.filter_labels(field, F("label") == class_name)
    return view.sort_by(F(field + ".classifications.confidence").min(), reverse=not worst_first)


def confusion_view(samples, eval_key, gt_class, pred_class):
    """The samples where ground truth ``gt_class`` was predicted as ``pred_class``, the
    most such pixels first; ``<eval_key>_confusions`` holds only that pair in the view.

    Example usage::

        from fiftyone_faseg.evaluation import confusion_view

        session.view = confusion_view(dataset, "faseg_eval", "person", "dog")

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        eval_key: an FA-Seg evaluation key
        gt_class: the ground truth class
        pred_class: the predicted class

    Returns:
        a :class:`fiftyone.core.view.DatasetView`
    """
    field = _field(samples, eval_key, "confusions", gt_class, pred_class)
    pair = F(field).filter((F("gt") == gt_class) & (F("pred") == pred_class))
    view = samples.exists(field).set_field(field, pair).match(F(field).length() > 0)
    return view.sort_by(F(field + ".pixels").max(), reverse=True)


def missed_view(samples, eval_key, class_name):
    """The samples where ground truth pixels of ``class_name`` were predicted as another
    class or as background (its false negatives), the most such pixels first;
    ``<eval_key>_confusions`` holds only those pairs in the view.

    Example usage::

        from fiftyone_faseg.evaluation import missed_view

        session.view = missed_view(dataset, "faseg_eval", "cow")

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        eval_key: an FA-Seg evaluation key
        class_name: a class of the evaluation

    Returns:
        a :class:`fiftyone.core.view.DatasetView`
    """
    field = _field(samples, eval_key, "confusions", class_name)
    return _pairs_view(samples, field, F("gt") == class_name)


def false_alarm_view(samples, eval_key, class_name):
    """The samples where pixels of another class or of background were predicted as
    ``class_name`` (its false positives), the most such pixels first;
    ``<eval_key>_confusions`` holds only those pairs in the view.

    Example usage::

        from fiftyone_faseg.evaluation import false_alarm_view

        session.view = false_alarm_view(dataset, "faseg_eval", "sheep")

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        eval_key: an FA-Seg evaluation key
        class_name: a class of the evaluation

    Returns:
        a :class:`fiftyone.core.view.DatasetView`
    """
    field = _field(samples, eval_key, "confusions", class_name)
    return _pairs_view(samples, field, F("pred") == class_name)


def _pairs_view(samples, field, condition):
    """The samples with confusion pairs matching ``condition``, the most of their pixels
    first (``field`` keeps only those pairs)."""
    view = samples.exists(field).set_field(field, F(field).filter(condition)).match(F(field).length() > 0)
    return view.sort_by(F(field + ".pixels").sum(), reverse=True)


def _field(samples, eval_key, role, *class_names):
    dataset = samples._dataset
    if eval_key not in dataset.list_evaluations():
        raise ValueError("no evaluation '%s' on dataset '%s': choose among %s"
                         % (eval_key, dataset.name, dataset.list_evaluations()))
    config = dataset.get_evaluation_info(eval_key).config
    if getattr(config, "method", None) != "faseg":
        raise ValueError("evaluation '%s' is not an FA-Seg evaluation (run evaluate_faseg)" % eval_key)
    names = owned(eval_key, config)["fields"]
    if role not in names:
        raise ValueError("evaluation '%s' was run with per_class=False: re-evaluate with per_class=True "
                         "to get '%s'" % (eval_key, "%s_%s" % (eval_key, role)))
    results = dataset.load_evaluation_results(eval_key)
    if results is None:
        raise ValueError("evaluation '%s' has no results (a run that did not finish): run it again with "
                         "reevaluate_faseg or delete it" % eval_key)
    unknown = [c for c in class_names if c not in results.classes]
    if unknown:
        raise ValueError("classes %s are not in evaluation '%s' (%s)" % (unknown, eval_key, list(results.classes)))
    return names[role]
