"""FiftyOne plugin ``@faseg/fiftyone-faseg``.

Operators live in ``operators/`` and are thin over the ``fiftyone_faseg`` SDK; torch and
diffusers are imported only when an operator runs, so the plugin always registers.
"""


def register(p):
    from .operators import evaluate

    evaluate.register(p)
