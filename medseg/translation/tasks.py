"""Palette's four image-to-image tasks as on-the-fly degradations of clean images.

Saharia et al., "Palette: Image-to-Image Diffusion Models", SIGGRAPH 2022 (arXiv 2111.05826), App. B:

* **inpainting**: free-form brush masks (60 %) or 1-5 rectangles covering 10-40 % of the image (40 %);
* **uncropping**: 50 % of the image masked on one side, or on all four sides (the kept part is centred);
* **JPEG restoration**: quality factor Q in [5, 30], drawn with probability proportional to ``exp(-Q / 10)``;
* **colorization**: RGB from its luminance (ITU-R BT.601 weights).

For inpainting and uncropping the region to generate of the conditioning image x is filled with N(0, I)
noise (no mask channel is given to the network), the training loss counts only that region, and sampling
keeps the rest from the input. Clean images come in [0, 1]; the model range is [-1, 1].
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from monai.utils import StrEnum

__all__ = [
    "MaskType",
    "PaletteDegradationd",
    "PaletteTask",
    "RegionFill",
    "UncropSide",
    "biharmonic_fill",
    "box_mask",
    "free_form_mask",
    "jpeg_compress",
    "luminance",
    "sample_jpeg_quality",
    "task_spec",
    "uncrop_mask",
]

#: ITU-R BT.601 luma weights (R, G, B).
_LUMA = (0.299, 0.587, 0.114)


class PaletteTask(StrEnum):
    """The image-to-image tasks of Palette."""

    INPAINTING = "inpainting"
    UNCROPPING = "uncropping"
    JPEG = "jpeg"
    COLORIZATION = "colorization"


class RegionFill(StrEnum):
    """What fills the region to generate in the conditioning image x of inpainting and uncropping.

    ``noise``: N(0, I) (Palette: the network gets no mask channel and finds the region by its noise).
    ``biharmonic``: the biharmonic interpolation of the known pixels (:func:`biharmonic_fill`), which is also the
    trivial baseline; with a residual clean-image network (``PaletteUNet(residual=True)``) the model starts as
    that baseline and learns its correction.
    """

    NOISE = "noise"
    BIHARMONIC = "biharmonic"


def biharmonic_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` images with the region ``mask > 0.5`` (``(B, 1, H, W)``) replaced by the biharmonic
    interpolation of the rest (``skimage.restoration.inpaint_biharmonic``, per image, on the CPU)."""
    from skimage.restoration import inpaint_biharmonic

    if image.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != image.shape[0]:
        raise ValueError(
            f"need (B, C, H, W) images and (B, 1, H, W) masks, got {tuple(image.shape)}, {tuple(mask.shape)}."
        )
    out = image.detach().clone()
    region = (mask > 0.5).cpu().numpy()[:, 0]
    for i in range(image.shape[0]):
        if region[i].any() and not region[i].all():
            array = image[i].detach().cpu().permute(1, 2, 0).double().numpy()
            filled = inpaint_biharmonic(array, region[i], channel_axis=-1)
            out[i] = torch.from_numpy(filled).permute(2, 0, 1).to(out)
    return out


class MaskType(StrEnum):
    """Inpainting masks: free-form brush strokes, 1-5 boxes, or the paper's mix (60 % free-form, 40 % boxes)."""

    FREE_FORM = "free_form"
    BOX = "box"
    MIXED = "mixed"


class UncropSide(StrEnum):
    """Which side(s) uncropping masks: one fixed side, all four sides, or ``random`` (one of the five)."""

    LEFT = "left"
    RIGHT = "right"
    TOP = "top"
    BOTTOM = "bottom"
    ALL = "all"
    RANDOM = "random"


def _check(enum: type[StrEnum], value: str, name: str) -> Any:
    if value not in enum.__members__.values():
        raise ValueError(f"{name} must be one of {[m.value for m in enum]}, got {value!r}.")
    return enum(value)


def task_spec(task: str, image_channels: int = 1) -> dict[str, Any]:
    """Channels and default data of a task, for configs.

    Args:
        task: a :class:`PaletteTask` name.
        image_channels: channels of the clean images (1 for MRI, 3 for RGB); colorization always maps
            1 luminance channel to 3 RGB channels.

    Returns:
        ``{"task", "source_channels", "target_channels", "masked", "data", "output_format"}``: the
        conditioning image's channels, the generated image's channels, whether the task has a region mask,
        the default data source (``"mni"`` or ``"skimage"``) and the output format (``"nifti"`` or ``"png"``).

    Raises:
        ValueError: for an unknown task.
    """
    kind = _check(PaletteTask, task, "task")
    if kind == PaletteTask.COLORIZATION:
        return {
            "task": kind.value,
            "source_channels": 1,
            "target_channels": 3,
            "masked": False,
            "data": "skimage",
            "output_format": "png",
        }
    return {
        "task": kind.value,
        "source_channels": int(image_channels),
        "target_channels": int(image_channels),
        "masked": kind in (PaletteTask.INPAINTING, PaletteTask.UNCROPPING),
        "data": "mni",
        "output_format": "nifti",
    }


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance of every pixel (yy, xx) to the segment p0-p1 (row, col)."""
    d = p1 - p0
    length2 = float(d @ d)
    if length2 == 0:
        return np.hypot(yy - p0[0], xx - p0[1])
    s = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / length2, 0.0, 1.0)
    return np.hypot(yy - (p0[0] + s * d[0]), xx - (p0[1] + s * d[1]))


def free_form_mask(
    shape: Sequence[int],
    rng: np.random.RandomState,
    max_strokes: int = 4,
    max_vertices: int = 8,
    max_width_fraction: float = 0.12,
    coverage: tuple[float, float] = (0.1, 0.5),
) -> np.ndarray:
    """Free-form brush-stroke mask (polylines of random width), the irregular masks of DeepFill v2 / Palette.

    Strokes are added until the coverage reaches a target drawn from ``coverage`` (at most ``max_strokes``
    strokes beyond the first that reaches it).

    Args:
        shape: (H, W).
        rng: random state.
        max_strokes: strokes per mask, 1..max.
        max_vertices: vertices per stroke, 2..max.
        max_width_fraction: largest brush width as a fraction of min(H, W).
        coverage: (low, high) target fraction of masked pixels.

    Returns:
        ``(H, W)`` bool, True = region to generate.
    """
    h, w = int(shape[0]), int(shape[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = np.zeros((h, w), dtype=bool)
    target = rng.uniform(*coverage)
    size = min(h, w)
    for _ in range(int(rng.randint(1, max_strokes + 1))):
        width = rng.uniform(0.04, max_width_fraction) * size + 1.0
        point = np.array([rng.uniform(0, h), rng.uniform(0, w)])
        for _ in range(int(rng.randint(1, max_vertices))):
            angle = rng.uniform(0, 2 * np.pi)
            step = rng.uniform(0.1, 0.4) * size
            nxt = np.clip(point + step * np.array([np.sin(angle), np.cos(angle)]), [0, 0], [h - 1, w - 1])
            mask |= _segment_distance(yy, xx, point, nxt) <= width / 2
            point = nxt
        if mask.mean() >= target:
            break
    return mask


def box_mask(
    shape: Sequence[int],
    rng: np.random.RandomState,
    max_boxes: int = 5,
    coverage: tuple[float, float] = (0.1, 0.4),
) -> np.ndarray:
    """1 to ``max_boxes`` rectangles with a total area of ``coverage`` of the image (before overlaps).

    Args:
        shape: (H, W).
        rng: random state.
        max_boxes: most rectangles.
        coverage: (low, high) total area fraction (Palette: 10-40 %).

    Returns:
        ``(H, W)`` bool, True = region to generate.
    """
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    num = int(rng.randint(1, max_boxes + 1))
    area = rng.uniform(*coverage) * h * w / num
    for _ in range(num):
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        bh = int(np.clip(round(np.sqrt(area * aspect)), 1, h))
        bw = int(np.clip(round(area / max(bh, 1)), 1, w))
        top, left = int(rng.randint(0, h - bh + 1)), int(rng.randint(0, w - bw + 1))
        mask[top : top + bh, left : left + bw] = True
    return mask


def uncrop_mask(shape: Sequence[int], side: str, fraction: float = 0.5) -> np.ndarray:
    """Uncropping mask: ``fraction`` of the image to generate on one side, or around a centred kept box.

    Args:
        shape: (H, W).
        side: a :class:`UncropSide` other than ``random`` (``left``, ``right``, ``top``, ``bottom``, ``all``).
        fraction: masked area fraction in (0, 1).

    Returns:
        ``(H, W)`` bool, True = region to generate.

    Raises:
        ValueError: for an unknown side or a fraction outside (0, 1).
    """
    kind = _check(UncropSide, side, "side")
    if kind == UncropSide.RANDOM:
        raise ValueError("uncrop_mask needs a concrete side; draw one first (PaletteDegradationd does).")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    if kind == UncropSide.ALL:
        keep = np.sqrt(1 - fraction)
        kh, kw = max(1, round(h * keep)), max(1, round(w * keep))
        mask[:] = True
        top, left = (h - kh) // 2, (w - kw) // 2
        mask[top : top + kh, left : left + kw] = False
        return mask
    cut_h, cut_w = round(h * fraction), round(w * fraction)
    if kind == UncropSide.LEFT:
        mask[:, :cut_w] = True
    elif kind == UncropSide.RIGHT:
        mask[:, w - cut_w :] = True
    elif kind == UncropSide.TOP:
        mask[:cut_h] = True
    else:
        mask[h - cut_h :] = True
    return mask


def sample_jpeg_quality(rng: np.random.RandomState, low: int = 5, high: int = 30) -> int:
    """JPEG quality Q in [low, high] with probability proportional to ``exp(-Q / 10)`` (Palette App. B)."""
    if not 1 <= low <= high <= 100:
        raise ValueError(f"need 1 <= low <= high <= 100, got {low}, {high}.")
    q = np.arange(low, high + 1)
    p = np.exp(-q / 10.0)
    return int(rng.choice(q, p=p / p.sum()))


def jpeg_compress(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Compress and decompress an image with JPEG (Pillow).

    Args:
        image: ``(1 or 3, H, W)`` in [0, 1].
        quality: JPEG quality factor 1..100.

    Returns:
        ``(C, H, W)`` float32 in [0, 1], the decoded JPEG.
    """
    from PIL import Image

    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"jpeg_compress takes (1 or 3, H, W) images, got {tuple(image.shape)}.")
    array = (image.detach().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    pil = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0
    decoded = decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(decoded)).to(image.dtype)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """``(3, *sp)`` or ``(B, 3, *sp)`` RGB -> luminance with one channel (BT.601)."""
    channel_dim = rgb.ndim - 3 if rgb.ndim in (3, 4) else 0
    if rgb.shape[channel_dim] != 3:
        raise ValueError(f"luminance needs 3 RGB channels, got shape {tuple(rgb.shape)}.")
    weights = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).reshape(3, 1, 1)
    return (rgb * weights).sum(dim=channel_dim, keepdim=True)


class PaletteDegradationd(Randomizable, MapTransform):
    """Make a Palette training pair from a clean image, drawing a fresh degradation on every call.

    Input ``{image_key: (C, H, W) in [0, 1]}``; output adds (model range [-1, 1]):

    * ``label_key``: the clean target y = ``2 image - 1`` (RGB for colorization);
    * ``image_key``: the conditioning image x (masked region filled as ``region_fill`` says for inpainting/uncropping,
      the decoded JPEG, or the luminance);
    * ``mask_key``: ``(1, H, W)`` float, 1 on the pixels to generate (all ones for JPEG and colorization).

    Args:
        task: a :class:`PaletteTask` name.
        image_key: key of the clean image on input, of x on output.
        label_key: key of y on output.
        mask_key: key of the mask on output.
        mask_type: inpainting masks, a :class:`MaskType` name.
        uncrop_side: uncropping side, a :class:`UncropSide` name.
        uncrop_fraction: uncropped area fraction (Palette: 0.5).
        jpeg_quality: (low, high) JPEG quality range (Palette: 5-30).
        region_fill: what fills the region to generate in x, a :class:`RegionFill` name.
        seed: seed of this transform's random state (``set_random_state``); None leaves MONAI's default.

    Raises:
        ValueError: for unknown option names, or (at call time) a colorization input without 3 channels.
    """

    def __init__(
        self,
        task: str,
        image_key: str = "image",
        label_key: str = "label",
        mask_key: str = "mask",
        mask_type: str = MaskType.MIXED,
        uncrop_side: str = UncropSide.RANDOM,
        uncrop_fraction: float = 0.5,
        jpeg_quality: Sequence[int] = (5, 30),
        region_fill: str = RegionFill.NOISE,
        seed: int | None = None,
    ) -> None:
        MapTransform.__init__(self, [image_key])
        self.task = _check(PaletteTask, task, "task")
        self.mask_type = _check(MaskType, mask_type, "mask_type")
        self.uncrop_side = _check(UncropSide, uncrop_side, "uncrop_side")
        if not 0 < uncrop_fraction < 1:
            raise ValueError(f"uncrop_fraction must be in (0, 1), got {uncrop_fraction}.")
        if len(jpeg_quality) != 2 or not 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must be (low, high) within 1..100, got {jpeg_quality}.")
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key
        self.uncrop_fraction = float(uncrop_fraction)
        self.jpeg_quality = (int(jpeg_quality[0]), int(jpeg_quality[1]))
        self.region_fill = _check(RegionFill, region_fill, "region_fill")
        if seed is not None:
            self.set_random_state(seed=seed)

    def randomize(self, data: Any = None) -> None:
        """Nothing to pre-draw: every draw happens in :meth:`__call__` from ``self.R``."""

    def _mask(self, shape: Sequence[int]) -> np.ndarray:
        if self.task == PaletteTask.INPAINTING:
            use_free = self.mask_type == MaskType.FREE_FORM or (
                self.mask_type == MaskType.MIXED and self.R.uniform() < 0.6
            )
            return free_form_mask(shape, self.R) if use_free else box_mask(shape, self.R)
        side = self.uncrop_side
        if side == UncropSide.RANDOM:
            options = [s for s in UncropSide if s != UncropSide.RANDOM]
            side = options[int(self.R.randint(len(options)))]
        return uncrop_mask(shape, side, self.uncrop_fraction)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Degrade ``data[image_key]`` ``(C, H, W)`` in [0, 1]; see the class docstring for the outputs."""
        d = dict(data)
        clean = torch.as_tensor(d[self.image_key]).float()
        if clean.ndim != 3:
            raise ValueError(f"PaletteDegradationd takes (C, H, W) images, got {tuple(clean.shape)}.")
        if isinstance(clean, torch.Tensor) and hasattr(clean, "as_tensor"):
            clean = clean.as_tensor()
        clean = clean.clamp(0, 1)
        spatial = tuple(clean.shape[1:])
        mask = torch.ones((1, *spatial), dtype=torch.float32)
        if self.task in (PaletteTask.INPAINTING, PaletteTask.UNCROPPING):
            mask = torch.from_numpy(self._mask(spatial)).float()[None]
            target = clean * 2 - 1
            if self.region_fill == RegionFill.NOISE:
                noise = torch.from_numpy(self.R.standard_normal(clean.shape).astype(np.float32))
                source = torch.where(mask > 0.5, noise, target)
            else:
                source = biharmonic_fill(target[None], mask[None])[0]
        elif self.task == PaletteTask.JPEG:
            quality = sample_jpeg_quality(self.R, *self.jpeg_quality)
            source = jpeg_compress(clean, quality) * 2 - 1
            target = clean * 2 - 1
            d["jpeg_quality"] = quality
        else:
            if clean.shape[0] != 3:
                raise ValueError(f"colorization needs RGB (3, H, W) images, got {tuple(clean.shape)}.")
            source = luminance(clean) * 2 - 1
            target = clean * 2 - 1
        d[self.image_key] = source
        d[self.label_key] = target
        d[self.mask_key] = mask
        return d
