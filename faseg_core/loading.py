"""One lock for every model load in this process.

Loading a checkpoint patches process-wide state in transformers and accelerate (empty
"meta" weights, patched `nn.Module` constructors), so two loads at once in two threads
fail ("Cannot copy out of meta tensor"), and can leave every later load failing too.
`FASeg.from_pretrained`, `Captioner.from_pretrained` and `Tagger.from_pretrained` hold
`LOAD_LOCK`; a model cache holds it too, so a checkpoint is loaded once.

Example::

    with LOAD_LOCK:
        if key not in cache:
            cache[key] = FASeg.from_pretrained(path)
"""

import threading

LOAD_LOCK = threading.RLock()
