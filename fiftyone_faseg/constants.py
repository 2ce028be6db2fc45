"""Defaults shared by the SDK and the operators (importing this loads no torch)."""

DEFAULT_MODEL = "XCLiu/2_rectified_flow_from_sd_1_5"
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"
DEFAULT_TAGGER = ("ViT-B-16", "openai")
# The checkpoint folders FA-Seg reads (faseg_core.pipeline.COMPONENTS, importable without torch)
MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")
CLASS_SOURCES = ("list", "mask_targets", "gt_field", "tagger")
DEFAULT_THRESHOLD = 0.55  # the paper's PASCAL VOC value (faseg_core.THRESHOLDS has the others)
BACKGROUND = "background"  # the name of pixel value 0
IGNORE_INDEX = 255  # ground-truth pixels left out of every count
PLUGIN_NAME = "@faseg/fiftyone-faseg"
# The key of the mIoU record the evaluation stores in ``results.custom_metrics``. FiftyOne
# keys that dict by the URI of the metric operator that computed it
# (``fiftyone.utils.eval.base.BaseEvaluationMethod.compute_custom_metrics``) and the Model
# Evaluation panel compares two runs' metrics by that key, so the record FA-Seg stores
# itself (without the plugin loaded) uses the URI of the plugin's ``miou`` operator: an
# FA-Seg run and a FiftyOne run evaluated with ``custom_metrics=[MIOU_METRIC_URI]`` compare.
# The only operator the SDK names.
MIOU_METRIC_URI = PLUGIN_NAME + "/miou"


def operator_uri(name):
    """The URI of one of this plugin's operators, e.g. ``operator_uri("run_faseg")`` (for the
    operators and tests; the SDK calls no operator)."""
    return "%s/%s" % (PLUGIN_NAME, name)
