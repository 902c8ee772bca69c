"""SimCLR views: a batched, device-side pipeline and the per-image torchvision reference.

A SimCLR view is, in this order: random resized crop (scale ``crop_scale``, aspect
ratio 3/4..4/3, bilinear with antialiasing), horizontal flip (p=0.5), colour jitter
(brightness, contrast and saturation ``0.8*s``, hue ``0.2*s``, in a random order,
applied with p=0.8), grayscale (p=0.2), Gaussian blur (p=0.5, sigma ~ U(0.1, 2),
kernel about 10% of the image, only when enabled), then float in [0, 1] and per-channel
normalisation.

Two implementations of the same distribution live here:

* :class:`BatchedViews` (``views``) augments a whole uint8 batch ``(B, C, H, W)`` on
  whatever device it is on, with independent random parameters per sample and no
  Python loop over samples;
* :func:`per_image_views` (``reference``) is the plain torchvision ``transforms.v2``
  pipeline for one PIL image at a time, for DataLoader workers. It is the reference
  the tests compare the batched path with.

The modules, lowest first:

* ``config``: the distribution's constants and :class:`AugmentConfig`;
* ``batch``: checking a uint8 batch, scaling it to [0, 1], normalising it
  (:func:`normalize_batch`, the batched evaluation transform);
* ``color``, ``blur``, ``resample``: per-sample kernels (colour jitter and grayscale,
  Gaussian blur, crop + resize + flip);
* ``crop``: crop-box and flip sampling, shared by the SimCLR views and the crop+flip-only
  augmentation of fine-tuning (:func:`crop_flip_batch`);
* ``views``: the planner, :class:`BatchedViews`;
* ``reference``: the per-image torchvision transforms.
"""

from core.simclr.augment.batch import normalize_batch
from core.simclr.augment.blur import blur_with_kernels, gaussian_blur, gaussian_kernels
from core.simclr.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    jitter_coefficients,
    rgb_to_grayscale,
)
from core.simclr.augment.config import (
    BLUR_AUTO_MIN_SIZE,
    BLUR_P,
    BLUR_SIGMA,
    BRIGHTNESS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CONTRAST,
    CROP_RATIO,
    CROP_TRIES,
    FLIP_P,
    GRAY_P,
    GRAY_WEIGHTS,
    HUE,
    JITTER_P,
    MAX_JITTER_STRENGTH,
    MIN_IMAGE_SIZE,
    SATURATION,
    AugmentConfig,
)
from core.simclr.augment.crop import CROP_FLIP_COLUMNS, crop_flip_batch, sample_crop_boxes, sample_crop_flip
from core.simclr.augment.reference import PerImageViews, crop_flip_transform, eval_transform, per_image_views
from core.simclr.augment.resample import crop_resize, resize_taps
from core.simclr.augment.views import CPU_CHUNK_PIXELS, BatchedViews, ViewParams

__all__ = [
    "AugmentConfig",
    "BatchedViews",
    "BLUR_AUTO_MIN_SIZE",
    "BLUR_P",
    "BLUR_SIGMA",
    "BRIGHTNESS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CONTRAST",
    "CPU_CHUNK_PIXELS",
    "CROP_FLIP_COLUMNS",
    "CROP_RATIO",
    "CROP_TRIES",
    "FLIP_P",
    "GRAY_P",
    "GRAY_WEIGHTS",
    "HUE",
    "JITTER_P",
    "MAX_JITTER_STRENGTH",
    "MIN_IMAGE_SIZE",
    "PerImageViews",
    "SATURATION",
    "ViewParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_with_kernels",
    "color_jitter",
    "crop_flip_batch",
    "crop_flip_transform",
    "crop_resize",
    "eval_transform",
    "gaussian_blur",
    "gaussian_kernels",
    "jitter_coefficients",
    "normalize_batch",
    "per_image_views",
    "resize_taps",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "sample_crop_flip",
]
