"""FA-Seg: training-free open-vocabulary semantic segmentation from one diffusion pass.

    from faseg_core import FASeg, FASegConfig
    seg = FASeg.from_pretrained("XCLiu/2_rectified_flow_from_sd_1_5")
    result = seg(image, ["cat", "dog"], captions="a cat next to a dog")[0]

Attributes load on first use, so `faseg_core.labels` and `faseg_core.config` import without torch.
"""

import importlib

_LAZY = {
    "FASeg": ".pipeline", "FASegResult": ".pipeline", "FASegConfig": ".config", "THRESHOLDS": ".config",
    "ImageError": ".images", "LOAD_LOCK": ".loading", "labels_from_scores": ".labels",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_LAZY[name], __name__), name)
    return value
