"""A field's ``mask_targets``, changed by atomic per-value database updates.

``dataset.mask_targets = {...}; dataset.save()`` writes every field's targets from the
process's in-memory copy: two processes adding classes to one field both give value 1
to different classes, and a stale handle writing field B deletes field A's targets.
Here each new class claims its pixel value with one conditional update of the dataset
document (the value must be free and the name not yet present), so any number of
processes can add classes to one field, and other fields' targets are never rewritten.
"""

import fiftyone.core.odm as foo

from .classes import ValueAllocator


def _datasets():
    return foo.get_db_conn().datasets


def _key(field):
    if not field or "." in field or field.startswith("$"):
        raise ValueError("'%s' cannot name mask_targets: use a top-level field name without dots" % field)
    return "mask_targets." + field


def read_targets(dataset, field):
    """``{value: name}`` of ``field`` as stored now (not the in-memory copy)."""
    doc = _datasets().find_one({"_id": dataset._doc.id}, {_key(field): 1}) or {}
    stored = (doc.get("mask_targets") or {}).get(field) or {}
    return {int(v): str(n) for v, n in stored.items()}


def claim_values(dataset, field, names, preferred=None):
    """Gives each of ``names`` a pixel value in ``dataset.mask_targets[field]``.

    Names already there keep their value; new names take values by the rule of
    :class:`fiftyone_faseg.run.classes.ValueAllocator` (``preferred``: ``{value: name}``,
    e.g. the ground truth's). Each claim is one atomic update, retried on a race with
    another process.

    Returns:
        ``{name: value}`` for every name of ``names``
    """
    key = _key(field)
    current = read_targets(dataset, field)
    allocator = ValueAllocator(names, preferred)
    ids = {}
    changed = False
    for name in allocator.order():
        while True:
            owned = {n: v for v, n in current.items()}
            if name in owned:
                ids[name] = owned[name]
                break
            value = allocator.value(name, current)
            done = _datasets().update_one(
                {
                    "_id": dataset._doc.id,
                    "%s.%d" % (key, value): {"$exists": False},
                    "$expr": {"$not": {"$in": [{"$literal": name}, {"$map": {  # a name is data, never a path
                        "input": {"$objectToArray": {"$ifNull": ["$" + key, {}]}}, "in": "$$this.v"}}]}},
                },
                {"$set": {"%s.%d" % (key, value): name}},
            )
            if done.modified_count:
                changed = True
                current[value] = name
            else:
                current = read_targets(dataset, field)  # another process got there first
    if changed:
        dataset._doc.reload("mask_targets")
    return {name: ids[name] for name in allocator.names}


def set_targets(dataset, field, targets):
    """Replaces ``field``'s targets (``{value: name}``) in one update; no other field is touched."""
    _datasets().update_one({"_id": dataset._doc.id},
                           {"$set": {_key(field): {str(int(v)): str(n) for v, n in targets.items()}}})
    dataset._doc.reload("mask_targets")


def delete_targets(dataset, field):
    """Removes ``field``'s targets; no other field is touched."""
    _datasets().update_one({"_id": dataset._doc.id}, {"$unset": {_key(field): ""}})
    dataset._doc.reload("mask_targets")
