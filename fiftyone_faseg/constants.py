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


def operator_uri(name):
    """The URI of one of this plugin's operators, e.g. ``operator_uri("run_faseg")``."""
    return "%s/%s" % (PLUGIN_NAME, name)
