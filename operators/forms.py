"""Form pieces shared by the operators (imports no torch)."""

import fiftyone.core.labels as fol
import fiftyone.operators.types as types

from fiftyone_faseg.fields import ground_truth_fields


def dropdown(names):
    """A dropdown of names (field names, classes) for an operator form."""
    view = types.DropdownView()
    for name in names:
        view.add_choice(name, label=name)
    return view


def choices(names, allow_user_input=True):
    """An autocomplete list of names (classes) that may also take new ones."""
    view = types.AutocompleteView(allow_user_input=allow_user_input, allow_duplicates=False)
    for name in names:
        view.add_choice(name, label=name)
    return view


def segmentation_fields(ctx):
    """Every Segmentation field of the dataset, by name."""
    return sorted(ctx.dataset.get_field_schema(embedded_doc_type=fol.Segmentation))


def ground_truth_input(ctx, inputs, name="gt_field", required=True, exclude=(), **kwargs):
    """A dropdown of the fields that can be ground truth (never one FA-Seg wrote), defaulting
    to the likeliest (:func:`fiftyone_faseg.fields.ground_truth_fields`); returns the chosen
    field, or None with a warning in the form when there is none."""
    fields = [f for f in ground_truth_fields(ctx.dataset) if f not in exclude]
    if not fields:
        if required:
            inputs.view("no_" + name, types.Warning(
                label="No ground truth Segmentation field",
                description="Add one that FA-Seg did not write (with mask_targets naming its classes)",
            )).invalid = True
        return None
    kwargs.setdefault("label", "Ground truth field")
    inputs.enum(name, fields, default=fields[0] if required else None, required=required,
                view=dropdown(fields), **kwargs)
    return ctx.params.get(name) or (fields[0] if required else None)


def percent(value, digits=1):
    """One number convention everywhere: ``0.2913`` -> ``"29.1 %"`` (None -> ``"–"``)."""
    if value is None or value != value:
        return "–"
    return "%.*f %%" % (digits, 100 * float(value))
