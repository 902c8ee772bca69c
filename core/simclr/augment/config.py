"""What a SimCLR view looks like: the distribution's constants and :class:`AugmentConfig`.

Both pipelines (the batched one in ``views`` and the per-image reference in
``reference``) read their probabilities and ranges from here, so they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10  # as torchvision's RandomResizedCrop
FLIP_P = 0.5
JITTER_P = 0.8
GRAY_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA: tuple[float, float] = (0.1, 2.0)
BLUR_AUTO_MIN_SIZE = 96  # blur is on by default from this image size up
MIN_IMAGE_SIZE = 8
# The hue shift 0.2*s must stay inside [-0.5, 0.5], torchvision's limit.
MAX_JITTER_STRENGTH = 2.5
# ITU-R 601 luma, as Pillow's "L" conversion (torchvision uses 0.2989 for the red one).
GRAY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

# Jitter op ids, in torchvision ColorJitter's order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class AugmentConfig:
    """What a SimCLR view looks like; shared by the batched and per-image pipelines.

    Attributes:
        image_size: Side S of the square output views, in pixels.
        jitter_strength: Colour jitter strength s: brightness, contrast and saturation
            factors are drawn from [1 - 0.8s, 1 + 0.8s] (floored at 0), the hue shift
            from [-0.2s, 0.2s]. 0.5 is the paper's CIFAR value, 1.0 its ImageNet one.
        blur: Gaussian blur on or off; None means on iff ``image_size >= 96``.
        crop_scale: Range of the crop's area as a fraction of the source image.
        mean: Per-channel mean subtracted after scaling to [0, 1], or None together
            with ``std`` for no normalisation.
        std: Per-channel standard deviation divided by, or None.
    """

    image_size: int
    jitter_strength: float = 0.5
    blur: bool | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    mean: tuple[float, float, float] | None = CIFAR10_MEAN
    std: tuple[float, float, float] | None = CIFAR10_STD

    def __post_init__(self) -> None:
        # Configs come back from YAML/JSON with lists; store tuples so the config
        # stays hashable and compares equal to the one that was saved.
        for name in ("crop_scale", "mean", "std"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                try:
                    object.__setattr__(self, name, tuple(value))
                except TypeError:
                    raise ValueError(f"{name} must be a sequence of numbers, got {value!r}") from None
        self._validate()

    def _validate(self) -> None:
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"image_size must be an int number of pixels, got {size!r}")
        if size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {size}")
        s = self.jitter_strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ValueError(f"jitter_strength must be a number, got {s!r}")
        if not 0.0 <= s <= MAX_JITTER_STRENGTH:
            raise ValueError(
                f"jitter_strength must be in [0, {MAX_JITTER_STRENGTH}] (0.5 for CIFAR, 1.0 for "
                f"ImageNet; above {MAX_JITTER_STRENGTH} the hue shift 0.2*s passes half a turn), got {s}"
            )
        if self.blur not in (True, False, None):
            raise ValueError(f"blur must be true, false or null (automatic), got {self.blur!r}")
        scale = self.crop_scale
        if len(scale) != 2 or not all(isinstance(v, (int, float)) for v in scale):
            raise ValueError(f"crop_scale must be two numbers (min, max), got {scale!r}")
        lo, hi = scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"crop_scale must satisfy 0 < min <= max <= 1 (fractions of the image area, "
                f"the paper uses (0.08, 1.0)), got {scale!r}"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must both be given or both be None (no normalisation)")
        if self.mean is not None and self.std is not None:
            for name, values in (("mean", self.mean), ("std", self.std)):
                if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
                    raise ValueError(f"{name} must be three numbers, one per RGB channel, got {values!r}")
            if not all(v > 0 for v in self.std):
                raise ValueError(f"std must be positive in every channel, got {self.std!r}")

    @property
    def use_blur(self) -> bool:
        """Whether views get the Gaussian blur (``blur``, or automatic by size)."""
        if self.blur is None:
            return self.image_size >= BLUR_AUTO_MIN_SIZE
        return self.blur

    @property
    def blur_kernel_size(self) -> int:
        """Blur kernel side: 10% of ``image_size``, made odd (9 at 96 px, 23 at 224 px)."""
        k = int(0.1 * self.image_size)
        return k if k % 2 == 1 else k + 1

    @property
    def jitter_ranges(self) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation, hue) arguments of torchvision's ColorJitter."""
        s = float(self.jitter_strength)
        return 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s
