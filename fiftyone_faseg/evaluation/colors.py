"""The error overlay of an FA-Seg evaluation in four colours (a ``ColorScheme`` entry on its
``<eval_key>_errors`` field), and the legend the FA-Seg panel shows for it.

Example usage::

    from fiftyone_faseg.evaluation.colors import set_error_colors

    set_error_colors(dataset, "faseg_eval")  # the App draws faseg_eval_errors in four colours
"""

import fiftyone.core.odm as fod

from .outputs import field_names
from .per_sample import CORRECT, ERROR_TARGETS, FALSE_ALARM, MISSED, WRONG_CLASS

# colours of the overlay's values, and the legend's squares of the same colours
ERROR_COLORS = {CORRECT: "#2ca02c", WRONG_CLASS: "#ff7f0e", MISSED: "#1f77b4", FALSE_ALARM: "#d62728"}
ERROR_SQUARES = {CORRECT: "🟩", WRONG_CLASS: "🟧", MISSED: "🟦", FALSE_ALARM: "🟥"}


def error_color_scheme(dataset, eval_key):
    """A new :class:`fiftyone.core.odm.dataset.ColorScheme`: the dataset's App colour scheme
    (unchanged otherwise) with ``<eval_key>_errors`` drawn in :data:`ERROR_COLORS`; None
    when the evaluation has no overlay or the scheme already draws it so."""
    config = dataset.get_evaluation_info(eval_key).config
    path = field_names(eval_key, config).get("errors")
    if path is None:
        return None
    entry = {"path": path, "maskTargetsColors": [{"intTarget": v, "color": c} for v, c in ERROR_COLORS.items()]}
    current = dataset.app_config.color_scheme
    fields = [dict(f) for f in (current.fields or [])] if current is not None else []
    if entry in fields:
        return None
    doc = current.to_dict() if current is not None else {}
    doc = {k: v for k, v in doc.items() if k not in ("id", "_id", "_cls")}  # a new scheme: a new id
    doc["fields"] = [f for f in fields if f.get("path") != path] + [entry]
    return fod.ColorScheme.from_dict(doc)


def set_error_colors(dataset, eval_key):
    """Draws ``<eval_key>_errors`` in four colours in the App (:func:`error_color_scheme`)."""
    scheme = error_color_scheme(dataset, eval_key)
    if scheme is not None:
        dataset.app_config.color_scheme = scheme
        dataset.save()


def legend_markdown(eval_key):
    """The overlay's legend: each colour and what it means."""
    return "Error overlay `%s_errors`: %s" % (
        eval_key, " · ".join("%s %s" % (ERROR_SQUARES[v], name) for v, name in ERROR_TARGETS.items()))
