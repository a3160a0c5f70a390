"""RandAugment, TrivialAugmentWide and AugMix on uint8 batches (B, 3, H, W), drawn per image.

    policy = parse_auto_augment("rand-m9-mstd0.5")   # or "trivial", "augmix-m3-w3"
    images = auto_augment(images, policy)

Each image draws its own ops and magnitudes from torch's global RNG (seeded by the Trainer, per worker
by the DataLoader). A layer then runs op by op over the batch: all geometric ops of the layer in one
affine resampling, all point ops in one lookup-table gather, each enhance op on its images at once.
The ops themselves are Pillow's (`image_ops`), so each matches the PIL call timm / torchvision make.

Definitions followed:
- RandAugment: timm `timm/data/auto_augment.py`, `rand_augment_transform` (policy string),
  `RandAugment` (n ops per image, drawn uniformly with replacement from `_RAND_TRANSFORMS`, or
  `_RAND_INCREASING_TRANSFORMS` with `inc1`), `AugmentOp` (each applied with probability p; magnitude
  m plus Gaussian noise of std mstd, uniform in [0, m] when mstd > 100, clipped to [0, mmax]) and
  `LEVEL_TO_ARG` (magnitude -> op argument, random sign for rotate / shear / translate).
  Geometric ops resample bilinearly (timm's `interpolation="bilinear"`; by default timm picks bilinear
  or bicubic at random) and fill with (128, 128, 128), timm's `_FILL`, which is also the `img_mean`
  timm passes for checkpoints normalised with mean 0.5. Translations are relative (`translate_pct` 0.45).
- TrivialAugmentWide: torchvision `torchvision/transforms/autoaugment.py`, `TrivialAugmentWide`
  (`_augmentation_space`, 31 bins, `_apply_op`): one of 14 ops, a uniform magnitude bin, the sign
  flipped with probability 1/2; nearest resampling and fill 0, torchvision's defaults.
- AugMix: timm `augment_and_mix_transform` / `AugMixAugment._apply_basic` (`_AUGMIX_TRANSFORMS`
  applied with probability 1, magnitude uniform in [0, m]): `width` chains of `depth` ops (1-3 at
  random for -1), mixed with Dirichlet(alpha) weights in float32, truncated to uint8, then blended
  with the original by a Beta(alpha, alpha) factor.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import image_ops

TIMM_FILL = (128, 128, 128)
LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitude m is on a 0..10 scale

GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
POINT_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd")
ENHANCE_OPS = ("Brightness", "Color", "Contrast", "Sharpness")  # ImageEnhance's, blends with image_ops.DEGENERATE


# ---- running drawn ops over a batch --------------------------------------------------------


def apply_ops(images: torch.Tensor, ops: tuple[str, ...], choice: torch.Tensor, args: torch.Tensor,
              interpolation: str = "bilinear", fill: image_ops.Fill = TIMM_FILL) -> torch.Tensor:
    """Apply to image i the op `ops[choice[i]]` with argument `args[i]` (choice -1: leave it unchanged).

    images uint8 (B, 3, H, W); ops are Pillow-level op names (GEOMETRIC_OPS, POINT_OPS, ENHANCE_OPS,
    "Identity"); args float64 (B,) in the op's own unit (degrees, shear factor, pixels of the AFFINE
    data, bits, threshold, enhance factor). All geometric ops run as one resampling, all point ops
    as one table lookup, all enhance ops as one blend.
    """
    groups = _group_by_op(choice, len(ops))
    geometric = functools.partial(_run_geometric, interpolation=interpolation, fill=fill)
    rows, results = [], []
    for kind, run in ((GEOMETRIC_OPS, geometric), (POINT_OPS, _run_point), (ENHANCE_OPS, _run_enhance)):
        chosen = [(ops[k], members) for k, members in groups.items() if ops[k] in kind]
        if chosen:
            rows.append(torch.cat([r for _, r in chosen]))
            results.append(run(images, chosen, args))
    if not rows:
        return images
    return images.index_copy(0, torch.cat(rows), torch.cat(results))


Chosen = list[tuple[str, torch.Tensor]]  # (op, indices of the images that chose it)


def _run_geometric(images: torch.Tensor, chosen: Chosen, args: torch.Tensor, interpolation: str,
                   fill: image_ops.Fill) -> torch.Tensor:
    height, width = images.shape[-2:]
    matrix = torch.cat([_affine_data(op, args[rows], height, width) for op, rows in chosen])  # (n, 2, 3)
    return image_ops.affine(images[torch.cat([rows for _, rows in chosen])], matrix, interpolation, fill)


def _run_point(images: torch.Tensor, chosen: Chosen, args: torch.Tensor) -> torch.Tensor:
    lut = torch.cat([_point_lut(op, images[rows], args[rows]) for op, rows in chosen])  # (n, 3, 256)
    return image_ops.apply_lut(images[torch.cat([rows for _, rows in chosen])], lut)


def _run_enhance(images: torch.Tensor, chosen: Chosen, args: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    degenerate = torch.cat([image_ops.DEGENERATE[op](images[rows]).to(torch.float32).expand(len(rows), 3, height, width)
                            for op, rows in chosen])  # (n, 3, H, W)
    rows = torch.cat([rows for _, rows in chosen])
    return image_ops.blend(degenerate, images[rows], args[rows])


def _group_by_op(choice: torch.Tensor, num_ops: int) -> dict[int, torch.Tensor]:
    """op index -> the indices of the images that chose it (ops nobody chose and -1 left out)."""
    chosen = np.asarray(choice)
    order = torch.from_numpy(np.argsort(chosen, kind="stable"))
    sizes = np.bincount(chosen + 1, minlength=num_ops + 1).tolist()  # sizes[0]: images left unchanged
    groups, start = {}, sizes[0]
    for k, size in enumerate(sizes[1:]):
        if size:
            groups[k] = order[start : start + size]
        start += size
    return groups


def _affine_data(op: str, arg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if op == "Rotate":
        return image_ops.rotate_matrix(arg, height, width)
    if op.startswith("Shear"):
        return image_ops.shear_matrix(arg, op[-1].lower())
    return image_ops.translate_matrix(arg, op[-1].lower())


def _point_lut(op: str, images: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    if op == "AutoContrast":
        return image_ops.autocontrast_lut(images)
    if op == "Equalize":
        return image_ops.equalize_lut(images)
    if op == "Invert":
        return image_ops.invert_lut(len(images))
    if op == "Posterize":
        return image_ops.posterize_lut(arg.clamp(0, 8))  # timm: 8 bits and more leave the image as is
    if op == "Solarize":
        return image_ops.solarize_lut(arg)
    return image_ops.solarize_add_lut(arg)


# ---- timm's ops: magnitude level -> argument ------------------------------------------------

LevelToArg = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]  # (level, sign, height, width) -> arg


def _fraction(level: np.ndarray) -> np.ndarray:
    return level / LEVEL_DENOM


def _enhance(level, sign, height, width):  # timm's _enhance_level_to_arg: [0.1, 1.9]
    return _fraction(level) * 1.8 + 0.1


def _enhance_increasing(level, sign, height, width):  # timm's _enhance_increasing_level_to_arg: 1 -/+ 0.9, >= 0.1
    return np.maximum(1.0 + _fraction(level) * 0.9 * sign, 0.1)


def _solarize(level, sign, height, width):  # timm's _solarize_level_to_arg: threshold [0, 256]
    return np.minimum(np.trunc(_fraction(level) * 256), 256)


def _posterize(level, sign, height, width):  # timm's _posterize_level_to_arg: bits [0, 4]
    return np.trunc(_fraction(level) * 4)


TIMM_OPS: dict[str, tuple[str, LevelToArg | None]] = {
    # timm name: (Pillow-level op, timm's level -> argument function from its `LEVEL_TO_ARG`)
    "AutoContrast": ("AutoContrast", None),
    "Equalize": ("Equalize", None),
    "Invert": ("Invert", None),
    "Rotate": ("Rotate", lambda level, sign, h, w: _fraction(level) * 30.0 * sign),
    "Posterize": ("Posterize", _posterize),
    "PosterizeIncreasing": ("Posterize", lambda level, sign, h, w: 4 - _posterize(level, sign, h, w)),
    "PosterizeOriginal": ("Posterize", lambda level, sign, h, w: _posterize(level, sign, h, w) + 4),
    "Solarize": ("Solarize", _solarize),
    "SolarizeIncreasing": ("Solarize", lambda level, sign, h, w: 256 - _solarize(level, sign, h, w)),
    "SolarizeAdd": ("SolarizeAdd", lambda level, sign, h, w: np.minimum(np.trunc(_fraction(level) * 110), 128)),
    "ShearX": ("ShearX", lambda level, sign, h, w: _fraction(level) * 0.3 * sign),
    "ShearY": ("ShearY", lambda level, sign, h, w: _fraction(level) * 0.3 * sign),
    "TranslateXRel": ("TranslateX", lambda level, sign, h, w: _fraction(level) * 0.45 * sign * w),
    "TranslateYRel": ("TranslateY", lambda level, sign, h, w: _fraction(level) * 0.45 * sign * h),
    **{name: (name, _enhance) for name in ENHANCE_OPS},
    **{name + "Increasing": (name, _enhance_increasing) for name in ENHANCE_OPS},
}

RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
AUGMIX_OPS = ("AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
              "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "ShearX", "ShearY",
              "TranslateXRel", "TranslateYRel")


@dataclass(frozen=True)
class RandAugmentPolicy:
    """timm's RandAugment: `num_layers` ops per image from `ops`, each with probability `prob`."""

    num_layers: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 0.0  # inf: uniform in [0, magnitude]
    magnitude_max: float = 10.0
    prob: float = 0.5
    ops: tuple[str, ...] = RAND_OPS
    fill: image_ops.Fill = TIMM_FILL


@dataclass(frozen=True)
class TrivialAugmentPolicy:
    """torchvision's TrivialAugmentWide (one op per image, magnitude from `num_bins` bins)."""

    num_bins: int = 31
    fill: image_ops.Fill = 0


@dataclass(frozen=True)
class AugMixPolicy:
    """timm's AugMix: `width` chains of `depth` ops (-1: 1-3 at random), magnitude uniform in [0, m]."""

    magnitude: float = 3.0
    width: int = 3
    depth: int = -1
    alpha: float = 1.0
    magnitude_std: float = math.inf
    fill: image_ops.Fill = TIMM_FILL


Policy = RandAugmentPolicy | TrivialAugmentPolicy | AugMixPolicy


def auto_augment(images: torch.Tensor, policy: Policy) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, H, W) augmented by `policy`, drawn per image."""
    if isinstance(policy, RandAugmentPolicy):
        return rand_augment(images, policy)
    if isinstance(policy, TrivialAugmentPolicy):
        return trivial_augment_wide(images, policy)
    return augmix(images, policy)


def rand_augment(images: torch.Tensor, policy: RandAugmentPolicy) -> torch.Tensor:
    """timm's `RandAugment` over a batch: each layer draws an op, whether it applies, and its magnitude."""
    for _ in range(policy.num_layers):
        choice, args = _draw_timm_ops(images, policy.ops, policy.magnitude, policy.magnitude_std, policy.magnitude_max)
        skipped = torch.rand(len(images)) >= policy.prob
        bases = tuple(TIMM_OPS[name][0] for name in policy.ops)
        images = apply_ops(images, bases, choice.masked_fill(skipped, -1), args, "bilinear", policy.fill)
    return images


def _draw_timm_ops(images: torch.Tensor, ops: tuple[str, ...], magnitude: float, magnitude_std: float,
                   magnitude_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: an op index into `ops` (B,) and its argument (B,) float64, as timm's `AugmentOp` draws them."""
    count, (height, width) = len(images), images.shape[-2:]
    choice = torch.randint(len(ops), (count,))
    uniform, normal = torch.rand(2, count, dtype=torch.float64).numpy(), torch.randn(count, dtype=torch.float64).numpy()
    if math.isinf(magnitude_std):
        level = uniform[0] * magnitude
    else:
        level = magnitude + magnitude_std * normal
    level = np.clip(level, 0.0, magnitude_max)
    sign = np.where(uniform[1] > 0.5, -1.0, 1.0)  # timm's _randomly_negate
    args = np.zeros(count)
    for k, rows in _group_by_op(choice, len(ops)).items():
        level_to_arg, rows = TIMM_OPS[ops[k]][1], rows.numpy()
        if level_to_arg is not None:
            args[rows] = level_to_arg(level[rows], sign[rows], height, width)
    return choice, torch.from_numpy(args)


TRIVIAL_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
               "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")


def trivial_magnitudes(num_bins: int = 31) -> dict[str, tuple[np.ndarray | None, bool]]:
    """torchvision's `TrivialAugmentWide._augmentation_space`: op -> (magnitude bins, signed).

    Bins are float32 values, as torchvision's `torch.linspace` makes them.
    """
    def linspace(start: float, end: float) -> np.ndarray:
        return torch.linspace(start, end, num_bins).double().numpy()

    posterize_bits = (8 - (torch.arange(num_bins) / ((num_bins - 1) / 6)).round().int()).double().numpy()
    space = {"Identity": (None, False), "ShearX": (linspace(0.0, 0.99), True), "ShearY": (linspace(0.0, 0.99), True),
             "TranslateX": (linspace(0.0, 32.0), True), "TranslateY": (linspace(0.0, 32.0), True),
             "Rotate": (linspace(0.0, 135.0), True), "Posterize": (posterize_bits, False),
             "Solarize": (linspace(255.0, 0.0), False), "AutoContrast": (None, False), "Equalize": (None, False)}
    space.update({op: (linspace(0.0, 0.99), True) for op in ENHANCE_OPS})
    return {op: space[op] for op in TRIVIAL_OPS}


def trivial_augment_wide(images: torch.Tensor, policy: TrivialAugmentPolicy = TrivialAugmentPolicy()) -> torch.Tensor:
    """torchvision's `TrivialAugmentWide` per image: uniform op, uniform magnitude bin, random sign."""
    count = len(images)
    choice = torch.randint(len(TRIVIAL_OPS), (count,))
    bins, negate = torch.randint(policy.num_bins, (count,)).numpy(), torch.randint(2, (count,)).numpy() == 1
    space = list(trivial_magnitudes(policy.num_bins).items())
    args = np.zeros(count)
    for k, rows in _group_by_op(choice, len(TRIVIAL_OPS)).items():
        (op, (magnitudes, signed)), rows = space[k], rows.numpy()
        if magnitudes is not None:
            value = magnitudes[bins[rows]]
            args[rows] = _trivial_arg(op, np.where(negate[rows], -value, value) if signed else value)
    return apply_ops(images, TRIVIAL_OPS, choice, torch.from_numpy(args), "nearest", policy.fill)


def _trivial_arg(op: str, magnitude: np.ndarray) -> np.ndarray:
    """torchvision's `_apply_op` argument in Pillow's terms."""
    if op in ENHANCE_OPS:
        return 1.0 + magnitude  # adjust_brightness(img, 1.0 + magnitude), ...
    if op.startswith("Translate"):
        return -np.trunc(magnitude)  # F.affine(translate=int(magnitude)) moves the content by +int(magnitude)
    return magnitude  # shear: tan(atan(m)) = m; rotate: degrees; posterize: bits; solarize: threshold


def augmix(images: torch.Tensor, policy: AugMixPolicy) -> torch.Tensor:
    """timm's `AugMixAugment` (basic mode) over a batch, every draw per image."""
    count = len(images)
    weights = torch.distributions.Dirichlet(torch.full((policy.width,), float(policy.alpha))).sample((count,))
    blend_factor = torch.distributions.Beta(policy.alpha, policy.alpha).sample((count,))  # (B,)
    bases = tuple(TIMM_OPS[name][0] for name in AUGMIX_OPS)
    mixed = torch.zeros(images.shape, dtype=torch.float32)
    for chain in range(policy.width):
        depth = torch.full((count,), policy.depth) if policy.depth > 0 else torch.randint(1, 4, (count,))
        augmented = images
        for step in range(int(depth.max())):
            choice, args = _draw_timm_ops(images, AUGMIX_OPS, policy.magnitude, policy.magnitude_std, LEVEL_DENOM)
            choice = choice.masked_fill(depth <= step, -1)
            augmented = apply_ops(augmented, bases, choice, args, "bilinear", policy.fill)
        mixed += weights[:, chain].view(count, 1, 1, 1) * augmented.to(torch.float32)
    mixed = mixed.clamp_(0, 255).to(torch.uint8)
    return image_ops.blend(images, mixed, blend_factor)


# ---- policy strings -------------------------------------------------------------------------

_SECTION = re.compile(r"([a-z]+)(-?\d+(?:\.\d*)?)")
_RAND_KEYS = {"m": "magnitude", "n": "num_layers", "p": "prob", "mstd": "magnitude_std", "mmax": "magnitude_max",
              "inc": "inc"}
_AUGMIX_KEYS = {"m": "magnitude", "w": "width", "d": "depth", "a": "alpha", "mstd": "magnitude_std"}
_INTEGER_KEYS = {"n", "w", "d", "inc", "mmax", "m"}


@functools.lru_cache(maxsize=32)
def parse_auto_augment(text: str) -> Policy:
    """Parse a policy string as timm writes it; ValueError names the part that is wrong.

    "trivial": TrivialAugmentWide. "rand[-section...]": RandAugment, sections in any order: m<int>
    magnitude (10), n<int> ops per image (2), p<float> probability of each op (0.5), mstd<float> std of
    the magnitude noise (0; > 100 means uniform in [0, m]), mmax<int> magnitude clip (10), inc<0|1>
    severity-increasing ops (0). "augmix[-section...]": m<int> severity (3), w<int> chains (3),
    d<int> depth (-1: 1-3 at random), a<float> alpha (1.0), mstd<float> (default: uniform).
    Example: "rand-m9-mstd0.5" (DeiT), "rand-m9-n2-mstd0.5-inc1" (timm's ViT recipes), "augmix-m3-w3-d-1".
    """
    name, _, rest = text.partition("-")
    if text == "trivial":
        return TrivialAugmentPolicy()
    if name == "rand":
        values = _parse_sections(text, rest, _RAND_KEYS)
        increasing = bool(values.pop("inc", 0))
        return _checked(text, RandAugmentPolicy(**values, ops=RAND_INCREASING_OPS if increasing else RAND_OPS))
    if name == "augmix":
        return _checked(text, AugMixPolicy(**_parse_sections(text, rest, _AUGMIX_KEYS)))
    raise ValueError(f"{text!r}: unknown policy {name!r}; expected 'rand-...' (RandAugment), 'trivial' "
                     "(TrivialAugmentWide) or 'augmix-...' (AugMix)")


def _parse_sections(text: str, rest: str, keys: dict[str, str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for section in re.split(r"-(?=[a-z])", rest) if rest else []:
        match = _SECTION.fullmatch(section)
        if not match or match.group(1) not in keys:
            raise ValueError(f"{text!r}: cannot read section {section!r}; expected one of "
                             f"{', '.join(k + '<number>' for k in keys)}")
        key, number = match.group(1), float(match.group(2))
        if key in _INTEGER_KEYS and not number.is_integer():
            raise ValueError(f"{text!r}: section {section!r} needs a whole number")
        if key == "mstd" and number > 100:
            number = math.inf  # timm: uniform magnitude sampling
        values[keys[key]] = int(number) if key in _INTEGER_KEYS else number
    return values


def _checked(text: str, policy: Policy) -> Policy:
    problems = {"magnitude": policy.magnitude < 0, "magnitude_std": policy.magnitude_std < 0}
    if isinstance(policy, RandAugmentPolicy):
        problems.update(num_layers=policy.num_layers < 0, prob=not 0 <= policy.prob <= 1,
                        magnitude_max=policy.magnitude_max <= 0)
    else:
        problems.update(width=policy.width < 1, depth=policy.depth == 0 or policy.depth < -1, alpha=policy.alpha <= 0)
    bad = [name for name, wrong in problems.items() if wrong]
    if bad:
        raise ValueError(f"{text!r}: out of range: " + ", ".join(f"{name}={getattr(policy, name)}" for name in bad))
    return policy
