"""What an App user may ask of a run: the one place every operator parameter is checked.

FiftyOne Enterprise runs operators on a shared server, so whatever arrives in an
operator's ``ctx.params`` is untrusted. :func:`problems` says, per parameter, what is
wrong with it; the forms flag those properties before Execute
(:func:`operators.forms.flag_limits`) and :func:`check` refuses the same parameters when
the operator executes (immediate, queued or a shard of a parallel run), so the form and
the run never disagree. SDK callers (:func:`fiftyone_faseg.segment_samples`,
:class:`fiftyone_faseg.FASegModel`, ``foz.load_zoo_model``) keep free choice: nothing
here is applied to them.

Bounds, and why:

-   ``batch_size`` in ``[1, 64]``: one call decodes that many images and records attention
    for twice as many latents (test-time flip). Past 64 no GPU gains throughput, the run
    halves the batch on out-of-memory anyway, and ``10**9`` would decode the whole view at
    once.
-   ``image_size`` in ``IMAGE_SIZES``: the paper's attention-grid weights are defined for
    512 px and move by powers of two (:meth:`faseg_core.FASegConfig.at_image_size`); 1024
    is four times the paper's pixels (self-attention at the 128 grid is already
    ``128**4`` elements per head), and 65536 would be ~100 GB of pixels per image.
-   ``threshold`` a finite number in ``[0, 1]`` (NaN passes a plain range check).
-   ``classes``: at most ``MAX_CLASSES`` names per image (every image gets one prompt per
    class; COCO-Stuff has 171, ADE20K 150) and ``MAX_VOCABULARY`` for the tagger's
    vocabulary (LVIS has 1203), each a string of at most ``MAX_CLASS_CHARS`` characters
    (CLIP reads 77 tokens; 300-character names must keep working).
-   ``device`` and ``dtype`` from fixed lists; yes/no parameters must be booleans.
-   Every other :class:`faseg_core.FASegConfig` field a form or a queued run may send
    (flat, or inside ``overrides``) has a range here too (:data:`CONFIG_RULES`): HARD's
    ``tau`` at most 8 (the paper uses 2; each step is a product with a 4096² map),
    ``pamr_iterations`` at most 100 (the paper's PAMR uses 10), ``attention_chunk`` between
    2^16 and 2^30 elements (memory per block), ``pamr_size`` 16–1024, ``pamr_dilations`` at
    most 16 dilations of 1–128 px, the grid weights at most 8 grids of side 1–128 with
    finite weights in [0, 100], ``timestep`` 0–999, ``seed`` a 32-bit number, and fixed
    choices for ``store_dtype`` and ``attention_kernel``. A field with no rule is refused
    from the App (a new FASegConfig knob is settable there once it has one; a test holds
    every field to that).
-   ``output_dir`` under a configured root (``FASEG_OUTPUT_ROOTS`` or the plugin setting
    ``output_roots``; by default the dataset's own folder in FiftyOne's dataset
    directory); ``..``, relative paths and symlinks leading out are refused.
-   ``model_path``, ``captioner_path``, ``tagger_model``, ``tagger_pretrained``: a Hugging
    Face Hub id (or an open_clip name) or a path under a configured root
    (``FASEG_MODEL_ROOTS`` or the plugin setting ``model_roots``; by default FiftyOne's
    model zoo folder). Every path outside gets the same message, whether it is a file, a
    folder or missing, so the form is no probe of the server's file system.

Settings are read, in this order, from the environment (``FASEG_<NAME>``, e.g.
``FASEG_OUTPUT_ROOTS=/data/masks:/scratch``, ``os.pathsep``-separated), from the
plugin's settings in FiftyOne's App config (``app_config.json``:
``{"plugins": {"@faseg/fiftyone-faseg": {"output_roots": ["/data/masks"]}}}``) and from
the ``settings:`` of the plugin's ``fiftyone.yml``: all under the server
administrator's control, never the App user's.
"""

import functools
import math
import os
import re

from faseg_core.config import ATTENTION_KERNELS, DTYPES  # imports no torch

from .constants import CLASS_SOURCES, PLUGIN_NAME

MAX_BATCH_SIZE = 64
IMAGE_SIZES = (128, 256, 512, 1024)
MAX_CLASSES = 256
MAX_VOCABULARY = 2048
MAX_CLASS_CHARS = 512
DEVICES = ("cpu", "cuda", "mps") + tuple("cuda:%d" % i for i in range(16))
BOOLEANS = ("skip_existing", "overwrite", "use_captioner", "store_scores", "heatmap", "pamr")
# the class sources a run accepts (the rerun operator passes "candidates")
CLASS_SOURCE_CHOICES = CLASS_SOURCES + ("candidates",)

# a Hub id ("owner/name") or an open_clip name/tag ("ViT-B-16", "hf-hub:owner/name")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^(hf-hub:)?[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# parameter -> (what the form calls it, low, high)
_NUMBERS = {
    "batch_size": ("Batch size", 1, MAX_BATCH_SIZE),
    "tau": ("HARD's tau", 0, 8),
    "timestep": ("Timestep", 0, 999),
    "seed": ("Seed", 0, 2**32 - 1),
    "attention_chunk": ("Attention chunk", 2**16, 2**30),
    "pamr_iterations": ("PAMR iterations", 1, 100),
    "pamr_size": ("PAMR size", 16, 1024),
}
# FASegConfig fields checked by the rules of this module (the others are refused from the App)
CONFIG_RULES = ("image_size", "threshold", "batch_size", "dtype", "pamr", "flip", "vae_sample", "run_inversion",
                "compile", "tau", "timestep", "seed", "attention_chunk", "pamr_iterations", "pamr_size",
                "store_dtype", "attention_kernel", "pamr_dilations", "cross_weights", "self_weights")
_CONFIG_BOOLEANS = ("flip", "vae_sample", "run_inversion", "compile")
_CONFIG_CHOICES = {"store_dtype": ("float16", "bfloat16", "float32"), "attention_kernel": ATTENTION_KERNELS}
# parameters naming a model to load -> (what it is, its name pattern)
_MODELS = {
    "model_path": ("diffusion model", _HUB_ID),
    "captioner_path": ("captioner", _HUB_ID),
    "tagger_model": ("tagger model", _NAME),
    "tagger_pretrained": ("tagger weights", _NAME),
}


# ---------------------------------------------------------------------- settings


def setting(name, default=None):
    """A server-side setting of this plugin: the environment variable ``FASEG_<NAME>``,
    else ``name`` in the plugin's settings of FiftyOne's App config, else in the
    ``settings:`` of the plugin's ``fiftyone.yml``, else ``default``."""
    value = os.environ.get("FASEG_" + name.upper())
    if value not in (None, ""):
        return value
    try:
        import fiftyone as fo

        plugins = fo.app_config.plugins or {}
    except Exception:  # FiftyOne not importable or its config unreadable: the next source
        plugins = {}
    for source in ((plugins.get(PLUGIN_NAME) or {}), _plugin_file_settings()):
        value = source.get(name)
        if value not in (None, "", []):
            return value
    return default


@functools.lru_cache(maxsize=1)
def _plugin_file_settings():
    """The ``settings:`` of this plugin's ``fiftyone.yml`` (read once per process; none
    when the SDK runs without the plugin)."""
    try:
        import fiftyone.plugins as fop
        import yaml

        with open(os.path.join(fop.find_plugin(PLUGIN_NAME), "fiftyone.yml")) as f:
            return dict((yaml.safe_load(f) or {}).get("settings") or {})
    except Exception:
        return {}


def _paths(value):
    if isinstance(value, str):
        value = value.split(os.pathsep)
    return [os.path.expanduser(str(v)) for v in value or () if v]


def output_roots(dataset=None):
    """The folders under which an App user may choose a run's ``output_dir``: the setting
    ``output_roots``, else the dataset's own folder in FiftyOne's dataset directory."""
    roots = _paths(setting("output_roots"))
    if roots:
        return roots
    import fiftyone as fo

    base = fo.config.default_dataset_dir
    # the dataset's slug, never its name: a name may be "../../etc"
    return [os.path.join(base, dataset.slug)] if dataset is not None else [base]


def model_roots():
    """The folders an App user may load local models from: the setting ``model_roots``,
    else FiftyOne's model zoo folder (where ``faseg-2rf`` is downloaded)."""
    roots = _paths(setting("model_roots"))
    if roots:
        return roots
    import fiftyone as fo

    return [fo.config.model_zoo_dir]


def _under(path, roots):
    """Whether ``path`` (absolute) resolves, symlinks followed, inside one of ``roots``."""
    real = os.path.realpath(path)
    for root in roots:
        root = os.path.realpath(root)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


# ---------------------------------------------------------------------- checks


MIN_SWEEP_STEP = 0.005  # a sweep measures every threshold over the whole view: at most 201 of them


def problems(params, dataset=None):
    """``{parameter: why it is refused}`` for the parameters of ``params`` (an operator's
    ``ctx.params``) that break a limit; parameters not given are not checked.

    Args:
        params: a dict of operator parameters
        dataset (None): the :class:`fiftyone.core.dataset.Dataset` the run writes to
            (its folder is the default ``output_dir`` root)
    """
    params = dict(params or {})
    found = {}
    overrides = params.pop("overrides", None)
    if overrides is not None and not isinstance(overrides, dict):
        found["overrides"] = "Overrides must be a mapping of FA-Seg settings (got %s)" % _shown(overrides)
    elif overrides:
        params.update(overrides)  # FA-Seg settings sent inside ``overrides`` meet the same rules

    def given(name):
        return params.get(name) not in (None, "")

    for name, (label, low, high) in _NUMBERS.items():
        if given(name):
            found[name] = _count_problem(params[name], label, low, high)
    if given("image_size"):
        value = params["image_size"]
        if isinstance(value, bool) or value not in IMAGE_SIZES:
            found["image_size"] = "Image size must be one of %s px (got %s)" % (
                ", ".join(map(str, IMAGE_SIZES)), _shown(value))
    for name in ("threshold", "start", "stop"):  # a threshold, and a sweep's range of them
        if given(name):
            found[name] = threshold_problem(params[name])
    if given("step"):  # a sweep's step: at most ~200 thresholds in [0, 1]
        step = params["step"]
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not MIN_SWEEP_STEP <= step <= 1:
            found["step"] = "The sweep's step must be a number between %s and 1 (got %s)" % (
                MIN_SWEEP_STEP, _shown(step))
    if given("classes"):
        found["classes"] = classes_problem(params["classes"], vocabulary=params.get("classes_from") == "tagger")
    if given("classes_from") and params["classes_from"] not in CLASS_SOURCE_CHOICES:
        found["classes_from"] = "Candidate classes must be one of %s (got %s)" % (
            ", ".join(CLASS_SOURCE_CHOICES), _shown(params["classes_from"]))
    for name, choices in (("device", DEVICES), ("dtype", DTYPES)):
        if given(name) and params[name] not in choices:
            found[name] = "%s must be one of %s (got %s)" % (name.capitalize(), ", ".join(choices), _shown(params[name]))
    found.update(_config_problems(params, given))
    for name in BOOLEANS + _CONFIG_BOOLEANS:
        if params.get(name) is not None and not isinstance(params[name], bool):
            found[name] = "%s must be true or false (got %s)" % (name, _shown(params[name]))
    for name in _MODELS:
        if given(name):
            found[name] = model_problem(params[name], name)
    if given("output_dir"):
        found["output_dir"] = output_dir_problem(params["output_dir"], dataset)
    return {k: v for k, v in found.items() if v}


def check(params, dataset=None):
    """Raises ``ValueError`` naming every parameter of ``params`` that breaks a limit
    (:func:`problems`), and what to do."""
    found = problems(params, dataset)
    if found:
        raise ValueError("; ".join("`%s`: %s" % item for item in found.items()))


def _config_problems(params, given):
    """Problems of the FASegConfig fields in ``params`` that the other rules do not check."""
    from .run.settings import fa_seg_settings

    found = {}
    for name in fa_seg_settings():
        if not given(name):
            continue
        value = params[name]
        if name not in CONFIG_RULES:
            found[name] = "%s is not a setting of this App: set it from Python (segment_samples(..., %s=...))" % (
                name, name)
        elif name in _CONFIG_CHOICES and value not in _CONFIG_CHOICES[name]:
            found[name] = "%s must be one of %s (got %s)" % (name, ", ".join(_CONFIG_CHOICES[name]), _shown(value))
        elif name == "pamr_dilations":
            found[name] = _sequence_problem(value, "PAMR dilations", 16, 1, 128)
        elif name in ("cross_weights", "self_weights"):
            found[name] = _weights_problem(value, name)
    return found


def _sequence_problem(value, label, most, low, high):
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= most:
        return "%s must be a list of 1 to %d whole numbers (got %s)" % (label, most, _shown(value))
    return next(filter(None, (_count_problem(v, label, low, high) for v in value)), None)


def _weights_problem(value, name):
    """Grid weights: ``{grid side: weight}`` (JSON gives the sides as strings)."""
    if not isinstance(value, dict) or not 1 <= len(value) <= 8:
        return "%s must map 1 to 8 grid sides to weights (got %s)" % (name, _shown(value))
    for side, weight in value.items():
        try:
            side = int(side)
        except (TypeError, ValueError):
            return "%s: grid sides must be whole numbers (got %s)" % (name, _shown(side))
        if not 1 <= side <= 128:
            return "%s: grid sides must be between 1 and 128 (got %s)" % (name, side)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not 0 <= weight <= 100:
            return "%s: weights must be numbers between 0 and 100 (got %s)" % (name, _shown(weight))
    return None


def threshold_problem(value):
    """Why ``value`` cannot be a background threshold (None when it can)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "The threshold must be a number between 0 and 1 (got %s)" % _shown(value)
    if not 0 <= value <= 1:
        return "The threshold must be between 0 and 1 (got %s)" % _shown(value)
    return None


def classes_problem(classes, vocabulary=False):
    """Why ``classes`` (a list of names; the tagger's ``vocabulary``) is refused (None when not)."""
    if not isinstance(classes, (list, tuple)):
        return "Classes must be a list of names (got %s)" % type(classes).__name__
    most = MAX_VOCABULARY if vocabulary else MAX_CLASSES
    if len(classes) > most:
        return "At most %d %s (got %d)" % (most, "vocabulary names" if vocabulary else "classes per image",
                                            len(classes))
    for name in classes:
        if name is not None and not isinstance(name, str):
            return "Class names must be text (got %s)" % _shown(name)
        if name and len(name) > MAX_CLASS_CHARS:
            return "Class names must be at most %d characters (one has %d)" % (MAX_CLASS_CHARS, len(name))
    return None


def output_dir_problem(value, dataset=None):
    """Why an App user may not write a run's files under ``value`` (None when they may):
    it must be an absolute folder under :func:`output_roots`, without ``..``, that no
    symlink leads out of. Every refused path gets the same message."""
    from .run.parts import folder_param

    try:
        folder = folder_param(value)
    except TypeError:
        folder = None
    if not folder:
        return None if not value else "The mask folder must be a path (got %s)" % _shown(value)
    roots = output_roots(dataset)
    path = os.path.expanduser(folder)
    if not (os.path.isabs(path) and ".." not in _parts(path) and _under(path, roots)):
        return "'%s' is not a folder this App may write to: choose a folder under %s" % (folder, _roots_text(roots))
    if os.path.exists(path) and not os.path.isdir(path):
        return "'%s' is a file: choose a folder" % folder
    return None


def model_problem(value, name="model_path"):
    """Why an App user may not load ``value`` as the model parameter ``name`` (None when
    they may): a Hub id (an open_clip name for the tagger) or a path under
    :func:`model_roots`. Every path outside gets the same message, so nothing about the
    server's file system shows."""
    what, pattern = _MODELS[name]
    if not isinstance(value, str):
        return "The %s must be a Hugging Face Hub id or a folder (got %s)" % (what, _shown(value))
    value = value.strip()
    if pattern.match(value) and ".." not in _parts(value) and not os.path.lexists(value):
        return None  # a Hub id (or open_clip name): only loading can tell whether it exists
    roots = model_roots()
    path = os.path.abspath(os.path.expanduser(value))
    if ".." in _parts(value) or not _under(path, roots):
        return ("'%s' is neither an existing folder nor a Hugging Face Hub id the App may load: give a Hub id "
                "(owner/name) or a folder under %s" % (value, _roots_text(roots)))
    if name == "model_path":
        from .run.checks import model_path_problem

        return model_path_problem(value)  # under an allowed root: the checkpoint's own problems may show
    return None


def _parts(path):
    return re.split(r"[\\/]+", path)


def _roots_text(roots):
    return ", ".join("'%s'" % r for r in roots)


def _count_problem(value, label, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        return "%s must be a whole number (got %s)" % (label, _shown(value))
    if value < low:
        return "%s must be at least %d (got %s)" % (label, low, _shown(value))
    if value > high:
        return "%s must be at most %d (got %s)" % (label, high, _shown(value))
    return None


def _shown(value, width=40):
    """``value`` as a message shows it: short (a form may send anything)."""
    text = repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."
