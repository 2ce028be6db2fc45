"""FA-Seg: training-free open-vocabulary semantic segmentation from one diffusion pass.

    from faseg_core import FASeg, FASegConfig
    seg = FASeg.from_pretrained("XCLiu/2_rectified_flow_from_sd_1_5")
    result = seg(image, ["cat", "dog"], captions="a cat next to a dog")[0]
"""

from .config import THRESHOLDS, FASegConfig
from .images import ImageError
from .pipeline import FASeg, FASegResult, labels_from_scores

__all__ = ["FASeg", "FASegConfig", "FASegResult", "ImageError", "THRESHOLDS", "labels_from_scores"]
