"""Checks only a CUDA device can make (marker ``gpu``; skipped elsewhere, run with
``pytest -m gpu`` on a lent GPU): the same model gives the CPU's labels on the card, batch
for batch, and the Triton recording kernels give the torch path's sums."""

import functools

import numpy as np
import pytest
import torch

from faseg_core import FASeg, hard, readout
from faseg_core.attention import SELF, AttentionRecorder
from test_pipeline import photo

pytestmark = pytest.mark.gpu

CLASSES = [["aeroplane", "tv monitor", "dining table"], ["cat", "dog"], ["person"]]


@pytest.fixture(scope="module")
def cuda_faseg(tiny_sd_dir, tiny_config):
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products as the CPU makes them
    torch.backends.cudnn.allow_tf32 = False
    return FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cuda", dtype="float32")


def test_cuda_float32_labels_equal_the_cpus_and_do_not_depend_on_the_batch(cuda_faseg, tiny_faseg, tiny_config):
    images = [photo(seed=s) for s in range(3)]
    cpu = tiny_faseg(images, CLASSES, config=tiny_config.replace(batch_size=3))
    for batch in (1, 3):
        gpu = cuda_faseg(images, CLASSES, config=tiny_config.replace(batch_size=batch))
        for a, b in zip(cpu, gpu):
            assert a.classes == b.classes
            np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-4 * np.abs(a.scores).max())
            # labels may differ only where two scores tie within float32 rounding
            assert (a.label_map != b.label_map).mean() < 1e-3


def test_triton_recording_equals_the_torch_path_on_the_card(cuda_faseg):
    pytest.importorskip("triton")
    block = cuda_faseg.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    hidden = torch.randn(2, 16 * 16, block.attn1.to_q.in_features, generator=torch.Generator().manual_seed(0)).cuda()
    runs = {}
    for kernel in ("torch", "triton"):
        recorder = AttentionRecorder({16}, set(), kernel=kernel)
        with torch.no_grad():
            outs = [recorder(block.attn1, hidden), recorder(block.attn1, hidden * 0.5)]
        runs[kernel] = outs, recorder.mean(SELF, 16)
    for a, b in zip(runs["triton"][0], runs["torch"][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item())
    torch.testing.assert_close(runs["triton"][1], runs["torch"][1], rtol=1e-5, atol=1e-9)


def test_half_precision_runs_on_the_card(tiny_sd_dir, tiny_config, cuda_faseg):
    # random weights in fp16 differ from fp32 on many pixels (any implementation): judge that
    # it runs and gives every image its classes and size; parity is judged in float32 above
    seg = FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cuda", dtype="float16")
    images = [photo(seed=s) for s in range(3)]
    half = seg(images, CLASSES, config=tiny_config.replace(batch_size=3))
    full = cuda_faseg(images, CLASSES, config=tiny_config.replace(batch_size=3))
    for a, b in zip(half, full):
        assert a.classes == b.classes and a.label_map.shape == b.label_map.shape
        assert a.scores.shape == b.scores.shape and np.isfinite(a.scores).all()


def test_recording_and_readout_never_wait_for_the_card(cuda_faseg, tiny_config, monkeypatch):
    # issue 20: from the UNet's recorded layers to the label maps a pass stays on the card;
    # its one wait is the copy of the results to the host (`readout.to_host`, not checked).
    # CUDA's sync debug mode raises on any synchronizing call inside the checked functions.
    def checked(fn):
        @functools.wraps(fn)  # diffusers passes a processor only the keywords its signature names
        def run(*args, **kwargs):
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        return run

    monkeypatch.setattr(AttentionRecorder, "__call__", checked(AttentionRecorder.__call__))
    for name in ("refine", "label_maps"):
        monkeypatch.setattr(readout, name, checked(getattr(readout, name)))
    monkeypatch.setattr(hard, "unflip_average", checked(hard.unflip_average))
    images = [photo(seed=s) for s in range(3)]
    results = cuda_faseg(images, CLASSES, config=tiny_config.replace(batch_size=3))
    assert [r.classes for r in results] == CLASSES


def test_label_read_out_on_the_card_equals_the_numpy_path_bit_for_bit():
    # issue 20: the same scores give the same label maps wherever they are read out (a GPU run,
    # a re-threshold on the host): separate float32 multiplies and adds in one order, the
    # first class winning ties, PIL's nearest resize
    from faseg_core.labels import labels_from_scores
    from test_core_readout import SIZES, prompt

    rng = np.random.default_rng(0)
    for start in range(0, len(SIZES), 12):
        sizes = SIZES[start : start + 12]
        counts = [1 + (i * 5) % 7 for i in range(len(sizes))]
        scores = rng.random((len(sizes), max(counts), 16, 16), dtype=np.float32)
        scores[:, -1] = scores[:, 0]  # ties: the first class must win on both
        plan = readout.plan([[prompt([[1 + i] for i in range(k)])] for k in counts], sizes, 77, torch.device("cuda"))
        labels = readout.label_maps(torch.from_numpy(scores).cuda(), plan, 0.55, 128)
        for (label_map, _), (width, height), k, s in zip(readout.to_host(labels, None, plan), sizes, counts, scores):
            assert np.array_equal(label_map, labels_from_scores(s[:k], 0.55, 128, width, height)), (width, height, k)
