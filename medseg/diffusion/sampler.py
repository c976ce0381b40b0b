"""The one sampling loop: ensembles of any diffusion process, batched, chunked and seed-deterministic.

:class:`EnsembleSampler` runs M members of each of B inputs as one batch of ``B * M`` items, split into network
calls of at most ``max_batch`` items. It knows nothing of masks, images or equations: the process
(:mod:`medseg.diffusion.processes`) gives the prior, the network's time input and the step; guidance terms
(:mod:`medseg.diffusion.guidance`) act at the start, on each output and after each step; codecs
(:mod:`medseg.diffusion.codecs`) turn the raw samples into probabilities or images afterwards. The state is a
tensor, or a mapping of tensors (joint processes), each with the items in its first dimension.

Randomness follows :mod:`medseg.diffusion.seeding`: every member draws from its own generator, so the same seed
gives the same members whatever the chunking and batch composition.

References:
    Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
    Song et al., "Denoising Diffusion Implicit Models", ICLR 2021.
    Wolleb et al., "Diffusion Models for Implicit Image Segmentation Ensembles", MIDL 2022.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from medseg.diffusion.guidance import Chunk, Guidance, SamplingContext
from medseg.diffusion.options import SamplingOptions
from medseg.diffusion.processes import DiffusionProcess
from medseg.diffusion.seeding import member_generators
from medseg.networks.performance import reuse_freed_memory

__all__ = ["EnsembleSampler", "SampleOutput", "tree_map"]

logger = logging.getLogger(__name__)


def tree_map(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in a nest of lists, tuples and mappings."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(tree_map(fn, o) for o in obj)
    if isinstance(obj, Mapping):
        return {k: tree_map(fn, v) for k, v in obj.items()}
    return obj


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (list, tuple)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def _assign(state: Any, items: slice, value: Any) -> None:
    """``state[items] = value`` for a tensor or each tensor of a mapping."""
    if isinstance(state, Mapping):
        for key in state:
            state[key][items] = value[key]
    else:
        state[items] = value


@dataclass
class SampleOutput:
    """Result of :meth:`EnsembleSampler.sample`.

    Attributes:
        samples: the final states, ``(B, M, *shape)`` (a mapping of such tensors for a mapping state).
        network_evaluations: items passed through the model: ``B * M * K`` (more with guidance that calls it).
        network_calls: batched model calls: ``K * ceil(B * M / max_batch)``.
    """

    samples: Any
    network_evaluations: int
    network_calls: int


class EnsembleSampler:
    """Draw ensembles from a diffusion process with one loop for every method.

    Args:
        process: a :class:`~medseg.diffusion.DiffusionProcess` (Gaussian, bridge, joint, ...).
        guidance: guidance terms and constraints, applied in order.
        options: default :class:`~medseg.diffusion.SamplingOptions`; :meth:`sample` may override them.

    Example:
        >>> sampler = EnsembleSampler(GaussianProcess(make_scheduler("ddim")), options=SamplingOptions(ensemble=5))
        >>> out = sampler.sample(lambda x, t, image: net(x, t, image), image, shape=(1, 64, 64))
        >>> out.samples.shape  # (B, 5, 1, 64, 64)
    """

    def __init__(
        self,
        process: DiffusionProcess,
        guidance: Sequence[Guidance] = (),
        options: SamplingOptions | None = None,
    ) -> None:
        self.process = process
        self.guidance = list(guidance)
        self.options = options or SamplingOptions()

    def sample(
        self,
        model: Callable[[Any, torch.Tensor, Any], Any],
        condition: Any,
        shape: Sequence[int] | Mapping[str, Sequence[int]],
        num_inputs: int | None = None,
        source: Any = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        **options: Any,
    ) -> SampleOutput:
        """Sample M members for each of B inputs.

        Args:
            model: ``model(x_t, model_time, condition) -> output`` for a chunk of items.
            condition: per-input conditioning, a tensor or nest of tensors with B in the first dimension (the
                sampler gives each item its input's rows), or None.
            shape: the state of one item (e.g. ``(C, *sp)``), or a mapping of shapes for a mapping state.
            num_inputs: B; defaults to the first dimension of ``condition``.
            source: per-input source state ``(B, *shape)`` for processes that start from it (bridge, SDEdit).
            generator: source of per-input seeds (sets the seed option to None unless a seed is given too).
            device: device of the state; defaults to the condition's.
            options: overrides of :class:`~medseg.diffusion.SamplingOptions` (``ensemble``, ``steps``, ...).

        Returns:
            :class:`SampleOutput`.

        Raises:
            ValueError: when B cannot be inferred or an option is invalid.
        """
        if generator is not None:
            options.setdefault("seed", None)  # a generator given is the source of the seeds
        opts = self.options.updated(**options)
        anchor = _first_tensor(condition) if condition is not None else _first_tensor(source)
        if num_inputs is None:
            if anchor is None:
                raise ValueError("give num_inputs when there is no condition or source tensor.")
            num_inputs = int(anchor.shape[0])
        device = (
            torch.device(device) if device is not None else anchor.device if anchor is not None else "cpu"
        )
        num_items = num_inputs * opts.ensemble
        chunk_size = num_items if opts.max_batch is None else int(opts.max_batch)
        gens = member_generators(num_inputs, opts.ensemble, device, seed=opts.seed, generator=generator)
        input_index = torch.arange(num_inputs, device=device).repeat_interleave(opts.ensemble)
        item_shape: Any = (
            {k: tuple(v) for k, v in shape.items()} if isinstance(shape, Mapping) else tuple(shape)
        )
        timesteps = self.process.set_timesteps(opts.steps, device)
        context = SamplingContext(self.process, model, gens, input_index, item_shape, timesteps)
        with torch.no_grad(), reuse_freed_memory():  # every step reallocates the same activations
            item_source = None if source is None else tree_map(lambda s: s.to(device)[input_index], source)
            x = self.process.prior(item_shape, gens, device, item_source)
            for term in self.guidance:
                x = term.start(x, context)
            calls = evaluations = 0
            bar = tqdm(timesteps, desc="diffusion sampling", disable=not opts.progress, leave=False)
            for i, t in enumerate(bar):
                for begin in range(0, num_items, chunk_size):
                    items = slice(begin, min(begin + chunk_size, num_items))
                    index = input_index[items]
                    x_chunk = tree_map(lambda s, items=items: s[items], x)
                    cond = tree_map(lambda c, index=index: c[index], condition)
                    time = self.process.model_time(t, index.numel(), device)
                    chunk = Chunk(x_chunk, t, time, cond, items)
                    output = model(x_chunk, time, cond)
                    calls, evaluations = calls + 1, evaluations + index.numel()
                    for term in self.guidance:
                        output = term.guide_output(output, chunk, context)
                    output = tree_map(lambda o: o.float(), output)
                    step = self.process.step(output, t, x_chunk, gens[items], eta=opts.eta)
                    _assign(x, items, step.prev_sample)
                t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
                for term in self.guidance:
                    x = term.after_step(x, t_next, context)
        samples = tree_map(lambda s: s.reshape(num_inputs, opts.ensemble, *s.shape[1:]), x)
        logger.debug("sampled %d members in %d steps with %d calls", num_items, len(timesteps), calls)
        return SampleOutput(samples, evaluations, calls)
