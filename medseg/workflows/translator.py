"""Notebook API for translation models: your own image (and region mask) in, samples in [0, 1] out.

The bundle's ``inference.json`` degrades clean images itself to show what a model does; :class:`Translator`
is for real inputs: a slice with a region to fill, an image to extend, a JPEG to restore, a grey image to
colour. Example::

    from medseg.workflows import Translator

    inpaint = Translator.from_bundle("palette", task="inpainting")
    out = inpaint(slice_2d, mask=region, ensemble=4)   # (H, W) arrays in [0, 1]; mask 1 = generate
    out.mean, out.samples, out.std
    out.plot()

    t2w = Translator.from_bundle("bbdm")                # whole-image translation (T1 -> T2w): no task, no mask
    out = t2w(t1_slice, ensemble=4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import DivisiblePad

from medseg.diffusion import ImageCodec
from medseg.inferers import SamplingModel
from medseg.translation.sampling import translate
from medseg.translation.tasks import PaletteTask, task_spec
from medseg.workflows.predictor import Predictor, resolve_device

__all__ = ["TranslationOutput", "Translator"]


@dataclass
class TranslationOutput:
    """Samples of one input, all in [0, 1] and on the CPU.

    Attributes:
        image: ``(C_x, H, W)`` the input as given (the region to generate keeps the given values).
        mask: ``(1, H, W)`` region that was generated (1), or None when the whole image was generated.
        samples: ``(M, C_y, H, W)``; outside ``mask`` each equals ``image`` exactly.
        task: the Palette task name, or ``"translation"`` for a whole-image translation model.
    """

    image: torch.Tensor
    mask: torch.Tensor | None
    samples: torch.Tensor
    task: str

    @property
    def mean(self) -> torch.Tensor:
        """``(C_y, H, W)`` mean of the samples: closer to the truth on average, blurrier than any sample."""
        return self.samples.mean(0)

    @property
    def std(self) -> torch.Tensor:
        """``(C_y, H, W)`` per-pixel standard deviation over the samples (0 with one sample)."""
        return self.samples.std(0, correction=0)

    def plot(self, max_samples: int = 4) -> Any:
        """Figure: input (region outlined), up to ``max_samples`` samples, their mean and standard deviation."""
        import matplotlib.pyplot as plt

        def show(ax: Any, image: torch.Tensor, title: str, cmap: str = "gray", vmax: float = 1.0) -> None:
            array = image.permute(1, 2, 0).numpy()
            ax.imshow(array[..., 0] if array.shape[-1] == 1 else array, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()

        k = min(max_samples, self.samples.shape[0])
        fig, axes = plt.subplots(1, k + 3, figsize=(1.8 * (k + 3), 2.2), squeeze=False)
        show(axes[0, 0], self.image, "input")
        if self.mask is not None:
            axes[0, 0].contour(self.mask[0].numpy(), levels=[0.5], colors="tab:red", linewidths=0.6)
        for j in range(k):
            show(axes[0, j + 1], self.samples[j], f"sample {j + 1}")
        show(axes[0, k + 1], self.mean, "mean")
        std = self.std.mean(0, keepdim=True)
        show(axes[0, k + 2], std, "std", cmap="magma", vmax=max(float(std.max()), 1e-6))
        fig.suptitle(self.task, fontsize=9)
        fig.tight_layout()
        return fig


def _as_chw(array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    image = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).float()
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"{name} must be (H, W) or (C, H, W), got shape {tuple(image.shape)}.")
    return image


class Translator(Predictor):
    """Sample translations of one 2D image with a Palette model (keeping its known pixels) or a whole-image
    translation model such as BBDM.

    Built by ``Translator.from_bundle("palette", task=...)`` (or ``"bbdm"``) from the bundle's ``translator`` entry (its
    shipped ``models/`` weights unless ``ckpt_path=...``; other overrides are config keys such as
    ``ensemble``, ``steps``, ``sampler``, ``device``).

    Args:
        model: the sampling model (network, sampling scheduler and default options), e.g. a bundle's
            ``translation_model``.
        task: a :class:`~medseg.translation.PaletteTask` name (inpainting and uncropping need a mask), or None
            for a whole-image translation model, sampled by its inferer's ``sample(network, image)``.
        divisible_by: input sizes are padded (zeros, both sides) to a multiple of this and cropped back;
            the U-Net's downsampling factor (4 for the bundle's three levels).
        device: device of the computation (None: CUDA when available).
    """

    bundle_entry = "translator"
    bundle_kind = "translation"
    default_bundle = "palette"

    def __init__(
        self,
        model: SamplingModel,
        task: str | None = None,
        divisible_by: int = 4,
        device: str | torch.device | None = "cpu",
    ) -> None:
        if divisible_by < 1:
            raise ValueError(f"divisible_by must be >= 1, got {divisible_by}.")
        self.task = PaletteTask(task).value if task is not None else None
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.divisible_by = int(divisible_by)

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor | None = None,
        ensemble: int | None = None,
        steps: int | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> TranslationOutput:
        """Translate one image.

        Args:
            image: ``(H, W)`` or ``(C, H, W)`` in [0, 1]: the degraded input x (a slice with a region to fill,
                the decoded JPEG, the luminance for colorization), at the resolution and intensity scaling the
                model was trained on (the bundle's MNI models: 4 mm slices, robust-percentile scaled).
            mask: ``(H, W)`` or ``(1, H, W)``, 1 = region to generate; required for inpainting and uncropping.
            ensemble: samples M (default: the model's).
            steps: sampling steps (default: the model's).
            seed: seed of the samples (default: the model's).
            progress: tqdm bar over the steps.

        Raises:
            ValueError: for a missing or misshapen mask, a mask given for a whole-image task, or a channel count
                the model does not take.
        """
        x = _as_chw(image, "image")
        masked = self.task is not None and bool(task_spec(self.task, image_channels=x.shape[0])["masked"])
        region = None
        if mask is not None:
            if not masked:
                raise ValueError(f"{self.task or 'this model'} generates the whole image: give no mask.")
            region = (_as_chw(mask, "mask") > 0.5).float()
            if region.shape[0] != 1 or region.shape[1:] != x.shape[1:]:
                raise ValueError(f"mask must be (H, W) = {tuple(x.shape[1:])}, got {tuple(region.shape)}.")
        elif masked:
            raise ValueError(f"{self.task} needs a mask of the region to generate (1 = generate).")
        inferer = self.model.inferer
        latent = getattr(inferer, "latent", None)
        expected = getattr(self.model.network, "source_channels", None) if latent is None else 1
        if expected is not None and x.shape[0] != expected:
            raise ValueError(f"the model takes {expected}-channel images, got {x.shape[0]} channels.")
        pad = DivisiblePad(k=self.divisible_by)
        height, width = x.shape[1:]
        codec = ImageCodec()
        padded = codec.encode(torch.as_tensor(pad(x)))[None].to(
            self.device
        )  # pad with 0, then to model range
        given = {"ensemble": ensemble, "steps": steps, "seed": seed, "progress": progress}
        options = inferer.options.updated(**{k: v for k, v in given.items() if v is not None})
        if self.task is None:
            samples = inferer.sample(self.model.network, padded, **vars(options)).x0[0].cpu()
        else:
            samples = translate(
                self.model.network,
                padded,
                inferer.scheduler,
                target_channels=inferer.num_channels,
                mask=torch.as_tensor(pad(region))[None].to(self.device) if region is not None else None,
                options=options,
                noise_conditioning=inferer.noise_conditioning,
            )[0].cpu()
        top = (samples.shape[-2] - height) // 2
        left = (samples.shape[-1] - width) // 2
        samples = samples[..., top : top + height, left : left + width]
        samples = codec.decode(samples)
        if region is not None:  # exact known pixels, not their round trip through [-1, 1]
            samples = torch.where(region.bool(), samples, x)
        return TranslationOutput(x, region, samples, self.task or "translation")
