"""FASeg end to end on a tiny random SD-1.5-shaped checkpoint loaded with from_pretrained."""

import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_core import FASeg, FASegConfig, ImageError
from faseg_core.labels import labels_from_scores

CLASSES = ["aeroplane", "tv monitor", "dining table"]
SCORE_ATOL = 5e-5  # float32 rounding of batched convolutions, through HARD (scores span ~0.5)


def photo(h=96, w=128, seed=0):
    """A smooth synthetic 'photo' with a few coloured blobs (uint8 HWC)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32) + rng.rand(3) * 80
    for _ in range(3):
        cy, cx, rad = rng.rand() * h, rng.rand() * w, 10 + rng.rand() * 30
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] = rng.rand(3) * 255
    return img.astype(np.uint8)


def test_result_layout(tiny_faseg):
    img = photo()
    (r,) = tiny_faseg(img, CLASSES, captions="a plane above a table")
    assert r.classes == CLASSES
    assert r.label_map.shape == img.shape[:2] and r.label_map.dtype == np.uint8
    assert set(np.unique(r.label_map)) <= {0, 1, 2, 3}
    assert r.scores.shape == (3, 16, 16) and r.scores.dtype == np.float32
    assert r.scores.min() >= 0 and r.scores.max() <= 1
    assert r.prompt == "a plane above a table ; aeroplane, tv monitor, dining table"


def test_scores_and_labels_equal_an_independent_pass(tiny_faseg, tiny_config):
    """The pipeline's result equals a by-hand pass: recorded attention → class maps by token
    spans → HARD per view (fast and dense formulations) → unflip average → labels."""
    from faseg_core import hard
    from faseg_core.attention import CROSS, SELF, AttentionRecorder, recording
    from faseg_core.testing.dense_hard import dense_refine
    from faseg_core.tokens import build_class_prompts

    seg, cfg = tiny_faseg, tiny_config
    img = photo(128, 128)
    (r,) = seg(img, CLASSES)

    (prompt,) = build_class_prompts(seg.tokenizer, CLASSES)
    text = seg.encode_text([r.prompt]).repeat(2, 1, 1)  # image + mirror
    class_embeds = seg.encode_text([prompt.text])[None].repeat(2, 1, 1, 1)
    latents = seg.encode_images([Image.fromarray(img)])
    recorder = AttentionRecorder(cfg.self_weights, [g for g, w in cfg.cross_weights.items() if w > 0])
    with torch.no_grad(), recording(seg.unet, recorder):
        seg.unet(latents, 0, encoder_hidden_states=text, cross_attention_kwargs={"class_embeds": class_embeds})
    views = []
    for v in range(2):
        cross = {
            g: torch.stack([recorder.mean(CROSS, g)[v][:, list(span)].mean(-1) for span in prompt.spans]).reshape(3, g, g)
            for g, w in cfg.cross_weights.items() if w > 0
        }
        selfm = {g: recorder.mean(SELF, g)[v] for g in cfg.self_weights}
        views.append((hard.refine(cross, selfm, cfg.cross_weights, cfg.self_weights, cfg.tau),
                      dense_refine(cross, selfm, cfg.cross_weights, cfg.self_weights, cfg.tau)))
    fast = 0.5 * (views[0][0] + views[1][0].flip(-1))
    dense = 0.5 * (views[0][1] + views[1][1].flip(-1))
    np.testing.assert_allclose(r.scores, fast.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(r.scores, dense.numpy(), rtol=1e-4, atol=1e-5)  # two formulations, as test_hard
    assert np.array_equal(r.label_map, labels_from_scores(r.scores, cfg.threshold, 128, 128, 128))


def test_deterministic(tiny_faseg):
    a = tiny_faseg(photo(), CLASSES)[0]
    b = tiny_faseg(photo(), CLASSES)[0]
    assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.scores, b.scores)


def test_result_does_not_depend_on_batch(tiny_faseg, tiny_config):
    images = [photo(seed=s) for s in range(3)]
    classes = [CLASSES, ["cat", "dog"], CLASSES[:1]]
    one, three = tiny_config.replace(batch_size=1), tiny_config.replace(batch_size=3)
    alone = tiny_faseg(images, classes, config=one)
    together = tiny_faseg(images, classes, config=three)
    shuffled = tiny_faseg(images[::-1], classes[::-1], config=three)[::-1]
    # The latents (VAE posterior sampled per image pair) are exactly batch-independent ...
    pil = [Image.fromarray(im) for im in images]
    assert torch.equal(torch.cat([tiny_faseg.encode_images([im]) for im in pil]), tiny_faseg.encode_images(pil))
    # ... and the rest differs only by the float32 rounding of batched convolutions
    for a, b, c in zip(alone, together, shuffled):
        assert a.classes == b.classes == c.classes
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=SCORE_ATOL)
        np.testing.assert_allclose(a.scores, c.scores, rtol=0, atol=SCORE_ATOL)
        assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.label_map, c.label_map)


def test_skipping_the_inversion_call_gives_the_same_masks(tiny_faseg, tiny_config):
    calls = []
    hook = tiny_faseg.unet.register_forward_hook(lambda *a: calls.append(1))
    a = tiny_faseg(photo(), CLASSES)[0]
    b = tiny_faseg(photo(), CLASSES, config=tiny_config.replace(run_inversion=True))[0]
    hook.remove()
    assert len(calls) == 3  # the inversion pass really ran
    # the inversion is an identity up to float32 rounding
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=SCORE_ATOL)
    assert np.array_equal(a.label_map, b.label_map)


def test_flip_equivariance(tiny_faseg, tiny_config):
    # With the posterior mean both views see mirrored inputs, so TTF makes FA-Seg exactly
    # mirror-equivariant; sampled noise is not mirrored. The image is as wide as the model's
    # square, so the nearest resize of columns (not mirror-symmetric in general) is the identity.
    img = photo(90, 128, seed=3)
    a, b = tiny_faseg([img, np.ascontiguousarray(img[:, ::-1])], CLASSES, config=tiny_config.replace(vae_sample=False))
    np.testing.assert_allclose(a.scores[..., ::-1], b.scores, rtol=0, atol=1e-6)
    assert np.array_equal(a.label_map[:, ::-1], b.label_map)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_path_runs_with_half_store(tiny_sd_dir, tiny_config, dtype):
    """The CUDA path's precision (float16; bfloat16 allowed), exercised on the CPU."""
    seg = FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cpu", dtype=dtype)
    assert seg.unet.dtype == dtype and seg.text_encoder.dtype == dtype and seg.store_dtype() == torch.float16
    (r,) = seg(photo(), CLASSES)
    # HARD and min-max run in float32 whatever the model's dtype (random tiny models are
    # too chaotic for bf16 and fp32 scores to be compared value by value)
    assert r.scores.dtype == np.float32 and np.isfinite(r.scores).all()
    assert r.scores.min() >= 0 and r.scores.max() <= 1 and r.label_map.shape == (96, 128)


def test_150_classes_none_dropped(tiny_faseg):
    names = [f"thing {chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(150)]
    (r,) = tiny_faseg(photo(), names, captions="a long caption " * 10)
    assert r.classes == names and r.scores.shape[0] == 150
    assert r.label_map.max() <= 150


def test_per_image_classes_and_duplicates(tiny_faseg):
    a, b = tiny_faseg([photo(), photo(seed=1)], [["cat", "cat", " dog "], ["北京", "Café"]])
    assert a.classes == ["cat", "dog"] and b.classes == ["北京", "Café"]
    assert a.scores.shape[0] == 2 and b.scores.shape[0] == 2


def test_caption_shortened_with_one_warning(tiny_faseg, caplog):
    tiny_faseg._warned_truncation = False
    names = [f"class number {w}" for w in "abcdefghijklmnopqrst"]
    with caplog.at_level(logging.WARNING, logger="faseg_core.pipeline"):
        results = tiny_faseg([photo(), photo(seed=2)], names, captions="word " * 60)
    assert sum("shortened" in m for m in caplog.messages) == 1
    assert all(r.prompt.endswith(", ".join(names)) for r in results)


# ---------------------------------------------------------------- image kinds


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_image_modes(tiny_faseg, tmp_path, mode):
    base = Image.fromarray(photo(40, 60))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257))
        path = tmp_path / "deep.png"
    else:
        img = base.convert(mode)
        path = tmp_path / ("img.jpg" if mode == "CMYK" else "img.png")
    img.save(path)
    (r,) = tiny_faseg(str(path), CLASSES)
    assert r.label_map.shape == (40, 60)


def test_exif_rotated_image_is_segmented_upright(tiny_faseg, tmp_path):
    img = Image.fromarray(photo(40, 60))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    (r,) = tiny_faseg(path, CLASSES)
    assert r.label_map.shape == (60, 40)


@pytest.mark.parametrize("shape", [(8, 8), (1, 1), (6000, 8000)])
def test_tiny_and_huge_images_keep_their_size(tiny_faseg, shape):
    img = np.zeros((*shape, 3), np.uint8)
    img[: shape[0] // 2] = 200
    (r,) = tiny_faseg(img, CLASSES)
    assert r.label_map.shape == shape


def test_bad_inputs_are_named(tiny_faseg, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(encoded(Image.fromarray(photo()), "JPEG")[:300])
    with pytest.raises(ImageError, match="image '.*empty.jpg' is an empty"):
        tiny_faseg(str(empty), CLASSES)
    with pytest.raises(ImageError, match="image '.*notes.jpg' is not a readable image"):
        tiny_faseg(str(text), CLASSES)
    with pytest.raises(ImageError, match="image '.*cut.jpg' is not a readable image"):
        tiny_faseg(str(truncated), CLASSES)
    with pytest.raises(ImageError, match="does not exist"):
        tiny_faseg(str(tmp_path / "missing.png"), CLASSES)
    with pytest.raises(TypeError, match="image 1 is a int"):
        tiny_faseg([photo(), 3], CLASSES)
    with pytest.raises(TypeError, match="torch tensor"):
        tiny_faseg(torch.zeros(3, 8, 8), CLASSES)
    with pytest.raises(ImageError, match="shape"):
        tiny_faseg(np.zeros((4, 4, 5), np.uint8), CLASSES)
    with pytest.raises(ImageError, match="dtype int64"):
        tiny_faseg(np.zeros((4, 4, 3), np.int64), CLASSES)


def test_empty_or_wrong_classes_say_how_to_supply_them(tiny_faseg):
    with pytest.raises(ValueError, match="no candidate classes for image 0: pass classes="):
        tiny_faseg(photo(), [])
    with pytest.raises(ValueError, match="no candidate classes for image 1"):
        tiny_faseg([photo(), photo()], [["cat"], [" "]])
    with pytest.raises(ValueError, match="one list per image"):
        tiny_faseg([photo(), photo()], [["cat"]])
    with pytest.raises(ValueError, match="list of class names"):
        tiny_faseg(photo(), "cat")
    with pytest.raises(ValueError, match="one per image"):
        tiny_faseg([photo(), photo()], ["cat"], captions=["a", "b", "c"])


def test_config_grids_must_exist_in_the_model(tiny_faseg):
    with pytest.raises(ValueError, match="no attention at grids .*at_image_size"):
        tiny_faseg(photo(), CLASSES, config=FASegConfig(image_size=128))


def test_from_pretrained_names_a_bad_folder(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks vae/, text_encoder/, tokenizer/"):
        FASeg.from_pretrained(tmp_path)


def test_out_of_memory_halves_the_batch_for_the_rest_of_this_call_only(tiny_sd_dir, tiny_config, monkeypatch):
    seg = FASeg.from_pretrained(tiny_sd_dir, config=tiny_config.replace(batch_size=4), device="cpu")
    sizes, real, failure = [], seg._segment, {}

    def flaky(jobs, cfg):
        sizes.append(len(jobs))
        if len(jobs) > 2:
            raise failure.get("error", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        return real(jobs, cfg)

    monkeypatch.setattr(seg, "_segment", flaky)
    images = [photo(seed=s) for s in range(4)]
    results = seg(images + images, CLASSES)[:4]
    assert sizes == [4, 2, 2, 2, 2]  # the call's later batches start at the size that worked
    # a shared model: one caller's out-of-memory never shrinks another call's batches
    assert len(seg(images, CLASSES)) == 4 and sizes[5:] == [4, 2, 2]
    failure["error"] = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):  # other errors are not retried
        seg(images, CLASSES, config=tiny_config.at_image_size(256))
    monkeypatch.undo()
    expected = seg(images, CLASSES, config=tiny_config.replace(batch_size=2))
    for a, b in zip(results, expected):
        assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.scores, b.scores)


def test_concurrent_calls_each_get_what_a_lone_call_gives(tiny_sd_dir, tiny_config):
    """Two threads share one cold FASeg with their own settings (threshold, image size, batch)."""
    work = {
        "a": ([photo(seed=s) for s in range(3)], CLASSES, tiny_config.replace(threshold=0.4, batch_size=2)),
        "b": ([photo(70, 90, seed=s) for s in range(3, 6)], ["cat", "dog"],
              FASegConfig(threshold=0.6, batch_size=1).at_image_size(64)),
    }
    seg = FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cpu")
    start = threading.Barrier(len(work))

    def call(images, classes, config):
        start.wait()
        return seg(images, classes, config=config)

    with ThreadPoolExecutor(len(work)) as pool:
        futures = {key: pool.submit(call, *args) for key, args in work.items()}
    lone = FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cpu")
    for key, (images, classes, config) in work.items():
        expected = lone(images, classes, config=config)
        for got, want in zip(futures[key].result(), expected):
            assert got.classes == want.classes and np.array_equal(got.label_map, want.label_map)
            assert np.array_equal(got.scores, want.scores), key
    assert seg.config is tiny_config  # a call's settings never change the segmenter's


def test_concurrent_loads_both_succeed(tiny_sd_dir, tiny_faseg):
    start = threading.Barrier(2)

    def load():
        start.wait()
        return FASeg.from_pretrained(tiny_sd_dir, device="cpu")

    with ThreadPoolExecutor(2) as pool:
        segs = [f.result() for f in [pool.submit(load) for _ in range(2)]]
    for seg in segs:
        for name in ("unet", "vae", "text_encoder"):
            loaded, reference = getattr(seg, name).state_dict(), getattr(tiny_faseg, name).state_dict()
            assert all(torch.equal(loaded[k], reference[k]) for k in reference), name
