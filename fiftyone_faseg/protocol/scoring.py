"""Label maps from stored score maps: the one function the run and the sweep share.

The run stores each image's refined scores as float16 (:func:`fiftyone_faseg.storage.save_scores`).
For a sweep from those files to give *exactly* the masks of the run at the run's
threshold, the run's masks are derived from the same float16 scores (see
:class:`ConsistentSegmenter`); computing them from the float32 scores instead flips the
few pixels whose score lies within float16 rounding of the threshold or of another
class's score.

The steps are those of :func:`faseg_core.hard.to_label_map` followed by the pipeline's
nearest resize to the image size: bicubic upsampling of the ``(K, h, w)`` scores to the
model's image size, per pixel background (0) when the best score is below the threshold,
else ``1 + argmax``, then :func:`faseg_core.images.resize_labels`.
"""

import time

import numpy as np


def as_stored(scores):
    """Scores as they are after a float16 round trip through the score file."""
    return np.asarray(scores, dtype=np.float16).astype(np.float32)


def upsampled_best(scores, image_size):
    """``(best, index)`` per pixel of the scores upsampled (bicubic) to ``image_size``.

    Args:
        scores: a ``(K, h, w)`` array
        image_size: the model's image side

    Returns:
        two ``(image_size, image_size)`` torch tensors: the best score and its class index
    """
    import torch

    from faseg_core.hard import upsample_bicubic

    up = upsample_bicubic(torch.as_tensor(np.asarray(scores, dtype=np.float32)), image_size)
    return up.max(dim=0)


def labels_at(best, index, threshold, num_classes, width, height):
    """The ``(height, width)`` label map (0 background, ``k + 1`` class ``k``) at a threshold."""
    import torch

    from faseg_core.images import resize_labels

    labels = torch.where(best >= threshold, index + 1, torch.zeros_like(index))
    dtype = np.uint8 if num_classes < 255 else np.uint16 if num_classes < 65535 else np.int32
    labels = labels.to(torch.int32).numpy().astype(dtype)
    return resize_labels(labels, int(width), int(height))


def label_map(scores, threshold, image_size, width, height):
    """The label map of ``(K, h, w)`` scores at one threshold, at ``width`` × ``height``."""
    best, index = upsampled_best(scores, image_size)
    return labels_at(best, index, threshold, len(scores), width, height)


class ConsistentSegmenter(object):
    """A :class:`faseg_core.FASeg` whose results' scores are float16-rounded and whose
    masks are computed from them, so stored masks and stored scores agree exactly.

    It also times the model calls (``model_seconds``, ``images``). Everything else
    (``config``, ``device``, ...) is the wrapped segmenter's.

    Args:
        segmenter: a loaded :class:`faseg_core.FASeg`
    """

    def __init__(self, segmenter):
        self.__dict__["_segmenter"] = segmenter
        self.__dict__["model_seconds"] = 0.0
        self.__dict__["images"] = 0

    def __getattr__(self, name):
        return getattr(self.__dict__["_segmenter"], name)

    def __setattr__(self, name, value):
        if name in ("model_seconds", "images"):
            self.__dict__[name] = value
        else:
            setattr(self._segmenter, name, value)

    def __call__(self, images, classes, captions=None, **kwargs):
        import torch

        seg = self._segmenter
        start = time.perf_counter()
        results = seg(images, classes, captions, **kwargs)
        if seg.device.type == "cuda":
            torch.cuda.synchronize(seg.device)
        cfg = seg.config
        for result in results:
            height, width = result.label_map.shape[:2]
            result.scores = as_stored(result.scores)
            result.label_map = label_map(result.scores, cfg.threshold, cfg.image_size, width, height)
        self.model_seconds += time.perf_counter() - start
        self.images += len(results)
        return results
