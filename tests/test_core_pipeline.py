"""The GPU-first pipeline's plumbing on the CPU: images read ahead, the VAE image by image, the compile switch."""

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_core import FASeg, ImageError, pipeline
from faseg_core.images import resized, to_pixels

CLASSES = ["aeroplane", "tv monitor", "dining table"]


def photo(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_pixels_from_resized_arrays_equal_those_from_images():
    images = [Image.fromarray(photo(40 + i, 60, i)) for i in range(3)]
    expected = torch.stack([torch.from_numpy(np.asarray(im.resize((32, 32), Image.BICUBIC), np.float32))
                            for im in images]).permute(0, 3, 1, 2) / 127.5 - 1.0  # the former arithmetic
    assert torch.equal(to_pixels(images, 32), expected)
    assert torch.equal(to_pixels([resized(im, 32) for im in images], 32), expected)


def test_images_read_ahead_give_the_same_results_and_errors_in_order(tiny_faseg, tiny_config, tmp_path):
    images = [photo(50 + 7 * i, 70, i) for i in range(5)]
    cfg = tiny_config.replace(batch_size=2)
    ahead = tiny_faseg(images, CLASSES, config=cfg)
    alone = [r for start in (0, 2, 4) for r in tiny_faseg(images[start : start + 2], CLASSES, config=cfg)]  # one batch a call
    for a, b in zip(ahead, alone):
        assert np.array_equal(a.label_map, b.label_map) and np.array_equal(a.scores, b.scores)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="bad.jpg' is not a readable image"):
        tiny_faseg(images[:3] + [str(bad)], CLASSES, config=cfg)
    with pytest.raises(TypeError, match="image 3 is a int"):
        tiny_faseg(images[:3] + [3], CLASSES, config=cfg)


def test_compile_switch_compiles_the_attention_free_blocks_once(tiny_sd_dir, tiny_config, monkeypatch):
    from diffusers.models.resnet import ResnetBlock2D

    monkeypatch.setitem(pipeline.COMPILE_OPTIONS, "cpu", {"backend": "eager", "dynamic": False})
    seg = FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cpu")
    image = photo(60, 80, 0)
    (plain,) = seg(image, CLASSES)
    assert not seg._compiled and seg.unet.down_blocks[0].resnets[0]._compiled_call_impl is None
    (compiled,) = seg(image, CLASSES, config=tiny_config.replace(compile=True))
    resnets = [m for m in seg.unet.modules() if isinstance(m, ResnetBlock2D)]
    assert seg._compiled and all(m._compiled_call_impl is not None for m in resnets)
    assert seg.vae.encoder._compiled_call_impl is not None
    assert np.array_equal(plain.label_map, compiled.label_map) and np.array_equal(plain.scores, compiled.scores)


@pytest.mark.parametrize("flip", [True, False])
def test_the_vae_encodes_one_image_with_its_mirror_at_a_time(tiny_faseg, tiny_config, monkeypatch, flip):
    # the VAE's activations are a pass's largest buffers: they must not grow with the batch
    cfg = tiny_config.replace(batch_size=4, flip=flip)
    images = [Image.fromarray(photo(40 + 9 * i, 60, i)) for i in range(4)]
    whole = tiny_faseg.encode_images(images, cfg)
    shapes = []
    encode = tiny_faseg.vae.encode

    def recorded(pixels, *args, **kwargs):
        shapes.append(tuple(pixels.shape))
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(tiny_faseg.vae, "encode", recorded)
    latents = tiny_faseg.encode_images(images, cfg)
    side = cfg.image_size
    assert shapes == [(2 if flip else 1, 3, side, side)] * 4
    assert torch.equal(latents, whole)
    # image by image, the views of image i are rows 2i, 2i + 1 (mirror second), as a batch of one gives them
    views = 2 if flip else 1
    for i, image in enumerate(images):
        assert torch.equal(latents[views * i : views * (i + 1)], tiny_faseg.encode_images([image], cfg))
