"""Captioner, Tagger and propose_candidates on tiny random BLIP / open_clip models loaded from disk."""

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_core.candidates import (
    Candidate,
    Captioner,
    CaptionerConfig,
    Tagger,
    TaggerConfig,
    Vocabulary,
    combine,
    match_caption,
    propose_candidates,
    select_tags,
    tagclip_scores,
)
from faseg_core.testing.candidates import build_tiny_blip, build_tiny_clip

VOC = Vocabulary.voc()


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    folder = build_tiny_blip(tmp_path_factory.mktemp("blip"))
    return Captioner.from_pretrained(str(folder), config=CaptionerConfig(max_new_tokens=6, batch_size=2))


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    folder = build_tiny_clip(tmp_path_factory.mktemp("clip"))
    return Tagger.from_pretrained(str(folder), config=TaggerConfig(batch_size=2, top_k=3))


@pytest.fixture
def images():
    rng = np.random.RandomState(0)
    arrays = [rng.randint(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(3)]
    return [arrays[0], Image.fromarray(arrays[1]), arrays[2][..., 0]]  # array, PIL, grayscale


# ---------------------------------------------------------------------------- captioner
def test_captioner_one_string_per_image_batched_equals_unbatched(captioner, images):
    captions = captioner(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c == c.strip() for c in captions)
    assert captions == [captioner([im])[0] for im in images]
    assert captioner(images) == captions  # deterministic
    assert captioner(images[0]) == captions[:1]  # a single image is a batch of one
    assert captioner.model.dtype == torch.float32  # CPU


def test_captioner_beam_search_and_config_checks(captioner, images):
    beam = Captioner(captioner.model, captioner.processor, CaptionerConfig(num_beams=2, max_new_tokens=4))
    assert len(beam(images)) == 3
    with pytest.raises(ValueError, match="`num_beams` has to be a positive integer"):
        CaptionerConfig(num_beams=0)


def test_captioner_names_bad_images(captioner, tmp_path):
    from faseg_core import ImageError

    with pytest.raises(ImageError, match="image 1 has dtype int64"):
        captioner([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), dtype=np.int64)])
    (tmp_path / "x.jpg").write_text("text")
    with pytest.raises(ImageError, match="image '.*x.jpg' is not a readable image"):
        captioner([str(tmp_path / "x.jpg")])


# ---------------------------------------------------------------------------- tagger
def test_tagger_scores_shape_range_and_batching(tagger, images):
    scores = tagger.scores(images, VOC)
    assert scores.shape == (3, 20) and scores.dtype == torch.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    one_by_one = torch.cat([tagger.scores([im], VOC) for im in images])
    torch.testing.assert_close(scores, one_by_one, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tagger.scores(images, VOC), scores)  # deterministic


def test_tagger_tags_are_best_first_within_top_k(tagger, images):
    scores = tagger.scores(images, VOC)
    for row, tags in zip(scores, tagger(images, VOC)):
        assert 1 <= len(tags) <= 3
        assert all(t.source == "tagger" and t.name in VOC.names for t in tags)
        assert tags[0].name == VOC.names[int(row.argmax())]
        assert [t.confidence for t in tags] == sorted((t.confidence for t in tags), reverse=True)


def test_tagger_caches_text_embeddings(tagger, images):
    calls = []
    encode_text = tagger.model.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return encode_text(tokens, *args, **kwargs)

    tagger.clear_cache()
    tagger.model.encode_text = counting
    try:
        first = tagger.encode_text(VOC.names)
        assert first.shape == (20, 16)
        torch.testing.assert_close(first.norm(dim=-1), torch.ones(20))
        assert calls == [20 * len(tagger.config.templates)]
        tagger.scores(images, VOC)  # classes cached; background prompts encoded once
        tagger.scores(images, VOC)
        assert len(calls) == 2
        assert tagger.encode_text(VOC.names) is first
    finally:
        del tagger.model.encode_text


def test_tagger_drops_background_prompts_the_vocabulary_knows(tagger, images):
    context = Vocabulary.context()  # has "sky", "water", "grass", ... as classes
    tagger.clear_cache()
    assert tagger.scores(images[:1], context).shape == (1, 59)
    (background,) = {key[0] for key in tagger._text_cache} - {tuple(context.names)}
    assert "land" in background and "sky" not in background and "water" not in background


def test_tagclip_scores_on_hand_made_embeddings():
    text = torch.eye(3)  # classes 0, 1 and one background prompt
    patches = torch.tensor([[[10.0, 0, 0], [0, 0, 10.0]]])  # (1, 2, 3): patch 0 shows class 0
    global_ = torch.tensor([[0, 10.0, 0]])  # the whole image looks like class 1
    local_only = tagclip_scores(global_, patches, text, 10.0, 2, local_weight=1.0)
    global_only = tagclip_scores(global_, patches, text, 10.0, 2, local_weight=0.0)
    assert local_only.shape == (1, 2) and local_only.argmax() == 0 and global_only.argmax() == 1
    mixed = tagclip_scores(global_, patches, text, 10.0, 2, local_weight=0.5)
    torch.testing.assert_close(mixed, (local_only + global_only) / 2)
    uniform = torch.full((1, 2, 2), 0.5)  # refinement averages the two patches
    refined = tagclip_scores(global_, patches, text, 10.0, 2, affinity=uniform, local_weight=1.0)
    assert refined[0, 0] < local_only[0, 0]


def test_select_tags_relative_threshold_and_top_k():
    scores = torch.tensor([[0.1, 0.9, 0.6, 0.2], [0.3, 0.3, 0.3, 0.3]])
    assert select_tags(scores, 0.5) == [[1, 2], [0, 1, 2, 3]]
    assert select_tags(scores, 0.5, top_k=1) == [[1], [0]]
    assert select_tags(scores, 1.0) == [[1], [0, 1, 2, 3]]


def test_tagger_config_checks():
    with pytest.raises(ValueError, match="`relative_threshold` has to be in"):
        TaggerConfig(relative_threshold=1.5)
    with pytest.raises(ValueError, match="contain"):
        TaggerConfig(templates=("a photo",))


# ---------------------------------------------------------------------------- propose
def test_combine_rules_and_sources():
    tags = [Candidate("dog", 0.8, "tagger"), Candidate("cat", 0.4, "tagger")]
    union = combine(["person", "dog"], tags, "union")
    assert [(c.name, c.source) for c in union] == [("person", "caption"), ("dog", "caption+tagger"), ("cat", "tagger")]
    inter = combine(["person", "dog"], tags, "intersection")
    assert inter == [Candidate("dog", 0.8, "caption+tagger")]


def test_propose_union_keeps_captions_and_sources(captioner, tagger, images):
    results = propose_candidates(images, VOC, captioner=captioner, tagger=tagger)
    captions = captioner(images)
    tags = tagger(images, VOC)
    assert [r.caption for r in results] == captions
    for result, tag_list, caption in zip(results, tags, captions):
        mentioned, tagged = match_caption(caption, VOC), {t.name for t in tag_list}
        assert set(result.names) == set(mentioned) | tagged
        assert len(set(result.names)) == len(result.names) and len(result) == len(result.names)
        for candidate in result:
            expected = {(True, True): "caption+tagger", (True, False): "caption", (False, True): "tagger"}
            assert candidate.source == expected[(candidate.name in mentioned, candidate.name in tagged)]


def test_propose_with_given_captions_needs_no_captioner(tagger, images):
    captions = ["a man and two dogs asleep on a couch", "an empty road", "a cat"]
    caption_only = propose_candidates(None, VOC, rule="caption", captions=captions, fallback="empty")
    assert [r.names for r in caption_only] == [["person", "dog", "sofa"], [], ["cat"]]
    assert all(c.source == "caption" and c.confidence == 1.0 for c in caption_only[0])
    union = propose_candidates(images, VOC, tagger=tagger, captions=captions)
    assert union[0].names[:3] == ["person", "dog", "sofa"] and union[0].caption == captions[0]
    tags = {t.name for t in tagger(images, VOC)[0]}
    assert {c.name for c in union[0] if "tagger" in c.source} == tags


def test_propose_fallbacks(images):
    captions = ["an empty road", "a cat"]
    with pytest.raises(ValueError, match="Image 0 has no candidate class .*'an empty road'.*fallback='vocabulary'"):
        propose_candidates(None, VOC, rule="caption", captions=captions, fallback="error")
    filled = propose_candidates(None, VOC, rule="caption", captions=captions, fallback="vocabulary")
    assert filled[0].names == VOC.names and {c.source for c in filled[0]} == {"vocabulary"}
    assert filled[1].names == ["cat"]


def test_propose_bad_input(tagger, images):
    with pytest.raises(ValueError, match="`rule` has to be one of"):
        propose_candidates(images, VOC, tagger=tagger, rule="both")
    with pytest.raises(ValueError, match="needs captions"):
        propose_candidates(images, VOC, tagger=tagger, rule="union")
    with pytest.raises(ValueError, match="needs tags"):
        propose_candidates(images, VOC, captions=["a"] * 3, rule="intersection")
    with pytest.raises(ValueError, match="`fallback` has to be one of"):
        propose_candidates(images, VOC, tagger=tagger, rule="tagger", fallback="all")
    with pytest.raises(TypeError, match="Vocabulary.from_names"):
        propose_candidates(images, ["cat"], tagger=tagger, rule="tagger")
    with pytest.raises(ValueError, match="3 images but 2 `captions`"):
        propose_candidates(images, VOC, tagger=tagger, captions=["a", "b"])


def test_tagger_loads_a_named_model_with_a_local_checkpoint(tmp_path, tagger, images):
    import json

    import open_clip

    folder = build_tiny_clip(tmp_path / "clip")
    config = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "faseg-tiny-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "configs")
    named = Tagger.from_pretrained("faseg-tiny-vit", pretrained=str(folder / "open_clip_model.safetensors"),
                                   config=tagger.config)
    torch.testing.assert_close(named.scores(images, VOC), tagger.scores(images, VOC))


def test_importing_candidates_loads_no_model_library():
    import subprocess
    import sys

    code = "import sys, faseg_core.candidates; print(sorted(m for m in ('fiftyone', 'transformers', 'open_clip') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
