"""Loaded models, kept in one bounded cache per process: the FA-Seg segmenter and the
candidate proposer.

Loading a model through transformers/accelerate patches process-wide state, so two loads
at once (two immediate operators in one App server) break each other and every later
load. Loads here run one at a time (``faseg_core.LOAD_LOCK``), and each model is loaded
once per (checkpoint, device, dtype): concurrent callers of the same model wait for the
first load and share it. The models are never changed by a run (settings travel with
each call).

The cache is bounded: it keeps the ``model_cache_size`` most recently used models
(setting ``FASEG_MODEL_CACHE_SIZE``, or ``model_cache_size`` in the plugin's settings;
default ``DEFAULT_CACHE_SIZE``) and forgets the least recently used one beyond that, so a
long-lived App server asked for many checkpoints, devices or dtypes does not keep them
all. Forgetting a model never breaks a call using it: the caller holds its own
reference, and the memory is freed when the last call ends.
"""

import os
from collections import OrderedDict

from ..constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER

# two: a tagger run needs the segmenter and the proposer at once
DEFAULT_CACHE_SIZE = 2

_CACHE = OrderedDict()  # key -> model, least recently used first


def cache_size():
    """How many models the cache keeps (at least 1)."""
    from ..limits import setting

    value = setting("model_cache_size", DEFAULT_CACHE_SIZE)
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(size) != str(value).strip():
        raise ValueError("FASEG_MODEL_CACHE_SIZE (or the plugin setting model_cache_size) must be a whole number "
                         ">= 1, got %r" % (value,))
    return size


def _cached(key, load):
    from faseg_core import LOAD_LOCK  # the one lock every model load holds (reentrant)

    with LOAD_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        size = cache_size()
        model = load()
        _CACHE[key] = model
        evicted = False
        while len(_CACHE) > size:
            _CACHE.popitem(last=False)  # callers still holding it keep a working model
            evicted = True
        if evicted:
            _release_memory()
        return model


def _release_memory():
    """Returns the memory of forgotten models no call holds any more to the GPU."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device(device):
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # "cuda" and "cuda:0" are one model
    return str(device)


def _dtype(dtype, device):
    """The torch dtype a load with ``dtype`` gives on ``device`` (None and "auto" resolve)."""
    import torch

    from faseg_core.pipeline import _resolve_dtype

    if isinstance(dtype, str):
        dtype = dtype.replace("torch.", "")
    return str(_resolve_dtype(dtype or "auto", torch.device(device)))


def _checkpoint(path):
    path = os.fspath(path)
    return os.path.realpath(path) if os.path.isdir(path) else path  # one key per folder, however spelled


def load_segmenter(model_path=DEFAULT_MODEL, device=None, dtype=None):
    """A :class:`faseg_core.FASeg`, loaded once per (checkpoint, device, dtype) and kept
    while it is among the most recently used models."""
    from faseg_core import FASeg

    device = _device(device)
    key = ("faseg", _checkpoint(model_path), device, _dtype(dtype, device))
    return _cached(key, lambda: FASeg.from_pretrained(model_path, device=device, dtype=dtype))


def load_proposer(captioner_path=DEFAULT_CAPTIONER, tagger_model=DEFAULT_TAGGER, device=None):
    """``(Captioner, Tagger)``, loaded once per checkpoint and device and kept while it is
    among the most recently used models."""
    from faseg_core.candidates import Captioner, Tagger

    name, pretrained = tagger_model
    device = _device(device)
    key = ("proposer", _checkpoint(captioner_path), name, pretrained, device)
    return _cached(key, lambda: (Captioner.from_pretrained(captioner_path, device=device),
                                 Tagger.from_pretrained(name, pretrained=pretrained, device=device)))


def cached_models():
    """The keys of the models the cache holds, least recently used first."""
    return list(_CACHE)


def clear_cache():
    """Forget the cached models (frees their memory once nothing else holds them)."""
    from faseg_core import LOAD_LOCK

    with LOAD_LOCK:
        _CACHE.clear()
