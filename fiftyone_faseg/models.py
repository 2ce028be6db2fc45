"""Models loaded once per process: the FA-Seg segmenter and the candidate proposer.

Loading a model through transformers/accelerate patches process-wide state, so two loads
at once (two immediate operators in one App server) break each other and every later
load. Loads here run one at a time, and each checkpoint is loaded once: concurrent
callers of the same checkpoint wait for the first load and share its model. The models
are never changed by a run (settings travel with each call).
"""

import os

from .constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER

_CACHE = {}


def _cached(key, load):
    from faseg_core import LOAD_LOCK  # the one lock every model load holds (reentrant)

    with LOAD_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


def _device(device):
    import torch

    return str(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))


def load_segmenter(model_path=DEFAULT_MODEL, device=None, dtype=None):
    """A :class:`faseg_core.FASeg`, loaded once per (checkpoint, device, dtype) in this process."""
    from faseg_core import FASeg

    device = _device(device)
    key = ("faseg", os.fspath(model_path), device, str(dtype))
    return _cached(key, lambda: FASeg.from_pretrained(model_path, device=device, dtype=dtype))


def load_proposer(captioner_path=DEFAULT_CAPTIONER, tagger_model=DEFAULT_TAGGER, device=None):
    """``(Captioner, Tagger)``, loaded once per checkpoint and device in this process."""
    from faseg_core.candidates import Captioner, Tagger

    name, pretrained = tagger_model
    key = ("proposer", os.fspath(captioner_path), name, pretrained, str(device))
    return _cached(key, lambda: (Captioner.from_pretrained(captioner_path, device=device),
                                 Tagger.from_pretrained(name, pretrained=pretrained, device=device)))


def clear_cache():
    """Forget the cached models (frees their memory once nothing else holds them)."""
    from faseg_core import LOAD_LOCK

    with LOAD_LOCK:
        _CACHE.clear()
