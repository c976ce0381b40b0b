"""Fast inference for the diffusion networks: memory format, precision and compilation chosen per machine.

The networks already use fused activations (``nn.SiLU``); what stays machine-dependent is decided here:

* **Memory format.** oneDNN (the CPU convolution backend) runs 3x3 convolutions over a few dozen channels
  2-3x faster on ``channels_last`` (NHWC / NDHWC) tensors than on NCHW ones; on a GPU it pays under
  bf16/fp16 (tensor cores). GroupNorm, the FF-Parser FFT, the Eq. 3 layer norm and the attention reshapes
  accept either layout, with outputs equal to float rounding (see ``tests/networks/test_performance.py``).
* **Precision.** bf16 autocast is used only where the hardware runs bf16 natively (x86 ``avx512_bf16`` or
  ``amx_bf16``, an Arm CPU with the ``bf16`` feature, a CUDA device of compute capability >= 8.0). Elsewhere
  it is emulated, e.g. 20x *slower* than fp32 on an AVX2 CPU, so it is never assumed. With example inputs,
  :func:`prepare_for_inference` also times bf16 against fp32 and keeps it only when it is faster.
* **Compilation.** ``torch.compile`` (inductor) fuses GroupNorm + SiLU + residual adds into the convolutions'
  neighbours; it pays on long runs with fixed shapes (its compile time is tens of seconds on a small CPU),
  so it is opt-in.
* **Allocation.** glibc hands every block over 32 MB (and, after a free, many smaller ones) back to the kernel
  at once, so a CPU forward whose activations are tens of MB page-faults its outputs anew on every call:
  about a sixth of a batch-20 MedSegDiff forward here. :func:`reuse_freed_memory` keeps freed memory in the
  process heap while a sampling run lasts and returns it afterwards; the sampler and the Segmenter run
  inside it.

MetaTensor inputs are unwrapped to plain tensors before the network sees them (every MONAI ``MetaTensor``
op goes through ``__torch_function__``); the network's own parameters and ``state_dict`` are untouched
(the weights are only re-laid out in memory).

Example:
    >>> net = MedSegDiffUNet.from_preset("tiny", spatial_dims=2, in_channels=1, out_channels=1)
    >>> fast = prepare_for_inference(net)
    >>> with torch.no_grad():
    ...     eps = fast(torch.randn(2, 1, 32, 32), torch.tensor([3, 70]), torch.randn(2, 1, 32, 32))
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import logging
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from monai.utils import StrEnum
from torch import nn

__all__ = [
    "FastInference",
    "MemoryFormat",
    "Precision",
    "cpu_flags",
    "detect_precision",
    "native_bf16",
    "prepare_for_inference",
    "reuse_freed_memory",
]

logger = logging.getLogger(__name__)

_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# glibc mallopt parameters and its defaults (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_ALL = 2**31 - 1  # the largest value mallopt takes (an int)
_heap_lock = threading.Lock()
_heap_depth = 0


@lru_cache(maxsize=1)
def _glibc() -> Any:
    """The C library when it is glibc (whose ``mallopt`` this module tunes), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:  # pragma: no cover - a Linux without a loadable C library
        return None


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Keep memory freed inside the block in the process heap, for the next allocation to reuse.

    A sampling loop allocates and frees the same activations at every network call. Under glibc's defaults
    each large block is unmapped when freed and faulted in again, page by page, when the next call allocates
    it. Inside this context no allocation is memory-mapped and the heap is never trimmed; on leaving the
    outermost one, glibc's default limits come back (its dynamic mmap threshold stays off, as after setting
    ``MALLOC_TRIM_THRESHOLD_``) and the free memory is returned to the system (``malloc_trim``). Nested and
    concurrent uses share one setting. A no-op where the C library is not glibc.
    """
    global _heap_depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _heap_lock:
        _heap_depth += 1
        if _heap_depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_depth -= 1
            if _heap_depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)


class Precision(StrEnum):
    """Compute precision of :class:`FastInference`: ``auto`` (detected per machine), ``float32``, ``bfloat16``."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class MemoryFormat(StrEnum):
    """Activation layout: ``auto`` (per device), ``channels_last`` or ``contiguous`` (NCHW / NCDHW)."""

    AUTO = "auto"
    CHANNELS_LAST = "channels_last"
    CONTIGUOUS = "contiguous"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (``/proc/cpuinfo`` "flags" or "Features"); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes in bf16 natively (not emulated through fp32).

    CPU: the ``avx512_bf16`` or ``amx_bf16`` flag on x86, the ``bf16`` feature on Arm (from ``/proc/cpuinfo``).
    CUDA: compute capability >= 8.0 (``torch.cuda.is_bf16_supported(including_emulation=False)``). Any other
    device: ``False``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch without the keyword
            return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    flags = cpu_flags()
    if flags & _X86_BF16_FLAGS:
        return True
    return platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags


def detect_precision(device: str | torch.device = "cpu") -> torch.dtype:
    """``torch.bfloat16`` where ``device`` has native bf16 (:func:`native_bf16`), else ``torch.float32``."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def _layout(spatial_ndim: int) -> torch.memory_format:
    return torch.channels_last_3d if spatial_ndim == 3 else torch.channels_last


def _to_plain(value: Any) -> Any:
    """A MONAI MetaTensor as a plain tensor (no copy); anything else unchanged."""
    as_tensor = getattr(value, "as_tensor", None)
    if isinstance(value, torch.Tensor) and callable(as_tensor):
        return as_tensor()
    return value


class FastInference(nn.Module):
    """A network run with a chosen memory format, precision and (optionally) ``torch.compile``.

    Calls take the network's own arguments (``net(x_t, timesteps, image)``, or ``condition=`` for SegDiff)
    and return what the network returns, as a contiguous tensor in the input's dtype. Build it with
    :func:`prepare_for_inference`, which also puts the network in eval mode and re-lays its weights out.

    Args:
        network: the network; used as is (prepare it with :func:`prepare_for_inference`).
        spatial_dims: 2 or 3 (the layout of 4D / 5D inputs).
        channels_last: convert 4D / 5D floating inputs to ``channels_last`` (``channels_last_3d``).
        dtype: ``torch.float32``, or ``torch.bfloat16`` for bf16 autocast.
        compile: run the network through ``torch.compile``.

    Attributes:
        network: the wrapped network (its ``state_dict`` is the network's own).
    """

    def __init__(
        self,
        network: nn.Module,
        spatial_dims: int,
        channels_last: bool,
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}.")
        self.network = network
        self.spatial_dims = spatial_dims
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.compiled = bool(compile)
        self._run: Callable[..., Any] = torch.compile(network) if compile else network
        if hasattr(network, "encode_condition"):  # only then, so callers can tell a caching network by it
            self.encode_condition = self._encode_condition

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, channels_last={self.channels_last}, dtype={self.dtype}, "
            f"compiled={self.compiled}"
        )

    def describe(self) -> dict[str, Any]:
        """The path this wrapper runs: ``{"precision", "memory_format", "compiled", "native_bf16"}``."""
        device = _device(self.network)
        return {
            "precision": str(self.dtype).removeprefix("torch."),
            "memory_format": MemoryFormat.CHANNELS_LAST.value
            if self.channels_last
            else MemoryFormat.CONTIGUOUS.value,
            "compiled": self.compiled,
            "native_bf16": native_bf16(device),
        }

    def _prepare(self, value: Any) -> Any:
        value = _to_plain(value)
        if (
            self.channels_last
            and isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and value.ndim == self.spatial_dims + 2
        ):
            return value.contiguous(memory_format=_layout(self.spatial_dims))
        return value

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def _call(self, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        args = [self._prepare(a) for a in args]
        kwargs = {k: self._prepare(v) for k, v in kwargs.items()}
        reference = next((a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)), None)
        device = reference.device if reference is not None else _device(self.network)
        in_dtype = next(
            (
                a.dtype
                for a in [*args, *kwargs.values()]
                if isinstance(a, torch.Tensor) and a.is_floating_point()
            ),
            torch.float32,
        )
        with self._autocast(device):
            out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            out = out.to(in_dtype).contiguous()
        return out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The network's forward on the prepared inputs; output contiguous, in the first floating input's dtype."""
        return self._call(self._run, args, kwargs)

    def _encode_condition(self, image: torch.Tensor) -> Any:
        """The wrapped network's ``encode_condition`` (SegDiff's cached ``G(I)``), under the same settings."""
        return self._call(self.network.encode_condition, (image,), {})


def _device(network: nn.Module) -> torch.device:
    """The device of the network's first parameter (the CPU for a network without parameters)."""
    first = next(network.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _spatial_dims(network: nn.Module, spatial_dims: int | None) -> int:
    if spatial_dims is not None:
        return int(spatial_dims)
    found = getattr(network, "spatial_dims", None)
    if found is None:
        raise ValueError(f"{type(network).__name__} has no spatial_dims attribute; pass spatial_dims=.")
    return int(found)


def _time(candidates: dict[str, Callable[[], Any]], trials: int) -> dict[str, float]:
    """Median seconds per call of each candidate, timed interleaved after one warm-up call each."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        for run in candidates.values():
            run()
        for _ in range(trials):
            for name, run in candidates.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def prepare_for_inference(
    network: nn.Module,
    example_inputs: Sequence[Any] | None = None,
    example_kwargs: dict[str, Any] | None = None,
    memory_format: str = MemoryFormat.AUTO,
    precision: str = Precision.AUTO,
    compile: bool = False,
    spatial_dims: int | None = None,
    trials: int = 3,
) -> FastInference:
    """Put ``network`` in eval mode and wrap it to run in the fastest layout and precision of this machine.

    Without example inputs the choice follows the hardware: ``channels_last`` on a CPU (oneDNN) and on a GPU
    under bf16; bf16 only where it is native (:func:`detect_precision`). With ``example_inputs`` (the
    arguments of one forward call, e.g. ``(x_t, timesteps, image)`` at the sampler's batch size), every
    ``auto`` choice is timed instead (``trials`` interleaved calls each, medians) and the fastest kept; bf16
    is only a candidate where it is native.

    Args:
        network: a network with ``spatial_dims`` (``MedSegDiffUNet``, ``SegDiffUNet``, ...); modified in place
            (eval mode, weights re-laid out when ``channels_last`` is chosen).
        example_inputs: positional arguments of a representative forward call, to time the candidates.
        example_kwargs: keyword arguments of that call.
        memory_format: ``"auto"``, ``"channels_last"`` or ``"contiguous"``.
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (forcing bf16 where it is not native logs a
            warning: it is emulated and slow).
        compile: wrap the network in ``torch.compile`` (pays over many calls at fixed shapes).
        spatial_dims: 2 or 3; read from ``network.spatial_dims`` when ``None``.
        trials: timed calls per candidate when ``example_inputs`` are given.

    Returns:
        the :class:`FastInference` wrapper; ``describe()`` names the chosen path.
    """
    fmt = MemoryFormat(memory_format)
    prec = Precision(precision)
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}.")
    dims = _spatial_dims(network, spatial_dims)
    network.eval()
    device = _device(network)
    native = native_bf16(device)
    if prec == Precision.BFLOAT16 and not native:
        logger.warning(
            "bfloat16 forced on %s without native bf16: autocast is emulated there and usually much slower.",
            device,
        )
    dtypes = {
        Precision.FLOAT32: [torch.float32],
        Precision.BFLOAT16: [torch.bfloat16],
        Precision.AUTO: [torch.float32, torch.bfloat16] if native else [torch.float32],
    }[prec]
    layouts = {
        MemoryFormat.CHANNELS_LAST: [True],
        MemoryFormat.CONTIGUOUS: [False],
        MemoryFormat.AUTO: [True, False],
    }[fmt]

    if example_inputs is None or len(dtypes) * len(layouts) == 1:
        dtype = dtypes[-1]  # bf16 when native and allowed
        if len(layouts) == 1:
            channels_last = layouts[0]
        else:
            channels_last = device.type == "cpu" or dtype != torch.float32
    else:
        candidates: dict[str, Callable[[], Any]] = {}
        options: dict[str, tuple[bool, torch.dtype]] = {}
        args, kwargs = list(example_inputs), dict(example_kwargs or {})
        for index, layout in enumerate(layouts):
            # one copy of the network per layout, so that timing never re-lays weights out
            net = network if index == 0 else copy.deepcopy(network)
            net.to(memory_format=_layout(dims) if layout else torch.contiguous_format)
            for dtype in dtypes:
                name = f"{'channels_last' if layout else 'contiguous'}/{str(dtype).removeprefix('torch.')}"
                options[name] = (layout, dtype)
                wrapper = FastInference(net, dims, layout, dtype)
                candidates[name] = functools.partial(wrapper, *args, **kwargs)
        seconds = _time(candidates, trials)
        best = min(seconds, key=seconds.__getitem__)
        logger.info("prepare_for_inference timings (s): %s; chosen %s", seconds, best)
        channels_last, dtype = options[best]
    network.to(memory_format=_layout(dims) if channels_last else torch.contiguous_format)
    return FastInference(network, dims, channels_last, dtype, compile=compile)
