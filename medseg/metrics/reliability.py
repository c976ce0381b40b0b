"""Reliability diagram: observed foreground frequency against predicted probability, with bin counts.

Reference:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (reliability diagrams, ECE);
    DeGroot & Fienberg, "The Comparison and Evaluation of Forecasters", 1983.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure
from monai.metrics import calibration_binning

from medseg.metrics._common import foreground_channels, prepare_inputs

__all__ = ["reliability_diagram"]


def _save_atomically(figure: Figure, path: Path) -> None:
    """Write ``figure`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, format=suffix.lstrip(".").lower(), dpi=100)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; give the usual permissions of a written file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def reliability_diagram(
    probability: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 15,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Draw a reliability diagram of the foreground classes; optionally save it (atomically).

    All foreground voxels probabilities (the only channel for ``C == 1``; channels ``1..C-1`` for ``C > 1``,
    every case of the batch) are pooled and put into ``num_bins`` equal-width bins on [0, 1] with MONAI's
    ``calibration_binning``. The top panel has one bar per bin at the observed frequency of the class
    (empty bins have height 0) and the diagonal of perfect calibration; the bottom panel has the voxel count
    per bin (log scale). The title carries the ECE of the pooled voxels,
    ``sum_k (n_k / n) |freq_k - conf_k|``, equal to :func:`expected_calibration_error` for a single binary
    case.

    The figure is a bare ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state, nothing displayed).

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).
        num_bins: number of bins (>= 1).
        path: where to save the figure; the format follows the suffix (PNG when none). The file is written
            to a temporary name in the same folder and renamed, so no half-written file is left behind.

    Returns:
        The figure; ``figure.axes[0]`` holds the ``num_bins`` frequency bars, ``figure.axes[1]`` the counts.

    Raises:
        ValueError: ``num_bins < 1`` or bad inputs.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    prob, onehot = prepare_inputs(probability, target)
    pooled_p = foreground_channels(prob).reshape(1, 1, -1).float()
    pooled_y = foreground_channels(onehot).reshape(1, 1, -1).float()
    mean_p, mean_y, counts = (t[0, 0] for t in calibration_binning(pooled_p, pooled_y, num_bins=num_bins))
    total = counts.sum()
    ece = float(torch.nansum(counts * (mean_y - mean_p).abs()) / total)  # Guo et al. 2017, Eq. 3

    width = 1.0 / num_bins
    centres = (torch.arange(num_bins, dtype=torch.float64) + 0.5) * width
    frequency = torch.nan_to_num(mean_y, nan=0.0)

    figure = Figure(figsize=(5.0, 6.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(
        centres.tolist(),
        frequency.tolist(),
        width=width,
        edgecolor="black",
        color="tab:blue",
        label="observed",
    )
    top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0.0, 1.0)
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("observed frequency")
    top.set_title(f"Reliability diagram (ECE = {ece:.4f}, {num_bins} bins)")
    top.legend(loc="upper left")
    bottom.bar(centres.tolist(), counts.tolist(), width=width, edgecolor="black", color="tab:gray")
    if float(counts.max()) > 0:
        bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability (foreground classes)")
    bottom.set_ylabel("voxels")
    if path is not None:
        _save_atomically(figure, Path(path))
    return figure
