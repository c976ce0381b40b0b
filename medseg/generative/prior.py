"""Unconditional image DDPMs (Ho et al. 2020) of one contrast of the translation test bed.

The prior is MONAI's ``DiffusionModelUNet`` called as ``network(x_t, t)``. Training is
``monai.engines.SupervisedTrainer`` with :class:`UnconditionalDiffusionPrepareBatch` (the segmentation
prepare-batch with the image as its own clean state and no condition passed on) and
``monai.inferers.SimpleInferer``; sampling is the one :class:`~medseg.diffusion.EnsembleSampler` through
:func:`unconditional`, which gives the sampler's ``model(x_t, time, condition)`` signature to a network that
takes no condition. EGSDE (:mod:`medseg.generative.egsde`) and the multi-task DDIM
(:mod:`medseg.generative.task_guidance`) steer these priors at sampling time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.data.contrasts import CONTRASTS, contrast_slices, unlabelled_slices
from medseg.diffusion import (
    EnsembleSampler,
    GaussianProcess,
    Guidance,
    ImageCodec,
    SamplingContext,
    SamplingOptions,
)
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.inferers import SamplingModel

#: The ``split`` of :func:`contrast_images` for a prior's unlabelled data: the volume outside the evaluation slabs.
UNLABELLED = "unlabelled"

__all__ = [
    "UNLABELLED",
    "InitialState",
    "UnconditionalDiffusionPrepareBatch",
    "UnconditionalSamplingModel",
    "contrast_images",
    "sample_prior",
    "unconditional",
]


def contrast_images(
    contrast: str = "t1",
    split: str = "training",
    domain: str | None = None,
    size: Sequence[int] = (48, 56),
    downsample: int = 4,
    slice_step: int = 1,
    seed: int = 0,
    max_images: int | None = None,
    orientations: Sequence[str] = ("axial",),
) -> list[dict[str, Any]]:
    """Slices of one test-bed contrast as ``{"image" (1, H, W) in [0, 1], "head", "tissue", "name"}``.

    ``split`` is a test-bed split (axial slices of its slab), or ``"unlabelled"``: the whole volume outside
    the validation and test slabs in the given ``orientations`` (:func:`~medseg.data.unlabelled_slices`), the
    data of a prior trained without labels. ``domain`` (``"source"`` / ``"target"``, training only) restricts
    the slices to one half of the unpaired protocol (:data:`medseg.data.UNPAIRED_SLABS`), so a prior of the
    target domain never sees a source slice.

    Raises:
        ValueError: for an unknown contrast, orientations other than axial for a split's slab, and what
            :func:`~medseg.data.contrast_slices` / :func:`~medseg.data.unlabelled_slices` reject.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}.")
    if split == UNLABELLED:
        if domain is not None:
            raise ValueError(f"the {UNLABELLED!r} slices have no unpaired domain, got domain={domain!r}")
        slices = unlabelled_slices(
            [contrast], orientations, downsample=downsample, size=size, slice_step=slice_step, seed=seed
        )
        names = [f"{o}{i:03d}" for o, i in zip(slices["orientation"], slices["index"].tolist())]
    else:
        if tuple(orientations) != ("axial",):
            raise ValueError(f"a split's slab is axial; other orientations need split={UNLABELLED!r}")
        slices = contrast_slices(
            split,
            [contrast],
            domain=domain,
            downsample=downsample,
            size=size,
            slice_step=slice_step,
            seed=seed,
        )
        names = [f"z{z:03d}" for z in slices["z"].tolist()]
    items = [
        {"image": slices[contrast][i], "head": slices["head"][i], "tissue": slices["tissue"][i], "name": name}
        for i, name in enumerate(names)
    ]
    return items[:max_images] if max_images is not None else items


class UnconditionalDiffusionPrepareBatch(ConditionalDiffusionPrepareBatch):
    """``{"image" in [0, 1]}`` -> ``(x_t, target, (), {"timesteps": t})`` for ``network(x_t, t)``.

    The image, encoded to [-1, 1] (:class:`~medseg.diffusion.ImageCodec`), is the clean state x0; noise,
    timesteps and the target come from :meth:`~medseg.diffusion.GaussianProcess.training_inputs` exactly as
    for the conditional methods. Use with ``monai.inferers.SimpleInferer``.

    Args:
        scheduler: the training scheduler.
        prediction_type: a ``PredictionType`` name (None: the scheduler's).
        image_key: batch key of the image.
        seed: seed of the prepare-batch's generator (None: torch's global RNG).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        prediction_type: str | None = None,
        image_key: str = "image",
        seed: int | None = None,
    ) -> None:
        super().__init__(
            scheduler,
            1,
            prediction_type,
            image_key=image_key,
            label_key=image_key,
            seed=seed,
            encode_label=False,
        )

    def __call__(
        self, batchdata: dict[str, torch.Tensor], device: Any = None, non_blocking: bool = False, **kwargs
    ):
        """Noise the encoded image; no condition is handed on to the network."""
        if isinstance(batchdata, dict) and self.image_key in batchdata:
            batchdata = {self.image_key: ImageCodec().encode(batchdata[self.image_key])}
        x_t, target, _, extra = super().__call__(batchdata, device, non_blocking, **kwargs)
        return x_t, target, (), {"timesteps": extra["timesteps"]}


def unconditional(network: nn.Module) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """The sampler's ``model(x_t, time, condition)`` for a network that takes ``(x_t, time)`` only."""

    def model(x: torch.Tensor, time: torch.Tensor, condition: Any = None) -> torch.Tensor:
        return network(x, time)

    return model


class InitialState(Guidance):
    """Start every member of input b from ``state[b]`` instead of its own noise draw."""

    def __init__(self, state: torch.Tensor) -> None:
        self.state = state

    def start(self, x: torch.Tensor, context: SamplingContext) -> torch.Tensor:
        """The given state, one row per item."""
        if tuple(self.state.shape[1:]) != tuple(context.shape):
            raise ValueError(
                f"initial state must be (B, *{tuple(context.shape)}), got {tuple(self.state.shape)}."
            )
        return self.state.to(device=x.device, dtype=x.dtype)[context.input_index].clone()


def sample_prior(
    network: nn.Module,
    scheduler: Scheduler,
    num_images: int,
    shape: Sequence[int] = (1, 48, 56),
    options: SamplingOptions | None = None,
    device: torch.device | str = "cpu",
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw ``(num_images, M, *shape)`` images in [0, 1] from the prior with the one sampler.

    ``noise`` ``(num_images, *shape)``, when given, is the initial state of every member (a deterministic
    DDIM map from noise to image with eta 0); otherwise each member draws its own from its generator.
    """
    options = options or SamplingOptions(ensemble=1)
    guidance = [InitialState(noise)] if noise is not None else []
    sampler = EnsembleSampler(GaussianProcess(scheduler), guidance, options=options)
    with torch.no_grad():
        out = sampler.sample(unconditional(network), None, shape, num_inputs=num_images, device=device)
    return ImageCodec().decode(out.samples)


class UnconditionalSamplingModel(SamplingModel):
    """``x_T (B, 1, H, W) -> image in [0, 1]``: the prior's deterministic DDIM map from noise to image.

    The single-input view of an unconditional prior for MONAI's ``verify_net_in_out`` and a bundle's
    ``network_data_format``: the input is the initial Gaussian noise, the output the generated image.

    Args:
        network: the denoiser ``forward(x_t, t)``.
        scheduler: the sampling scheduler (DDIM for a deterministic map).
        steps: sampling steps.
        eta: DDIM eta (0: deterministic).
    """

    def __init__(
        self, network: nn.Module, scheduler: Scheduler, steps: int | None = 50, eta: float = 0.0
    ) -> None:
        super().__init__(network, scheduler, num_channels=1, output="image", ensemble=1, steps=steps, eta=eta)
        self.scheduler = scheduler

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Run the sampler from ``image`` as the initial noise and return the images in [0, 1].

        Raises:
            ValueError: if ``image`` is not ``(B, C, H, W)``.
        """
        if image.ndim != 4:
            raise ValueError(f"expected initial noise of shape (B, C, H, W), got {tuple(image.shape)}.")
        samples = sample_prior(
            self.network,
            self.scheduler,
            image.shape[0],
            tuple(image.shape[1:]),
            self.options,
            image.device,
            image,
        )
        return samples[:, 0]
