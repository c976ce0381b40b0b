"""Per-case timing, network evaluations and progress bar of a batch (:func:`medseg.workflows.segment_files`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from medseg.workflows.case_outputs import CaseOutcome

__all__ = ["CaseTracker"]


class CaseTracker:
    """Per-case timing and network evaluations for ``summary.json``, and a progress bar over the slices (2D
    networks) or windows (3D) of the case being sampled, with elapsed time and an estimate of the rest.

    Counts the items of every network call (a forward pre-hook on ``segmenter.network``); learns the case's
    slice count from the shape its preprocessing gives (``segmenter.transforms`` is wrapped while the batch
    runs). Both are undone by :meth:`close`. A segmenter without a ``network`` module gets timing only.
    """

    _FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} {unit} [{elapsed}<{remaining}]"

    def __init__(self, segmenter: Any, sampling: dict[str, Any], progress: bool) -> None:
        self.segmenter = segmenter
        self.progress = progress
        self.evaluations = 0
        self.started = time.perf_counter()
        self.bar: Any = None
        self.name = ""
        self._hook = None
        self._transforms = None
        options = getattr(segmenter, "options", None)
        ensemble = sampling.get("ensemble") or getattr(options, "ensemble", None) or 1
        steps = sampling.get("steps") or getattr(options, "steps", None)
        steps = steps or getattr(segmenter, "schedule_args", {}).get("num_train_timesteps") or 1
        self.per_unit = int(ensemble) * int(steps)  # network items per slice (or window)
        network = getattr(segmenter, "network", None)
        if isinstance(network, torch.nn.Module):
            self._hook = network.register_forward_pre_hook(self._count, with_kwargs=True)
        transforms = getattr(segmenter, "transforms", None)
        if progress and callable(transforms):
            self._transforms = transforms
            segmenter.transforms = _ShapeRecorder(transforms, self._prepared)

    def start(self, name: str) -> None:
        """Begin timing and counting case ``name``."""
        self.name = name
        self.evaluations = 0
        self.started = time.perf_counter()

    def _prepared(self, shape: Sequence[int]) -> None:
        """The preprocessed volume's shape ``(C, X, Y, Z)``: open the bar over its slices or windows."""
        if not self.progress or len(shape) != 4:
            return
        segmenter = self.segmenter
        if getattr(segmenter, "spatial_dims", 2) == 3 and getattr(segmenter, "roi_size", None):
            units, unit = _windows(shape[1:], segmenter.roi_size), "windows"
        else:
            units, unit = int(shape[1 + int(getattr(segmenter, "slice_axis", 2))]), "slices"
        self._close_bar()
        self.bar = tqdm(
            total=units, desc=self.name, unit=unit, leave=False, bar_format=self._FORMAT, dynamic_ncols=True
        )

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        items = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 0
        self.evaluations += items
        if self.bar is not None and items:
            self.bar.update(min(items / self.per_unit, max(self.bar.total - self.bar.n, 0)))

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, outcome: CaseOutcome) -> None:
        """Record the case's seconds and network evaluations on its outcome (not for a kept case)."""
        self._close_bar()
        if not outcome.kept:
            outcome.seconds = round(time.perf_counter() - self.started, 3)
            outcome.network_evaluations = self.evaluations

    def close(self) -> None:
        """Close the bar, remove the hook and give the segmenter its transforms back."""
        self._close_bar()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._transforms is not None:
            self.segmenter.transforms = self._transforms
            self._transforms = None


class _ShapeRecorder:
    """A transform wrapper that reports the shape of the ``image`` it produced (``inverse`` and the rest pass
    through)."""

    def __init__(self, inner: Callable[..., Any], report: Callable[[Sequence[int]], None]) -> None:
        self._inner = inner
        self._report = report

    def __call__(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        out = self._inner(data, *args, **kwargs)
        image = out.get("image") if isinstance(out, dict) else None
        if isinstance(image, torch.Tensor):
            self._report(tuple(image.shape))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float = 0.25) -> int:
    """Windows of MONAI's sliding-window scan of ``shape`` (the Segmenter's default overlap)."""
    count = 1
    for size, roi in zip(shape, roi_size):
        step = max(int(roi * (1 - overlap)), 1)
        count *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return count
