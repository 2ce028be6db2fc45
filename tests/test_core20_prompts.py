"""FASeg tokenizes a class list (and caption) once: later images with the same list reuse it."""

from faseg_core import pipeline
from faseg_core.tokens import build_class_prompts, reconstruction_prompt

CLASSES = ("aeroplane", "tv monitor", "dining table")


class Counting:
    """The tokenizer, counting its calls."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_prompts_are_tokenized_once_per_class_list_and_caption(tiny_faseg, monkeypatch):
    seg = tiny_faseg
    tokenizer = Counting(seg.tokenizer)
    monkeypatch.setattr(seg, "tokenizer", tokenizer)
    monkeypatch.setattr(seg, "_prompt_cache", type(seg._prompt_cache)())
    monkeypatch.setattr(pipeline, "PROMPT_CACHE", 2)
    first = seg._prompts(CLASSES, "a photo")
    tokenized = tokenizer.calls
    assert tokenized > 0
    again = seg._prompts(CLASSES, "a photo")
    assert tokenizer.calls == tokenized and again == first and again[0] is not first[0]  # a fresh list each time
    assert first[0] == build_class_prompts(tokenizer.tokenizer, list(CLASSES))
    assert first[1:] == reconstruction_prompt(tokenizer.tokenizer, "a photo", ", ".join(CLASSES))
    seg._prompts(CLASSES, None)
    seg._prompts(CLASSES[:1], None)
    assert list(seg._prompt_cache) == [(CLASSES, None), (CLASSES[:1], None)]  # the oldest went
    assert tokenizer.calls > tokenized
