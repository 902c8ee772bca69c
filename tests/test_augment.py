"""Tests for core.simclr.augment.

The batched views are checked three ways: every op against torchvision's own
per-image functional op on the same per-sample factor; a whole batch against a
per-sample transcription with torchvision functionals and the same drawn parameters;
and the distribution of many batched views against many views of the torchvision
per-image pipeline (``per_image_views``) on the same source images.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from core.simclr.augment import (
    BLUR_P,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CROP_RATIO,
    CROP_TRIES,
    FLIP_P,
    GRAY_P,
    HUE,
    AugmentConfig,
    BatchedViews,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    crop_resize,
    eval_transform,
    gaussian_blur,
    normalize_batch,
    per_image_views,
    rgb_to_grayscale,
    sample_crop_boxes,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    # These tests check numbers, not speed; on a CPU shared with other jobs, OpenMP's
    # two threads wait on each other at every small op, so the suite runs on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def structured_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Synthetic uint8 RGB images with colour gradients, solid blocks and a striped one.

    Returns:
        Images. Shape: (n, 3, size, size).
    """
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    images = []
    for _ in range(n):
        a, b, c = torch.rand(3, 3, 1, 1, generator=g)
        img = a * xx + b * yy + c * (1 - xx) * yy  # a per-channel gradient
        for _ in range(3):  # a few solid blocks
            y0, x0 = torch.randint(0, size - size // 4, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 3, (2,), generator=g).tolist()
            img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=g)
        # Fine vertical stripes: detail that blur and downscaling visibly remove.
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        block = img[:, y0 : y0 + size // 2, x0 : x0 + size // 2]
        block[:, :, ::2] = block[:, :, ::2] * 0.4
        img = img / img.amax().clamp(min=1e-6)
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.stack(images)


def normalize_ref(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    assert cfg.mean is not None and cfg.std is not None
    return TF.normalize(x, list(cfg.mean), list(cfg.std))


# --------------------------------------------------------------------------------------
# Config


def test_config_defaults_and_blur_rule():
    cfg = AugmentConfig(image_size=32)
    assert cfg.jitter_strength == 0.5
    assert cfg.mean == CIFAR10_MEAN and cfg.std == CIFAR10_STD
    assert not cfg.use_blur
    assert AugmentConfig(image_size=96).use_blur
    assert AugmentConfig(image_size=32, blur=True).use_blur
    assert not AugmentConfig(image_size=224, blur=False).use_blur
    assert AugmentConfig(image_size=96).blur_kernel_size == 9
    assert AugmentConfig(image_size=224).blur_kernel_size == 23
    assert AugmentConfig(image_size=32, jitter_strength=1.0).jitter_ranges == (0.8, 0.8, 0.8, 0.2)


def test_config_lists_become_tuples():
    cfg = AugmentConfig(image_size=32, crop_scale=[0.2, 1.0], mean=[0.5] * 3, std=[0.25] * 3)
    assert cfg.crop_scale == (0.2, 1.0) and cfg.mean == (0.5,) * 3 and cfg.std == (0.25,) * 3
    hash(cfg)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=4), "at least 8"),
        (dict(image_size=32.0), "int"),
        (dict(image_size=32, jitter_strength=-0.1), r"jitter_strength must be in \[0, 2.5\]"),
        (dict(image_size=32, jitter_strength=3.0), "hue shift"),
        (dict(image_size=32, crop_scale=(0.0, 1.0)), "0 < min <= max <= 1"),
        (dict(image_size=32, crop_scale=(0.5, 0.2)), "0 < min <= max <= 1"),
        (dict(image_size=32, crop_scale=(0.5, 1.5)), "0 < min <= max <= 1"),
        (dict(image_size=32, crop_scale=(0.5,)), "two numbers"),
        (dict(image_size=32, mean=None), "both"),
        (dict(image_size=32, std=(0.2, 0.0, 0.2)), "positive"),
        (dict(image_size=32, mean=(0.5, 0.5)), "three numbers"),
        (dict(image_size=32, blur="yes"), "blur"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


# --------------------------------------------------------------------------------------
# Batched views: shapes, devices, reproducibility


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("source", [(3, 32, 32), (3, 40, 48), (1, 32, 32)])
def test_batched_views_shapes(device, source):
    c, h, w = source
    x = torch.randint(0, 256, (6, c, h, w), dtype=torch.uint8, device=device)
    v1, v2 = BatchedViews(AugmentConfig(image_size=24))(x)
    for v in (v1, v2):
        assert v.shape == (6, 3, 24, 24)
        assert v.dtype == torch.float32
        assert v.device == x.device
        assert torch.isfinite(v).all()


@pytest.mark.parametrize("device", DEVICES)
def test_batched_views_with_blur_shapes(device):
    x = torch.randint(0, 256, (4, 3, 100, 120), dtype=torch.uint8, device=device)
    v1, v2 = BatchedViews(AugmentConfig(image_size=96))(x)
    assert v1.shape == v2.shape == (4, 3, 96, 96)
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()


def test_batched_views_reject_bad_input():
    views = BatchedViews(AugmentConfig(image_size=32))
    with pytest.raises(ValueError, match="shape"):
        views(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        views(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        views(torch.zeros(2, 3, 32, 32, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_generator_reproduces_views(device):
    x = structured_images(16, 32).to(device)
    views = BatchedViews(AugmentConfig(image_size=32, jitter_strength=1.0, blur=True))

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return views(x, generator=torch.Generator(device=device).manual_seed(seed))

    a1, a2 = run(0)
    b1, b2 = run(0)
    c1, _ = run(1)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)
    assert not torch.equal(a1, a2)
    # Every sample's two views differ, not just the batch as a whole.
    assert ((a1 - a2).flatten(1).abs().amax(dim=1) > 1e-3).all()


@pytest.mark.parametrize("size, blur", [(32, False), (48, True)])
def test_chunking_does_not_change_views(size, blur):
    # Chunks (the CPU default) regroup samples by jitter order: same views, up to
    # float rounding (an unjittered sample may get a hue rotation by zero).
    cfg = AugmentConfig(image_size=size, blur=blur, jitter_strength=1.0)
    x = structured_images(50, 40, seed=2)
    p = BatchedViews(cfg).sample_params(50, 40, 40, generator=torch.Generator().manual_seed(0))
    whole = BatchedViews(cfg, chunk_size=1000).apply(x, p)
    for chunk in (1, 7, 16):
        torch.testing.assert_close(BatchedViews(cfg, chunk_size=chunk).apply(x, p), whole, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="chunk_size"):
        BatchedViews(cfg, chunk_size=0)


def test_views_are_independent_across_samples():
    x = structured_images(1, 32).expand(32, -1, -1, -1).contiguous()
    v1, _ = BatchedViews(AugmentConfig(image_size=32))(x, torch.Generator().manual_seed(0))
    flat = v1.flatten(1)
    dist = torch.cdist(flat, flat)
    off_diagonal = dist[~torch.eye(32, dtype=torch.bool)]
    assert (off_diagonal > 1e-3).all()


def test_default_generator_is_used_when_none():
    x = structured_images(4, 32)
    views = BatchedViews(AugmentConfig(image_size=32))
    torch.manual_seed(123)
    a = views.view(x)
    torch.manual_seed(123)
    b = views.view(x)
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_cpu_generator_with_cuda_input():
    x = structured_images(4, 32).cuda()
    views = BatchedViews(AugmentConfig(image_size=32))
    a = views.view(x, torch.Generator(device="cpu").manual_seed(5))
    b = views.view(x, torch.Generator(device="cpu").manual_seed(5))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------
# Ops against torchvision's functional ops, one sample at a time


def _per_sample_reference(x: torch.Tensor, factors: torch.Tensor, fn) -> torch.Tensor:
    return torch.stack([fn(x[i], float(factors[i])) for i in range(x.shape[0])])


def test_grayscale_is_itu_601_weighted_sum():
    x = torch.rand(5, 3, 8, 9)
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(rgb_to_grayscale(x), expected.unsqueeze(1), rtol=0, atol=1e-6)


def test_brightness_matches_formula_and_torchvision():
    x = torch.rand(8, 3, 10, 12)
    f = torch.linspace(0.0, 1.8, 8)
    out = adjust_brightness(x, f)
    torch.testing.assert_close(out, (x * f.view(-1, 1, 1, 1)).clamp(0, 1), rtol=0, atol=1e-7)
    ref = _per_sample_reference(x, f, TF.adjust_brightness)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_contrast_matches_torchvision():
    x = torch.rand(8, 3, 10, 12)
    f = torch.linspace(0.0, 1.8, 8)
    ref = _per_sample_reference(x, f, TF.adjust_contrast)
    # torchvision weighs red 0.2989 (we use 0.299): differences of order 1e-4.
    torch.testing.assert_close(adjust_contrast(x, f), ref, rtol=0, atol=2e-4)


def test_saturation_matches_torchvision():
    x = torch.rand(8, 3, 10, 12)
    f = torch.linspace(0.0, 1.8, 8)
    ref = _per_sample_reference(x, f, TF.adjust_saturation)
    torch.testing.assert_close(adjust_saturation(x, f), ref, rtol=0, atol=2e-4)


def test_hue_matches_torchvision():
    x = torch.rand(9, 3, 16, 16)
    x[0] = x[0, :1]  # a gray image has no hue to shift
    x[1, :, :4] = 0.5  # and a gray band
    shift = torch.linspace(-0.5, 0.5, 9)
    ref = _per_sample_reference(x, shift, TF.adjust_hue)
    torch.testing.assert_close(adjust_hue(x, shift), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(adjust_hue(x, 0.0), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(adjust_hue(x[2:3], 0.25), TF.adjust_hue(x[2:3], 0.25), rtol=0, atol=1e-5)


def test_hue_is_exact_on_primary_colours():
    # Pure red shifted by a third of a turn is pure green, by two thirds pure blue.
    red = torch.zeros(3, 3, 2, 2)
    red[:, 0] = 1.0
    out = adjust_hue(red, torch.tensor([0.0, 1 / 3, -1 / 3]))
    torch.testing.assert_close(out[0], red[0])
    torch.testing.assert_close(out[1], torch.roll(red[0], 1, dims=0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2], torch.roll(red[0], 2, dims=0), atol=1e-6, rtol=0)


def test_gaussian_blur_matches_torchvision():
    x = torch.rand(6, 3, 20, 24)
    sigma = torch.linspace(0.1, 2.0, 6)
    out = gaussian_blur(x, sigma, 7)
    ref = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2) for i in range(6)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_color_jitter_follows_each_samples_own_order():
    x = torch.rand(48, 3, 12, 12)
    g = torch.Generator().manual_seed(0)
    factors = torch.cat([0.4 + 1.2 * torch.rand(48, 3, generator=g), 0.4 * torch.rand(48, 1, generator=g) - 0.2], 1)
    order = torch.argsort(torch.rand(48, 4, generator=g), dim=1)
    apply = torch.rand(48, generator=g) < 0.8
    before = x.clone()
    out = color_jitter(x, factors, order, apply)
    assert torch.equal(x, before)  # the input is left alone
    ops = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation, 3: TF.adjust_hue}
    for i in range(48):
        ref = x[i]
        for op in order[i].tolist() if apply[i] else []:
            ref = ops[op](ref, float(factors[i, op]))
        torch.testing.assert_close(out[i], ref, rtol=0, atol=5e-4)


def test_gray_input_gives_the_views_of_its_rgb_copy():
    x = structured_images(6, 32)[:, :1]
    views = BatchedViews(AugmentConfig(image_size=32))
    a = views(x, torch.Generator().manual_seed(3))
    b = views(x.expand(-1, 3, -1, -1).contiguous(), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("source, size", [((32, 32), 32), ((48, 40), 32), ((100, 37), 24), ((20, 60), 32)])
def test_crop_resize_matches_torchvision_resized_crop(source, size):
    h, w = source
    x = torch.rand(48, 3, h, w)
    p = BatchedViews(AugmentConfig(image_size=size)).sample_params(48, h, w, generator=torch.Generator().manual_seed(0))
    out = crop_resize(x, p.top, p.left, p.height, p.width, size, p.flip)
    ref = []
    for i in range(48):
        box = [int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i])]
        r = TF.resized_crop(x[i], *box, [size, size], antialias=True)  # antialiased when shrinking
        ref.append(TF.horizontal_flip(r) if p.flip[i] else r)
    torch.testing.assert_close(out, torch.stack(ref), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------
# Parameter distributions


@pytest.mark.parametrize("source, scale", [((32, 32), (0.08, 1.0)), ((20, 60), (0.08, 1.0)), ((32, 32), (0.5, 0.9))])
def test_crop_boxes_match_torchvision_distribution(source, scale):
    h, w = source
    n = 10000
    u = torch.rand(n, 2 * CROP_TRIES + 2, generator=torch.Generator().manual_seed(0))
    top, left, ch, cw = sample_crop_boxes(u, h, w, scale)
    assert ((top >= 0) & (left >= 0) & (top + ch <= h) & (left + cw <= w) & (ch >= 1) & (cw >= 1)).all()

    torch.manual_seed(1)
    img = torch.zeros(1, h, w)
    ref = torch.tensor([RandomResizedCrop.get_params(img, list(scale), list(CROP_RATIO)) for _ in range(n)])
    ours = torch.stack([top, left, ch, cw], dim=1)

    def stats(boxes: torch.Tensor) -> torch.Tensor:
        b = boxes.double()
        area = b[:, 2] * b[:, 3] / (h * w)
        centre_y = (b[:, 0] + b[:, 2] / 2) / h
        centre_x = (b[:, 1] + b[:, 3] / 2) / w
        return torch.stack([area, torch.log(b[:, 3] / b[:, 2]), centre_y, centre_x], dim=1)

    a, b = stats(ours), stats(ref)
    se = torch.sqrt(a.var(0) / n + b.var(0) / n)
    assert ((a.mean(0) - b.mean(0)).abs() < 5 * se + 1e-3).all(), (a.mean(0), b.mean(0), se)
    assert ((a.std(0) - b.std(0)).abs() < 0.05 * b.std(0) + 1e-3).all(), (a.std(0), b.std(0))


def test_jitter_orders_are_uniform_permutations():
    views = BatchedViews(AugmentConfig(image_size=32))
    p = views.sample_params(24000, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(24000, 4))
    _, counts = torch.unique(p.order, dim=0, return_counts=True)
    assert len(counts) == 24
    assert (counts - 1000).abs().max() < 5 * math.sqrt(1000)
    hue_first = (p.order[:, 0] == HUE).double().mean()
    assert abs(hue_first - 0.25) < 0.015


def test_flip_gray_blur_probabilities():
    n = 20000
    views = BatchedViews(AugmentConfig(image_size=96))
    p = views.sample_params(n, 96, 96, generator=torch.Generator().manual_seed(0))
    for mask, prob in ((p.flip, FLIP_P), (p.gray, GRAY_P), (p.blur, BLUR_P), (p.jitter, 0.8)):
        tol = 5 * math.sqrt(prob * (1 - prob) / n)
        assert abs(mask.double().mean().item() - prob) < tol
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    b, c, s, h = p.factors.unbind(1)
    assert b.min() >= 0.6 and b.max() <= 1.4 and h.abs().max() <= 0.1


# --------------------------------------------------------------------------------------
# Whole views


def _transcribe(x: torch.Tensor, p, cfg: AugmentConfig) -> torch.Tensor:
    """One sample at a time with torchvision functional ops and the same parameters."""
    ops = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation, 3: TF.adjust_hue}
    k = cfg.blur_kernel_size
    out = []
    for i in range(x.shape[0]):
        box = [int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i])]
        img = TF.resized_crop(x[i], *box, [cfg.image_size] * 2, antialias=True)
        if p.flip[i]:
            img = TF.horizontal_flip(img)
        if p.jitter[i]:
            for op in p.order[i].tolist():
                img = ops[op](img, float(p.factors[i, op]))
        if p.gray[i]:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if p.blur[i]:
            img = TF.gaussian_blur(img, [k, k], [float(p.sigma[i])] * 2)
        out.append(normalize_ref(img, cfg))
    return torch.stack(out)


@pytest.mark.parametrize("size, blur, strength", [(32, False, 0.5), (48, True, 1.0)])
def test_batched_view_equals_per_sample_transcription(size, blur, strength):
    cfg = AugmentConfig(image_size=size, blur=blur, jitter_strength=strength)
    views = BatchedViews(cfg)
    x = structured_images(96, 40, seed=3).float() / 255
    p = views.sample_params(96, 40, 40, generator=torch.Generator().manual_seed(0))
    ours = views.apply(x, p)
    ref = _transcribe(x, p, cfg)
    # Differences come from torchvision's 0.2989 red weight in gray/contrast/saturation.
    err = (ours - ref).abs().flatten(1).amax(1)
    assert err.max() < 3e-3, err.max()
    assert len({tuple(o) for o in p.order[p.jitter].tolist()}) >= 20  # many orders covered


def test_identity_view_when_augmentations_are_off():
    cfg = AugmentConfig(image_size=32, jitter_strength=0.0, crop_scale=(1.0, 1.0))
    views = BatchedViews(cfg)
    x = structured_images(64, 32)
    p = views.sample_params(64, 32, 32, generator=torch.Generator().manual_seed(0))
    p.gray[:] = False
    out = views.apply(x, p)
    assert (p.height == 32).all() and (p.width == 32).all()
    plain = normalize_ref(x.float() / 255, cfg)
    expected = torch.where(p.flip.view(-1, 1, 1, 1), plain.flip(-1), plain)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_gray_and_flip_fractions_of_outputs():
    # No jitter, full crops, no normalisation: a gray output has R == G == B exactly,
    # and a flipped one is the mirror of the (colourful, asymmetric) source.
    n = 4000
    cfg = AugmentConfig(image_size=32, jitter_strength=0.0, crop_scale=(1.0, 1.0), mean=None, std=None)
    x = structured_images(1, 32, seed=7)
    x[..., :8] = torch.tensor([200, 30, 60], dtype=torch.uint8).view(1, 3, 1, 1)  # red left edge
    out = BatchedViews(cfg).view(x.expand(n, -1, -1, -1), torch.Generator().manual_seed(0))
    gray = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).flatten(1).all(1)
    source = x.float() / 255
    flipped = (out - rgb_to_grayscale(source.flip(-1))).abs().flatten(1).amax(1).lt(1e-5) | (
        out - source.flip(-1)
    ).abs().flatten(1).amax(1).lt(1e-5)
    for frac, prob in ((gray.double().mean(), GRAY_P), (flipped.double().mean(), FLIP_P)):
        assert abs(frac.item() - prob) < 4 * math.sqrt(prob * (1 - prob) / n), (frac, prob)


def _view_stats(views: torch.Tensor) -> torch.Tensor:
    """Per-view statistics: channel means and stds, mean |horizontal gradient|.

    Returns:
        Shape: (N, 7).
    """
    mean = views.mean(dim=(2, 3))
    std = views.std(dim=(2, 3))
    grad = (views[..., 1:] - views[..., :-1]).abs().mean(dim=(1, 2, 3))
    return torch.cat([mean, std, grad[:, None]], dim=1)


def _assert_same_distribution(ours: torch.Tensor, ref: torch.Tensor, slack: float) -> None:
    """Each statistic's average agrees within 5 standard errors plus ``slack``."""
    a, b = _view_stats(ours).double(), _view_stats(ref).double()
    se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    diff = (a.mean(0) - b.mean(0)).abs()
    assert (diff < 5 * se + slack).all(), f"diff {diff}, 5 se {5 * se}"
    # And the spread of every statistic across views.
    assert ((a.std(0) - b.std(0)).abs() < 0.08 * b.std(0) + slack).all(), (a.std(0), b.std(0))


def _per_image_reference(images: torch.Tensor, cfg: AugmentConfig, pairs: int) -> torch.Tensor:
    torch.manual_seed(0)
    fn = per_image_views(cfg)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    out = []
    for i in range(pairs):
        out.extend(fn(pil[i % len(pil)]))
    return torch.stack(out)


@pytest.mark.parametrize("normalise", [True, False])
def test_batched_and_per_image_views_have_the_same_distribution(normalise):
    # 3072 views each of 64 structured 32x32 images; the slack (0.01 in normalised
    # units, 0.003 in [0, 1]) covers Pillow's uint8 rounding between steps.
    extra = {} if normalise else dict(mean=None, std=None)
    cfg = AugmentConfig(image_size=32, **extra)
    images = structured_images(64, 32)
    ours = torch.cat(BatchedViews(cfg)(images.repeat(24, 1, 1, 1), torch.Generator().manual_seed(0)))
    ref = _per_image_reference(images, cfg, pairs=1536)
    _assert_same_distribution(ours, ref, slack=0.01 if normalise else 0.003)


def test_blurred_views_have_the_same_distribution_at_96px():
    cfg = AugmentConfig(image_size=96, jitter_strength=1.0)
    assert cfg.use_blur
    images = structured_images(8, 96, seed=1)
    ours = torch.cat(BatchedViews(cfg)(images.repeat(40, 1, 1, 1), torch.Generator().manual_seed(0)))
    ref = _per_image_reference(images, cfg, pairs=320)
    _assert_same_distribution(ours, ref, slack=0.01)
    # The check itself can tell: the same views without blur fail it.
    no_blur = BatchedViews(AugmentConfig(image_size=96, jitter_strength=1.0, blur=False))
    sharp = torch.cat(no_blur(images.repeat(40, 1, 1, 1), torch.Generator().manual_seed(0)))
    # The check has the power to see a missing blur: sharpness moves by many standard errors.
    a, b = _view_stats(sharp)[:, 6].double(), _view_stats(ref)[:, 6].double()
    assert (a.mean() - b.mean()) / torch.sqrt(a.var() / len(a) + b.var() / len(b)) > 3


# --------------------------------------------------------------------------------------
# Per-image and evaluation pipelines


def test_per_image_views_pickle_and_shapes():
    cfg = AugmentConfig(image_size=32)
    fn = pickle.loads(pickle.dumps(per_image_views(cfg)))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8))
    a, b = fn(img)
    assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.float32
    gray_img = img.convert("L")
    a, _ = fn(gray_img)
    assert a.shape == (3, 32, 32)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    a, _ = fn(t)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32


def test_eval_transform_is_plain_normalisation_at_size():
    cfg = AugmentConfig(image_size=32)
    x = structured_images(1, 32)[0]
    fn = pickle.loads(pickle.dumps(eval_transform(cfg)))
    expected = normalize_ref(x.float() / 255, cfg)
    torch.testing.assert_close(fn(Image.fromarray(x.permute(1, 2, 0).numpy())), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(fn(x), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(normalize_batch(x[None], cfg)[0], expected, rtol=0, atol=1e-6)


def test_normalize_batch_matches_eval_transform_when_resizing():
    cfg = AugmentConfig(image_size=32)
    x = structured_images(4, 64)[:, :, :, 4:60].contiguous()  # 64 x 56: the width is shorter
    ours = normalize_batch(x, cfg)
    assert ours.shape == (4, 3, 32, 32)
    fn = eval_transform(cfg)
    # On float input torchvision resizes in float: the same numbers.
    ref = torch.stack([fn(img.float() / 255) for img in x])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # On uint8 input it resizes in uint8 and rounds: at most one level apart.
    ref_uint8 = torch.stack([fn(img) for img in x])
    torch.testing.assert_close(ours, ref_uint8, rtol=0, atol=1.01 / 255 / min(CIFAR10_STD))


def test_normalize_batch_without_normalisation_and_gray_input():
    cfg = AugmentConfig(image_size=16, mean=None, std=None)
    x = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    out = normalize_batch(x, cfg)
    assert out.shape == (3, 3, 16, 16)
    torch.testing.assert_close(out, (x.float() / 255).expand(-1, 3, -1, -1))
    out.add_(1)  # the result is its own tensor
    assert x.max() <= 255
