"""Reading the masks of an evaluation's samples straight from the database: one streamed
aggregation (small batches), no sample objects built, each mask decoded once
(:func:`fiftyone_faseg.masks.read_mask` turns each into class values)."""

READ_BATCH = 128


def iter_docs(samples, gt_field, pred_field, cand_field):
    """The raw documents of the collection's samples (id, both masks, candidate names),
    streamed by the database: nothing is built per sample beyond what is read."""
    project = {}
    for field in (gt_field, pred_field):
        project.update({field + "._id": True, field + ".mask": True, field + ".mask_path": True})
    if cand_field is not None:
        project[cand_field + ".classifications.label"] = True
    cursor = samples._aggregate(post_pipeline=[{"$project": project}])
    # small batches: by default the server sends up to 16 MB of documents at once
    return cursor.batch_size(READ_BATCH) if hasattr(cursor, "batch_size") else cursor
