"""What every operator shares (imports no torch): form inputs and their checks, progress,
and how a run's outcome reaches the App.

Operators import these helpers from here and never from each other.

-   **Inputs**: :func:`dropdown`, :func:`choices`, :func:`field_choice`,
    :func:`ground_truth_input`, :func:`label_field_input`, :func:`model_path_input`.
-   **Checks** flag a property before Execute (``prop.invalid`` + ``error_message``):
    :func:`flag` with the run's checks (:mod:`fiftyone_faseg.run.checks`), and
    :func:`range_problem`, :func:`image_size_problem`; :func:`flag_limits` flags every
    parameter beyond the App's limits (:mod:`fiftyone_faseg.limits`, which the run also
    enforces when it executes).
-   **Progress**, one convention: :func:`progress` drives an SDK generator of
    ``(done, total, ...)`` steps, as ``yield ctx.ops.set_progress(...)`` in the App
    (immediate) or ``ctx.set_progress(...)``, the run's heartbeat (delegated);
    :func:`reporting` does the same for an SDK function that takes a
    ``progress=callable(done, total)``, and keeps its result (returned to the SDK and
    delegated runs, shown in the App).
-   **Outcomes**: :func:`shows_errors` (an exception in an immediate generator
    operator becomes an error notification in the App, and still fails the run),
    :func:`summary_results` / :func:`summary_outputs` / :func:`show_output` (what a run
    did), :func:`raise_if_all_failed`, :func:`stale_evaluations`, :func:`percent`.
"""

import functools
import time

import fiftyone as fo
import fiftyone.core.labels as fol
import fiftyone.operators.types as types

from fiftyone_faseg import limits
from fiftyone_faseg.fields import error_field, ground_truth_fields, written_by_faseg
from fiftyone_faseg.run.checks import label_field_problem  # the run's own check, shown in the form

IMAGE_SIZES = limits.IMAGE_SIZES  # FASegConfig's grids scale from 512 px by powers of two
PROGRESS_EVERY_S = 5.0  # delegated runs: at most one heartbeat per this many seconds
MAX_REASONS = 3  # distinct failure reasons shown
WORKER_HELP = "start a worker with `fiftyone delegated launch` (one per GPU) on a machine that reaches this database"
SCHEDULING_HELP = (
    "This App server cannot schedule runs: start it with FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true "
    "(open-source FiftyOne), then " + WORKER_HELP
)


# ---------------------------------------------------------------------- choices


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


def faseg_fields(ctx, side_field):
    """The Segmentation fields FA-Seg wrote that have the side field ``side_field(field)``
    (:func:`fiftyone_faseg.fields.scores_field`: re-thresholdable,
    :func:`fiftyone_faseg.fields.candidates_field`: editable)."""
    schema = ctx.dataset.get_field_schema()
    return [f for f in segmentation_fields(ctx) if side_field(f) in schema and written_by_faseg(ctx.dataset, f)]


def field_choice(ctx, inputs, fields, warning, name="label_field", label="FA-Seg field"):
    """A required dropdown of ``fields`` (``"faseg"`` first when present); returns the
    chosen one, or None with ``warning`` in the form when there is none."""
    if not fields:
        blocker(inputs, "no_" + name, warning)
        return None
    default = "faseg" if "faseg" in fields else fields[0]
    inputs.enum(name, fields, default=default, required=True, label=label, view=dropdown(fields))
    return ctx.params.get(name) or default


def ground_truth_input(ctx, inputs, name="gt_field", required=True, exclude=(), **kwargs):
    """A dropdown of the fields that can be ground truth (never one FA-Seg wrote), defaulting
    to the likeliest (:func:`fiftyone_faseg.fields.ground_truth_fields`); returns the chosen
    field, or None with a warning in the form when there is none."""
    fields = [f for f in ground_truth_fields(ctx.dataset) if f not in exclude]
    if not fields:
        if required:
            blocker(inputs, "no_" + name, "No ground truth Segmentation field",
                    "Add one that FA-Seg did not write (with mask_targets naming its classes)")
        return None
    kwargs.setdefault("label", "Ground truth field")
    inputs.enum(name, fields, default=fields[0] if required else None, required=required,
                view=dropdown(fields), **kwargs)
    return ctx.params.get(name) or (fields[0] if required else None)


def label_field_input(ctx, inputs, name="label_field", default="faseg", **kwargs):
    """A field name to write (flagged when :func:`label_field_problem` objects; empty means
    ``default``); returns it."""
    value = ctx.params.get(name) or default
    prop = inputs.str(name, default=default, required=False, **kwargs)
    flag(prop, label_field_problem(ctx.dataset, value))
    return value


def model_path_input(ctx, inputs, default, name="model_path", **kwargs):
    """A diffusion model (Hub id or local folder), flagged when an App user may not load it
    (:func:`fiftyone_faseg.limits.model_problem`: a Hub id, or a folder under the allowed
    roots that :func:`fiftyone_faseg.run.checks.model_path_problem` accepts)."""
    prop = inputs.str(name, default=default, required=False, **kwargs)
    value = ctx.params.get(name, default)
    if not flag(prop, value and limits.model_problem(value)):
        offline = offline_problem(value)
        if offline:  # shown, not blocking: the cache may be filled before a queued run starts
            inputs.view(name + "_offline", types.Warning(label="The model may not load offline", description=offline))
    return ctx.params.get(name) or default


# ---------------------------------------------------------------------- checks


def flag(prop, problem):
    """Marks a form property invalid with ``problem`` (a message, or None: nothing to flag);
    returns whether it did."""
    if problem:
        prop.invalid = True
        prop.error_message = problem
    return bool(problem)


def blocker(inputs, name, label, description=None):
    """A warning in the form that blocks Execute; its label is also the error an SDK
    call gets."""
    prop = inputs.view(name, types.Warning(label=label, description=description))
    flag(prop, label)
    return prop


def range_problem(value, name, low=None, high=None):
    """Why a number is out of ``[low, high]`` (None when it is in range or not given)."""
    if value is None:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            return "%s must be at least %s (got %s)" % (name, low, value)
        return "%s must be between %s and %s (got %s)" % (name, low, high, value)
    return None


def flag_limits(inputs, problems, name="limits_warning"):
    """Flags each property of ``inputs`` that ``problems`` (``{parameter: message}``, from
    :func:`fiftyone_faseg.limits.problems`) names; parameters the form does not show
    (e.g. ``device`` sent by a script) get one blocking warning. Returns whether any was
    flagged."""
    hidden = []
    for param, problem in problems.items():
        prop = inputs.properties.get(param)
        if prop is None or isinstance(prop.view, (types.Warning, types.Notice)):
            hidden.append("%s: %s" % (param, problem))
        else:
            flag(prop, problem)
    if hidden:
        blocker(inputs, name, "Parameters beyond this App's limits: " + "; ".join(hidden))
    return bool(problems)


def image_size_problem(value):
    """Why ``value`` cannot be a run's image size (None when it can)."""
    if value is None or value in IMAGE_SIZES:
        return None
    return "Image size must be one of %s px (got %s)" % (", ".join(map(str, IMAGE_SIZES)), value)


# ---------------------------------------------------------------------- delegation


def scheduling_available():
    """Whether this App server can schedule (queue) runs: open-source FiftyOne needs
    ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true`` when the server starts."""
    return bool(fo.config.allow_legacy_orchestrators)


def execution_options(default_delegated):
    """:class:`ExecutionOptions` offering both modes; delegated first only when asked and
    when this server can schedule at all."""
    from fiftyone.operators.executor import ExecutionOptions

    return ExecutionOptions(
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        default_choice_to_delegated=bool(default_delegated) and scheduling_available(),
    )


def delegation_notice(inputs, long_run=False):
    """Says in the form what a scheduled run needs (a worker), or how to enable scheduling."""
    if not scheduling_available():
        if long_run:
            inputs.view("scheduling_notice", types.Notice(label=SCHEDULING_HELP))
        return
    inputs.view("worker_notice", types.Notice(label="Scheduled runs wait in a queue: " + WORKER_HELP))


# ---------------------------------------------------------------------- progress


def heartbeat(ctx, label="Done %d of %d"):
    """A ``callable(done, total)`` (what SDK functions take as ``progress``) reporting to a
    delegated run's ``ctx.set_progress``, at most every ``PROGRESS_EVERY_S`` and at the
    end; None for an immediate run (see :func:`progress`)."""
    if not ctx.delegated:
        return None
    last = [float("-inf")]

    def report(done, total):
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S or done == total:
            ctx.set_progress(progress=done / total if total else 1.0, label=label % (done, total))
            last[0] = time.monotonic()

    return report


def progress(ctx, steps, label="Segmented %d of %d samples"):
    """Reports an SDK generator's ``(done, total, *rest)`` steps: ``ctx.ops.set_progress``
    in the App for an immediate run, :func:`heartbeat` for a delegated one.

    Use with ``yield from``; returns the last step's ``rest`` (e.g. the run summary).
    """
    report = heartbeat(ctx, label)
    if report is not None:
        ctx.set_progress(progress=0.0, label="Starting")  # a first heartbeat before the model loads
    rest = (None,)
    for done, total, *rest in steps:
        if report is not None:
            report(done, total)
        else:
            yield ctx.ops.set_progress(progress=done / total if total else 1.0, label=label % (done, total))
    return rest[0] if len(rest) == 1 else tuple(rest)


PROGRESS_APP_S = 0.25  # immediate runs in the App: at most one progress message per this many seconds


def from_app(ctx):
    """Whether this is an immediate run the App asked for: the App's requests name the
    operator (``operator_uri``), the SDK's ``execute_operator`` never does, and it would
    drop a generator's result (it exhausts generators and returns None)."""
    return not ctx.delegated and "operator_uri" in (ctx.request_params or {})


def reporting(ctx, operator, run, label):
    """Runs ``run(progress)``, ``progress`` a ``callable(done, total)`` (what SDK functions
    take), with the counts shown where the user waits, e.g. ``"Evaluated 120 / 400 samples"``
    for ``label="Evaluated %d / %d samples"``.

    -   Delegated: the run's heartbeat (:func:`heartbeat`); returns ``run``'s result.
    -   SDK (``execute_operator``): no progress; returns ``run``'s result.
    -   From the App (:func:`from_app`): returns a generator (``operator`` must be
        ``execute_as_generator``) that runs ``run`` in a thread and streams
        ``set_progress`` messages while it works (the App shows them in its output
        dialog), then the App triggers ``run`` queued (``ctx.trigger``,
        ``ctx.ops.notify``), then ``run``'s result in that same dialog through
        ``operator.resolve_output`` (which should return None without results, so that
        the form closes rather than show an empty summary beside it). An exception becomes
        an error notification (the App shows nothing for a failed generator) and fails
        the run.
    """
    if not from_app(ctx):
        return run(heartbeat(ctx, label))
    return _streamed(ctx, operator, run, label)


def _streamed(ctx, operator, run, label):
    import queue
    import threading

    steps, outcome = queue.Queue(), {}
    queued = len(ctx.executor.to_json()["requests"])

    def work():
        try:
            outcome["result"] = run(lambda done, total: steps.put((done, total)))
        except Exception as e:
            outcome["error"] = e
        finally:
            steps.put(None)

    threading.Thread(target=work, name="faseg-" + operator.config.name, daemon=True).start()
    last = float("-inf")
    while True:
        step = steps.get()
        if step is None:
            break
        done, total = step
        if time.monotonic() - last >= PROGRESS_APP_S or done == total:
            last = time.monotonic()
            yield ctx.ops.set_progress(progress=done / total if total else 1.0, label=label % (done, total))
    for request in ctx.executor.to_json()["requests"][queued:]:  # what run asked of the App
        yield ctx.trigger(request["operator_uri"], request["params"])
    if "error" in outcome:
        yield ctx.ops.notify("%s failed: %s" % (operator.config.label, outcome["error"]), variant="error")
        raise outcome["error"]
    result = outcome["result"]
    ctx.request_params["results"] = result  # what resolve_output reads (as FiftyOne does for delegated runs)
    outputs = operator.resolve_output(ctx)
    if outputs is not None:
        yield ctx.ops.show_output(outputs.to_json(), result)


# ---------------------------------------------------------------------- outcomes


def shows_errors(execute):
    """Decorates a generator ``execute``: an exception becomes an error notification in
    the App before it fails the run (the App shows nothing for a generator operator that
    raises mid-stream)."""

    @functools.wraps(execute)
    def wrapper(self, ctx):
        try:
            result = yield from execute(self, ctx)
            return result
        except Exception as e:
            if not ctx.delegated and ctx.executor is not None:
                yield ctx.ops.notify("%s failed: %s" % (self.config.label, e), variant="error")
            raise

    return wrapper


def reasons(summary):
    """The first distinct failure reasons of a run (:meth:`RunSummary.reasons`), each with
    how many samples it hit."""
    return ["%s (%d sample%s)" % (r, n, "" if n == 1 else "s") for r, n in summary.reasons(MAX_REASONS)]


def raise_if_all_failed(summary, what="run"):
    """A run that segmented nothing while samples failed is a failed run: raises
    ``RuntimeError`` with the first distinct reasons."""
    if summary is not None and summary.failed and not summary.processed:
        raise RuntimeError("every sample of the %s failed (%d): %s"
                           % (what, len(summary.failed), "; ".join(reasons(summary))))


def summary_results(summary, settings, **extra):
    """Operator results of a :class:`fiftyone_faseg.run.segment.RunSummary` of a run made with
    ``settings``: counts, the first distinct failure reasons and where its outputs went
    (files go under ``summary.root`` with an ``output_dir`` or stored scores)."""
    on_disk = settings.output.on_disk
    results = dict(
        processed=len(summary.processed),
        skipped=len(summary.skipped),
        failed=len(summary.failed),
        reasons=reasons(summary),
        files=summary.root if on_disk else "in the database",
    )
    results.update(extra)
    return results


def summary_outputs(results, label_field="<label_field>"):
    """The view of :func:`summary_results` (reasons only when some sample failed, and any
    extra message result, e.g. ``stale``)."""
    outputs = types.Object()
    outputs.int("processed", label="Segmented")
    outputs.int("skipped", label="Skipped (already labelled)")
    outputs.int("failed", label="Failed (reasons in %s)" % error_field(label_field))
    if results.get("reasons"):
        outputs.list("reasons", types.String(), label="Why samples failed")
    outputs.str("files", label="Files written to")
    if results.get("stale"):
        outputs.str("stale", label="Evaluations")
    return outputs


def show_output(ctx, outputs, results, label):
    """Shows ``results`` in the App through ``outputs`` (a generator operator's results are
    not shown otherwise); nothing for a delegated run. Use with ``yield from``."""
    if not ctx.delegated and ctx.executor is not None:
        yield ctx.ops.show_output(types.Property(outputs, view=types.View(label=label)).to_json(), results)


def stale_evaluations(dataset, pred_field):
    """Keys of the evaluations of ``pred_field``: stale once the field is written again."""
    keys = []
    for key in dataset.list_evaluations():
        config = dataset.get_evaluation_info(key).config
        if getattr(config, "pred_field", None) == pred_field:
            keys.append(key)
    return keys


def stale_message(dataset, pred_field, before=False):
    """What to tell the user after (or, ``before``, ahead of) rewriting ``pred_field``;
    None when no evaluation used it."""
    keys = stale_evaluations(dataset, pred_field)
    if not keys:
        return None
    many = len(keys) > 1
    return "Evaluation%s %s of '%s' %s stale%s: run evaluate_faseg again" % (
        "s" if many else "", ", ".join(keys), pred_field,
        "will be" if before else ("are now" if many else "is now"), " after this" if before else "",
    )


def percent(value, digits=1):
    """One number convention everywhere: ``0.2913`` -> ``"29.1 %"`` (None -> ``"–"``)."""
    if value is None or value != value:
        return "–"
    return "%.*f %%" % (digits, 100 * float(value))


# ---------------------------------------------------------------------- classes and remembered settings


def split_classes(values):
    """Class names typed into a form: list items or text, split on commas and newlines,
    stripped, each once, in order (``["aeroplane, bird", "sheep"]`` -> three classes);
    anything else is returned as it is, for the App limits to refuse."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        return values  # not a list: refused as it is by fiftyone_faseg.limits
    names = []
    for value in values:
        if not isinstance(value, str):  # refused as it is by fiftyone_faseg.limits
            names.append(value)
            continue
        for name in value.replace("\n", ",").split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


SETTINGS_STORE = "faseg_settings"  # FiftyOne's execution store (global: a model path is not per dataset)


def _settings_store():
    from fiftyone.operators.store import ExecutionStore

    return ExecutionStore.create(SETTINGS_STORE)


def _user_key(ctx, name):
    return "%s:%s" % (name, ctx.user_id or "local")


def remembered(ctx, name, default=None):
    """The value this user last ran with for setting ``name`` (``default`` if none)."""
    try:
        value = _settings_store().get(_user_key(ctx, name))
    except Exception:  # the store is unavailable: the form still opens
        value = None
    return value if value not in (None, "") else default


def remember(ctx, name, value):
    """Stores ``value`` as this user's last ``name`` (see :func:`remembered`)."""
    if value not in (None, ""):
        _settings_store().set(_user_key(ctx, name), value)


def offline_problem(value):
    """Why a Hub id cannot be loaded without the network (None when it can, when it is a
    folder, or when the Hub is reachable): offline, it must be in the local cache."""
    import os

    from huggingface_hub import constants, try_to_load_from_cache

    if not value or os.path.exists(os.path.expanduser(str(value))) or not constants.HF_HUB_OFFLINE:
        return None
    try:
        cached = try_to_load_from_cache(str(value).strip(), "model_index.json")
    except Exception:
        cached = None
    if isinstance(cached, str):
        return None
    return ("'%s' is not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE): "
            "give a local checkpoint folder, or download it on a machine with network access" % value)
