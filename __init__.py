"""FiftyOne plugin ``@faseg/fiftyone-faseg``.

Operators live in ``operators/`` and are thin over the ``fiftyone_faseg`` SDK; torch and
diffusers are imported only when an operator runs, so the plugin always registers.
"""

import os
import sys

try:
    import fiftyone_faseg  # noqa: F401
except ImportError:
    # Installed as a plugin folder without `pip install`: the SDK packages sit beside this
    # file. They must stay importable, since stored evaluation runs name their classes.
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))


def register(p):
    from .operators import evaluate, iterate, panel, run, workers

    run.register(p)
    evaluate.register(p)
    panel.register(p)
    workers.register(p)
    iterate.register(p)
