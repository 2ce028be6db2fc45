"""FiftyOne plugin ``@faseg/fiftyone-faseg``, and a remote source of FiftyOne's model zoo.

Operators live in ``operators/`` and are thin over the ``fiftyone_faseg`` SDK; torch and
diffusers are imported only when an operator runs, so the plugin always registers.

As a zoo source (``manifest.json`` beside this file), the repository serves the model
``faseg-2rf``: FA-Seg over the InstaFlow 2-Rectified Flow checkpoint (SD 1.5), whose
weights are licensed CC-BY-NC-4.0 (non-commercial)::

    import fiftyone.zoo as foz

    foz.register_zoo_model_source("https://github.com/faseg/fiftyone-faseg")
    model = foz.load_zoo_model("faseg-2rf", classes=["cat", "dog"], label_field="faseg")  # a FASegModel
    dataset.apply_model(model, label_field="faseg")  # the model keeps faseg's mask_targets
"""

import os
import sys

try:
    import fiftyone_faseg  # noqa: F401
except ImportError:
    # Installed as a plugin folder (or a zoo source) without `pip install`: the SDK
    # packages sit beside this file. They must stay importable, since stored evaluation
    # runs name their classes.
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from fiftyone_faseg import limits  # noqa: E402
from fiftyone_faseg.constants import DEFAULT_MODEL, DEFAULT_THRESHOLD, MODEL_COMPONENTS  # noqa: E402

# Zoo model name -> the Hugging Face Hub checkpoint its components come from
ZOO_MODELS = {"faseg-2rf": DEFAULT_MODEL}


def register(p):
    from .operators import evaluate, iterate, panel, run

    run.register(p)
    evaluate.register(p)
    panel.register(p)
    iterate.register(p)


def download_model(model_name, model_path):
    """Downloads a zoo model's checkpoint: the components FA-Seg reads (``unet/``,
    ``vae/``, ``text_encoder/``, ``tokenizer/``) of its Hub repository, into
    ``model_path``. Nothing is fetched when ``model_path`` already holds them (a copy
    placed there works offline).

    Args:
        model_name: the zoo model's name (``"faseg-2rf"``)
        model_path: the folder to download into, as the manifest's ``base_filename``
            places it in FiftyOne's model zoo folder
    """
    repo_id = _hub_id(model_name)
    if _is_checkpoint(model_path):
        return
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id=repo_id, local_dir=model_path,
                          allow_patterns=["%s/*" % c for c in MODEL_COMPONENTS])
    except Exception as e:
        raise OSError(
            "could not download '%s' (%s) into '%s': %s\nOffline, place a checkpoint folder holding %s there"
            % (model_name, repo_id, model_path, e, ", ".join(c + "/" for c in MODEL_COMPONENTS))
        ) from e


def load_model(model_name, model_path, classes=None, threshold=None, image_size=None, batch_size=None,
               **kwargs):
    """Loads a zoo model as a :class:`fiftyone_faseg.FASegModel` over the checkpoint in
    ``model_path`` (torch loads here, not when the module is imported).

    Args:
        model_name: the zoo model's name (``"faseg-2rf"``)
        model_path: the folder holding the checkpoint
        classes (None): the class names to segment every image into
        threshold (None): background threshold (the paper's VOC value by default)
        image_size (None): the side images are resized to (512 by default)
        batch_size (None): images per UNet call
        **kwargs: other :class:`fiftyone_faseg.FASegModelConfig` settings
            (``label_field``, ``classes_field``, ``caption_field``, ``device``,
            ``dtype``, and any :class:`faseg_core.FASegConfig` field, e.g. ``pamr``)

    Returns:
        a :class:`fiftyone_faseg.FASegModel`
    """
    _hub_id(model_name)
    if not _is_checkpoint(model_path):
        raise FileNotFoundError(
            "no checkpoint of '%s' in '%s': download it (foz.download_zoo_model('%s')) or place a folder "
            "with %s there" % (model_name, model_path, model_name, ", ".join(c + "/" for c in MODEL_COMPONENTS))
        )
    from fiftyone_faseg.run.model import FASegModel

    if image_size:
        from faseg_core import FASegConfig

        kwargs["config"] = FASegConfig().at_image_size(int(image_size))
    return FASegModel(model_path=model_path, classes=list(classes or []), threshold=threshold,
                      batch_size=batch_size, **kwargs)


def resolve_input(model_name, ctx):
    """The zoo model's parameters in the zoo plugin's "Apply model" form.

    Args:
        model_name: the zoo model's name
        ctx: the :class:`fiftyone.operators.executor.ExecutionContext`

    Returns:
        a :class:`fiftyone.operators.types.Property`
    """
    import fiftyone.operators.types as types

    inputs = types.Object()
    inputs.view("license", types.Notice(
        label="%s: weights of %s, CC-BY-NC-4.0 (non-commercial use only)" % (model_name, _hub_id(model_name))))
    prop = inputs.list("classes", types.String(), required=True, label="Classes",
                       description="The class names to segment every image into")
    params = ctx.params.get("remote_params") or {}
    if not [c for c in params.get("classes") or [] if c and str(c).strip()]:
        prop.invalid = True
        prop.error_message = "Name at least one class"
    inputs.float("threshold", default=DEFAULT_THRESHOLD, label="Background threshold",
                 description="Paper: 0.55 VOC, 0.5 Context, 0.6 COCO Object")
    inputs.int("image_size", default=512, label="Image size",
               description="Images are resized to this square before the VAE (128, 256, 512 or 1024)")
    # the bounds every FA-Seg form and run share (fiftyone_faseg.limits)
    for name, problem in limits.problems(_zoo_params(params)).items():
        if name in inputs.properties:
            inputs.properties[name].invalid = True
            inputs.properties[name].error_message = problem
    return types.Property(inputs)


def parse_parameters(model_name, ctx, params):
    """Drops empty parameters of the zoo plugin's form, so defaults apply; refuses
    parameters beyond the App's limits (:mod:`fiftyone_faseg.limits`: e.g. image sizes
    other than 128-1024 px) before anything loads; and passes the field the zoo plugin
    writes (its ``label_field``) to the model, whose classes then claim their pixel
    values in that field's ``mask_targets`` (existing classes keep theirs)."""
    for key in [k for k, v in params.items() if v in (None, "", [])]:
        params.pop(key)
    limits.check(_zoo_params(params))
    label_field = ctx.params.get("label_field")
    if isinstance(label_field, str) and label_field and "." not in label_field:
        params.setdefault("label_field", label_field)


def _zoo_params(params):
    """The zoo form's parameters as the run operator names them (``classes`` is the list
    for every image)."""
    return dict(params, classes_from="list") if "classes" in params else dict(params)


def _hub_id(model_name):
    if model_name not in ZOO_MODELS:
        raise ValueError("unknown model '%s': this source serves %s" % (model_name, sorted(ZOO_MODELS)))
    return ZOO_MODELS[model_name]


def _is_checkpoint(path):
    return all(os.path.isdir(os.path.join(path, c)) for c in MODEL_COMPONENTS)
