"""A montage across the volume for a quick look at one segmentation: mask over the image, and its uncertainty.

The slices shown are spread over the extent of the segmented foreground (the whole volume where there is
none) and always include the slices with the most uncertainty, which is where the model is least sure and a
reader should look first. Each panel is labelled with its absolute, 0-based index in the input volume
(``slice 57 (0-119)``) and, where the image has an affine, the world coordinate of the slice centre along the
axis that slice position moves most.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from medseg.data import atomic_write

__all__ = ["montage_slices", "overlay_figure"]


def _array(volume: torch.Tensor) -> np.ndarray:
    """``(C, *spatial)`` -> the first channel as a float array."""
    return np.asarray(torch.as_tensor(volume).detach().cpu().float())[0]


def _plane(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of a 2D or 3D array, transposed so the first axis runs left-right on screen."""
    if array.ndim == 3:
        array = np.take(array, index, axis=axis)
    return array.T


def montage_slices(
    mask: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    axis: int = -1,
    count: int = 6,
    most_uncertain: int = 2,
) -> list[tuple[int, bool]]:
    """The slices of a 3D result to show: ``[(index, is_one_of_the_most_uncertain), ...]`` by index.

    ``most_uncertain`` slices with the largest summed uncertainty are always included; the others are spread
    evenly over the slices that hold foreground (over the whole volume where none does). A volume with at most
    ``count`` slices shows them all.

    Args:
        mask: ``(1, X, Y, Z)`` label map.
        uncertainty: ``(1, X, Y, Z)`` map (e.g. predictive entropy) or None.
        axis: spatial axis of the slices.
        count: slices to show at most.
        most_uncertain: how many of them are the most uncertain slices.
    """
    labels = _array(mask)
    if labels.ndim != 3:
        return [(0, False)]
    axis = axis % 3
    total = labels.shape[axis]
    others = tuple(d for d in range(3) if d != axis)
    uncertain: list[int] = []
    if uncertainty is not None and most_uncertain > 0:
        per_slice = np.nan_to_num(_array(uncertainty)).sum(axis=others)
        if per_slice.max() > 0:
            uncertain = [int(i) for i in np.argsort(-per_slice, kind="stable")[:most_uncertain]]
    if total <= count:
        return [(i, i in uncertain) for i in range(total)]
    foreground = np.flatnonzero((labels > 0).sum(axis=others))
    first, last = (int(foreground[0]), int(foreground[-1])) if foreground.size else (0, total - 1)
    chosen = set(uncertain)
    spread = count - len(chosen)
    for candidate in np.linspace(first, last, num=max(spread, 1) + 2)[1:-1] if spread > 0 else []:
        index = int(np.rint(candidate))
        while index in chosen and index < last:
            index += 1
        chosen.add(index)
    for index in range(first, last + 1):  # duplicates left fewer than count: fill in order
        if len(chosen) >= count:
            break
        chosen.add(index)
    return [(i, i in uncertain) for i in sorted(chosen)[:count]]


def _world(image: torch.Tensor, axis: int, index: int, shape: Sequence[int]) -> str:
    """``" (z = 12.5 mm)"``: the world coordinate, along the axis it varies most, of the slice centre."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return ""
    affine = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=float)
    if affine.shape != (4, 4):
        return ""
    centre = [(s - 1) / 2 for s in shape]
    centre[axis] = index
    world = affine @ np.array([*centre, 1.0])
    direction = int(np.argmax(np.abs(affine[:3, axis])))
    return f" ({'xyz'[direction]} = {world[direction]:.1f} mm)"


def overlay_figure(
    image: torch.Tensor,
    mask: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    slice_index: int | None = None,
    axis: int = -1,
    class_names: Sequence[str] = (),
    path: str | os.PathLike | None = None,
    num_slices: int = 6,
):
    """A montage of slices: the mask over the image (top row) and the uncertainty (bottom row).

    Args:
        image: ``(C_img, *spatial)`` (2D or 3D).
        mask: ``(1, *spatial)`` label map.
        uncertainty: ``(1, *spatial)`` map (e.g. predictive entropy, nats) or None.
        slice_index: show only this slice of a 3D volume; None: a montage (:func:`montage_slices`).
        axis: spatial axis of the slices (3D only).
        class_names: legend labels, one per label value.
        path: if given, the figure is also written there as PNG (atomically).
        num_slices: slices of the montage.

    Returns:
        a matplotlib ``Figure`` (Agg backend; nothing is displayed).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    labels = _array(mask)
    img = _array(image)
    unc = _array(uncertainty) if uncertainty is not None else None
    spatial = labels.ndim
    axis = axis % 3 if spatial == 3 else 0
    if spatial == 3 and slice_index is not None:
        if not -labels.shape[axis] <= slice_index < labels.shape[axis]:
            raise ValueError(
                f"slice_index {slice_index} is outside the {labels.shape[axis]} slices of axis {axis}."
            )
        slices = [(slice_index % labels.shape[axis], False)]
    elif spatial == 3:
        slices = montage_slices(mask, uncertainty, axis=axis, count=num_slices)
    else:
        slices = [(0, False)]
    rows = 2 if unc is not None else 1
    cols = len(slices)
    fig = Figure(figsize=(2.1 * cols + 1.0, 2.3 * rows + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    cmap = colormaps["tab10"]
    vmax = None
    if unc is not None:
        planes = [_plane(unc, axis, i) for i, _ in slices]
        vmax = max(float(np.nanmax(p)) for p in planes) or 1.0
    shown: set[int] = set()
    total = labels.shape[axis] if spatial == 3 else 1
    for col, (index, flagged) in enumerate(slices):
        lab = _plane(labels, axis, index).astype(int)
        shown.update(int(v) for v in np.unique(lab) if v > 0)
        top = axes[0, col]
        top.imshow(_plane(img, axis, index), cmap="gray", origin="lower")
        overlay = np.ma.masked_where(lab == 0, lab)
        top.imshow(overlay, cmap=cmap, vmin=0, vmax=9, alpha=0.5, origin="lower", interpolation="nearest")
        if spatial == 3:
            title = f"slice {index} (0-{total - 1}){_world(image, axis, index, labels.shape)}"
            if flagged:
                title += "\nmost uncertain"
            top.set_title(title, fontsize=8, color="firebrick" if flagged else "black")
        else:
            top.set_title("mask", fontsize=8)
        if unc is not None:
            heat = axes[1, col].imshow(
                _plane(unc, axis, index), cmap="magma", origin="lower", vmin=0, vmax=vmax
            )
    for ax in axes.ravel():
        ax.set_axis_off()
    if unc is not None:
        fig.colorbar(heat, ax=axes[1, :].tolist(), shrink=0.8, label="uncertainty (entropy, nats)")
    handles = [
        Patch(
            color=cmap(v % 10), alpha=0.6, label=f"{v}: {class_names[v]}" if v < len(class_names) else str(v)
        )
        for v in sorted(shown)
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    if spatial == 3 and slice_index is None:
        fig.suptitle(
            f"{cols} of {total} slices along axis {axis}: spread over the segmented extent, with the "
            f"{sum(f for _, f in slices)} most uncertain",
            fontsize=9,
        )
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), overwrite=True)
    return fig
