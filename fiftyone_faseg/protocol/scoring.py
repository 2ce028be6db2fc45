"""Label maps from stored score maps: the one function the run and the sweep share.

The run stores each image's refined scores as float16 (:func:`fiftyone_faseg.storage.save_scores`)
and derives its masks from those rounded scores (``segment_samples(store_scores=True)``),
so a sweep from the files gives *exactly* the run's masks at the run's threshold.

The steps are those of :func:`faseg_core.hard.to_label_map` followed by the pipeline's
nearest resize to the image size: bicubic upsampling of the ``(K, h, w)`` scores to the
model's image size, per pixel background (0) when the best score is below the threshold,
else ``1 + argmax``, then :func:`faseg_core.images.resize_labels`.
"""

import time

import numpy as np


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

    from faseg_core.images import label_dtype, resize_labels

    labels = torch.where(best >= threshold, index + 1, torch.zeros_like(index))
    labels = labels.to(torch.int32).numpy().astype(label_dtype(num_classes))
    return resize_labels(labels, int(width), int(height))


class TimedSegmenter(object):
    """A :class:`faseg_core.FASeg` that adds up the time of its calls (``model_seconds``,
    ``images``); everything else (``config``, ``device``, ...) is the wrapped segmenter's.

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
        self.model_seconds += time.perf_counter() - start
        self.images += len(results)
        return results
