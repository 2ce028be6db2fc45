"""Matching ground truth and predicted classes by name.

A leaf module (it imports only FiftyOne's field helpers and the constants): both
:mod:`fiftyone_faseg.evaluation` and :mod:`fiftyone_faseg.analysis.iterate` import it, and neither
imports the other for it.

An open-vocabulary model numbers its classes in its own way (ground truth
``{1: "cat", 2: "dog"}``, prediction ``{1: "Dog", 2: "cat"}``), so both masks are mapped
to one class index space through the two fields' ``mask_targets``, matched by name.
"""

import fiftyone.core.fields as fof

from .constants import BACKGROUND, IGNORE_INDEX

UNNAMED = "(unnamed)"  # the class of predicted values that have no name


def is_rgb(targets):
    """Whether ``mask_targets`` map RGB hex strings (``"#rrggbb"``) to names."""
    return bool(targets) and fof.is_rgb_mask_targets(targets)


def value_targets(targets):
    """``{int value: name}`` of a field's ``mask_targets``: integer keys as they are, RGB
    hex keys as ``0xRRGGBB`` integers (the values
    :func:`fiftyone_faseg.masks.read_mask` gives RGB masks)."""
    if is_rgb(targets):
        return {fof.hex_to_int(k): v for k, v in targets.items()}
    return {int(k): v for k, v in targets.items()}


def match_classes(gt_targets, pred_targets, vocabulary=None, ignore_index=IGNORE_INDEX):
    """Matches predicted classes to ground truth classes by name.

    Names are compared after ``vocabulary.canonical(name)`` (when it returns a name),
    lowercased, with whitespace collapsed. Pixel value 0 (``#000000`` for RGB hex
    targets, matched as their ``0xRRGGBB`` values: see
    :func:`value_targets`) is background on both sides
    whatever its name; ``ignore_index`` in the ground truth is never a class.

    The class list is the ground truth classes (background first, then by pixel
    value), followed by the predicted classes that match none of them.

    Example usage::

        from fiftyone_faseg.matching import match_classes

        m = match_classes({1: "cat", 2: "dog"}, {1: "Dog", 2: "zebra"})
        m["classes"]      # ["background", "cat", "dog", "zebra"]
        m["pred_values"]  # [[0, 0], [1, 2], [2, 3]]

    Args:
        gt_targets: the ground truth ``{pixel value: name}`` dict
        pred_targets: the prediction ``{pixel value: name}`` dict
        vocabulary (None): an object with ``canonical(name) -> str | None``
        ignore_index (255): the ground truth value that is ignored (None: none)

    Returns:
        a dict with keys ``classes`` (list of names), ``gt_values`` and
        ``pred_values`` (lists of ``[pixel value, class index]``),
        ``num_gt_classes`` (the classes in the mean are ``classes[:num_gt_classes]``)
        and ``name_index`` (``{normalized name: class index}`` of every name seen,
        vocabulary synonyms resolved, for matching other names such as a sample's
        candidates with :func:`normalize`)
    """
    canon = canonicalizer(vocabulary)
    gt_targets = value_targets(gt_targets)
    pred_targets = value_targets(pred_targets)

    classes = [gt_targets.get(0) or BACKGROUND]
    gt_values = [[0, 0]]
    index = {canon(classes[0]): 0}
    for value, name in sorted(gt_targets.items()):
        if value == 0 or value == ignore_index:
            continue

        key = canon(name)
        if key in index:
            raise ValueError(
                "Ground truth classes '%s' and '%s' have the same name after "
                "normalization ('%s'): give each pixel value a distinct name in the "
                "ground truth mask_targets" % (classes[index[key]], name, key)
            )

        index[key] = len(classes)
        gt_values.append([value, len(classes)])
        classes.append(str(name))

    index.setdefault(canon(BACKGROUND), 0)
    num_gt_classes = len(classes)

    pred_values = [[0, 0]]
    names = {}
    for value, name in sorted(pred_targets.items()):
        if value == 0:
            continue

        key = canon(name)
        if key not in index:
            index[key] = len(classes)
            classes.append(str(name))

        pred_values.append([value, index[key]])
        names[normalize(name)] = index[key]

    for name, k in list(index.items()):
        names.setdefault(name, k)
    for k, name in enumerate(classes):
        names.setdefault(normalize(name), k)

    return dict(
        classes=classes,
        gt_values=gt_values,
        pred_values=pred_values,
        num_gt_classes=num_gt_classes,
        name_index=names,
    )


def normalize(name):
    """A class name lowercased, with whitespace collapsed (no vocabulary): the one way
    fiftyone_faseg compares class names (matching, pixel values shared with the ground
    truth, the background's name).

    ``faseg_core.candidates.vocabulary.normalize_key`` (the vocabulary's lookup key) also
    reads ``_`` as a space and case-folds; it is not imported here because importing
    ``faseg_core.candidates`` loads torch."""
    return " ".join(str(name).split()).lower()


def canonicalizer(vocabulary=None):
    """``canon(name)``: :func:`normalize` after ``vocabulary.canonical(name)``."""
    if vocabulary is not None and not callable(getattr(vocabulary, "canonical", None)):
        raise TypeError(
            "vocabulary must have a method canonical(name) -> str | None, got %s"
            % type(vocabulary).__name__
        )

    def canon(name):
        name = str(name)
        if vocabulary is not None:
            canonical = vocabulary.canonical(name)
            if canonical is not None:
                name = str(canonical)

        return normalize(name)

    return canon


def aliases_of(vocabulary, *targets):
    """``{name: canonical name}`` of every class name of ``targets`` the vocabulary renames
    (stored with an evaluation, so a re-evaluation matches names as it did)."""
    if vocabulary is None:
        return {}
    names = {str(n) for t in targets for n in t.values()}
    return {n: str(vocabulary.canonical(n)) for n in sorted(names) if vocabulary.canonical(n) is not None}


class Aliases(object):
    """A vocabulary made of stored :func:`aliases_of`."""

    def __init__(self, aliases):
        self.aliases = dict(aliases or {})

    def canonical(self, name):
        return self.aliases.get(name)
