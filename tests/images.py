"""Small generated test images, shared by the test modules."""

import numpy as np
from PIL import Image


def write_image(path, h=40, w=60, seed=0):
    """A ``h × w`` RGB PNG of one random colour with a band of another; returns its path."""
    rng = np.random.RandomState(seed)
    img = np.full((h, w, 3), rng.randint(0, 255, 3), np.uint8)
    img[h // 4 : h // 2, w // 3 :] = rng.randint(0, 255, 3)
    Image.fromarray(img).save(path)
    return str(path)
