"""An image / mask / uncertainty panel for a quick look at one segmentation."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["overlay_figure"]


def _plane(volume: torch.Tensor, axis: int, index: int) -> np.ndarray:
    """``(C, *spatial)`` -> first channel as a 2D array, sliced along spatial ``axis`` for 3D."""
    array = np.asarray(torch.as_tensor(volume).detach().cpu().float())[0]
    if array.ndim == 3:
        array = np.take(array, index, axis=axis)
    return array.T  # (x, y) -> rows = y, so the first axis runs left-right on screen


def overlay_figure(
    image: torch.Tensor,
    mask: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
    slice_index: int | None = None,
    axis: int = -1,
    class_names: Sequence[str] = (),
    path: str | os.PathLike | None = None,
):
    """Image, coloured mask over the image, and an uncertainty map side by side.

    Args:
        image: ``(C_img, *spatial)`` (2D or 3D).
        mask: ``(1, *spatial)`` label map.
        uncertainty: ``(1, *spatial)`` map (e.g. predictive entropy) or None.
        slice_index: slice of a 3D volume to show; None picks the slice with the most foreground.
        axis: spatial axis of the slice (3D only).
        class_names: legend labels, one per label value.
        path: if given, the figure is also written there as PNG (atomically).

    Returns:
        a matplotlib ``Figure`` (Agg backend; nothing is displayed).
    """
    from matplotlib.figure import Figure

    spatial = torch.as_tensor(mask).ndim - 1
    axis = axis % 3 if spatial == 3 else 0
    if spatial == 3 and slice_index is None:
        counts = (torch.as_tensor(mask)[0] > 0).sum(dim=tuple(d for d in range(3) if d != axis))
        slice_index = int(counts.argmax())
    index = slice_index or 0
    img, lab = _plane(image, axis, index), _plane(mask, axis, index).astype(int)
    panels = 3 if uncertainty is not None else 2
    fig = Figure(figsize=(4 * panels, 4.2), layout="constrained")
    axes = fig.subplots(1, panels)
    axes[0].imshow(img, cmap="gray", origin="lower")
    axes[0].set_title("image" + (f" (slice {index})" if spatial == 3 else ""))
    axes[1].imshow(img, cmap="gray", origin="lower")
    overlay = np.ma.masked_where(lab == 0, lab)
    axes[1].imshow(overlay, cmap="tab10", vmin=0, vmax=9, alpha=0.5, origin="lower", interpolation="nearest")
    axes[1].set_title("mask")
    if class_names:
        labels = [f"{v}: {class_names[v]}" for v in np.unique(lab) if 0 < v < len(class_names)]
        if labels:
            axes[1].text(
                0.02, 0.02, "\n".join(labels), transform=axes[1].transAxes, color="white", fontsize=8
            )
    if uncertainty is not None:
        unc = axes[2].imshow(_plane(uncertainty, axis, index), cmap="magma", origin="lower")
        axes[2].set_title("uncertainty (entropy, nats)")
        fig.colorbar(unc, ax=axes[2], shrink=0.8)
    for ax in axes:
        ax.set_axis_off()
    if path is not None:
        from medseg.data import atomic_write

        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), overwrite=True)
    return fig
