"""The notebook and pipeline API: a trained diffusion segmenter applied to whole images and volumes.

``Segmenter`` holds a network and the recipe it was trained with (preprocessing, noise schedule) and turns
an image (path, array or MetaTensor; 2D or 3D) into a :class:`SegmentationResult` on the input's own grid:
the ensemble members, their fused probability and mask, and per-voxel uncertainty maps. Bundles build it
from their ``inference.json`` (``Segmenter.from_bundle("medsegdiff")``), the CLI calls it, and so can a
notebook.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medseg.data import MedsegDataError, load_image
from medseg.diffusion import DECODE_MARGIN, MaskCodec, Sampler, SamplingOptions, make_scheduler
from medseg.ensemble import ensemble_prediction, probability_to_mask
from medseg.inferers import VolumeOutput, slicewise_inference, sliding_window_ensemble_inference
from medseg.networks.performance import prepare_for_inference, reuse_freed_memory
from medseg.networks.weights import load_weights
from medseg.transforms import inference_transforms
from medseg.workflows.bundles import bundle_path
from medseg.workflows.predictor import Predictor, resolve_device
from medseg.workflows.result import SegmentationResult

__all__ = ["SegmentationResult", "Segmenter"]

logger = logging.getLogger(__name__)


class Segmenter(Predictor):
    """A diffusion segmentation network with its preprocessing and sampling recipe.

    Args:
        network: a conditional denoiser ``forward(x_t, timesteps, image)`` (e.g. ``MedSegDiffUNet``).
        spatial_dims: 2 (applied slice by slice to volumes) or 3 (applied by sliding windows).
        num_channels: mask channels C (1 = binary, otherwise one per class including background).
        class_names: names of the label values; defaults to ``class_0 ...``.
        checkpoint: weights to load (``torch.load(weights_only=True)``); None keeps the network's.
        num_train_timesteps: T of the training noise schedule.
        schedule: MONAI noise schedule name of training.
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        prediction_type: what the network predicts (``epsilon``, ``sample``, ``v_prediction``).
        axcodes: orientation the network was trained in.
        spacing: voxel spacing (mm) the network was trained at; None keeps the input's.
        lower_percentile: intensity percentile mapped to 0.
        upper_percentile: intensity percentile mapped to 1.
        divisible_by: padding multiple of the network (its total downsampling factor).
        slice_axis: axis (after reorientation) along which a 2D network is applied.
        roi_size: window size of a 3D network.
        ensemble: default ensemble size M.
        steps: default number of sampling steps K.
        sampler: default sampler, ``ddim`` or ``ddpm``.
        fusion: default fusion, ``mean``, ``majority`` or ``staple``.
        eta: DDIM eta.
        seed: default seed (results are reproducible for a given seed).
        batch_size: slices (2D) or windows (3D) sampled together.
        max_batch: most items (slices x members) per network call; the default 20 is the 4 slices x 5 members
            of the default ensemble in one call, and keeps memory from growing with larger ensembles (None: all
            members of a batch of slices at once).
        device: where the network runs; None picks CUDA when available.
        decode_margin: samples within this of -1 / +1 decode to probability 0 / 1 (:class:`MaskCodec`).
        precision: ``float32``, ``bfloat16`` or ``auto`` (bf16 where the hardware has it natively; see
            :func:`medseg.networks.performance.prepare_for_inference`).

    ``Segmenter.from_bundle("medsegdiff")`` builds the one a bundle's ``inference.json`` defines (its
    ``segmenter`` entry); overrides are config keys (``device="cpu"``, ``ckpt_path=...``).
    """

    bundle_entry = "segmenter"
    bundle_kind = "segmentation"
    default_bundle = "medsegdiff"

    def __init__(
        self,
        network: torch.nn.Module,
        spatial_dims: int = 2,
        num_channels: int = 1,
        class_names: Sequence[str] | None = None,
        checkpoint: str | os.PathLike | None = None,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
        axcodes: str | None = "RAS",
        spacing: Sequence[float] | None = None,
        lower_percentile: float = 0.5,
        upper_percentile: float = 99.5,
        divisible_by: int = 16,
        slice_axis: int = 2,
        roi_size: Sequence[int] | None = None,
        ensemble: int = SamplingOptions.ensemble,
        steps: int | None = SamplingOptions.steps,
        sampler: str = Sampler.DDIM,
        fusion: str = "mean",
        eta: float = SamplingOptions.eta,
        seed: int | None = SamplingOptions.seed,
        batch_size: int = 4,
        max_batch: int | None = 20,
        device: str | torch.device | None = None,
        decode_margin: float = DECODE_MARGIN,
        precision: str = "float32",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if spatial_dims == 3 and roi_size is None:
            raise ValueError("a 3D network needs roi_size for sliding-window inference.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
        names = tuple(class_names) if class_names else ()
        num_labels = 2 if num_channels == 1 else num_channels
        if names and len(names) != num_labels:
            raise ValueError(f"class_names has {len(names)} names, the network has {num_labels} labels.")
        self.device = resolve_device(device)
        if checkpoint is not None:
            load_weights(network, checkpoint)
        # fused activations and channels_last on this machine; fp32 unless bf16 is asked for (and native)
        self.network = prepare_for_inference(
            network.to(self.device), precision=precision, spatial_dims=spatial_dims
        )
        self.spatial_dims = spatial_dims
        self.num_channels = int(num_channels)
        self.class_names = names or tuple(f"class_{i}" for i in range(num_labels))
        self.schedule_args = {
            "num_train_timesteps": num_train_timesteps,
            "schedule": schedule,
            "beta_start": beta_start,
            "beta_end": beta_end,
            "prediction_type": prediction_type,
        }
        make_scheduler(sampler, **self.schedule_args)  # validate the recipe now, not at the first image
        pad = [divisible_by] * 3 if isinstance(divisible_by, int) else list(divisible_by)
        if spatial_dims == 2:
            pad[slice_axis] = 1  # slices are not downsampled along their own axis
        self.transforms = inference_transforms(
            axcodes=axcodes,
            spacing=spacing,
            lower_percentile=lower_percentile,
            upper_percentile=upper_percentile,
            divisible_by=pad,
        )
        self.slice_axis = slice_axis
        self.roi_size = tuple(roi_size) if roi_size is not None else None
        self.options = SamplingOptions(ensemble, steps, eta, max_batch, seed)
        self.sampler = sampler
        self.fusion = fusion
        self.codec = MaskCodec(num_channels, margin=decode_margin)
        self.batch_size = batch_size
        self.dicom_seg: dict[str, Any] = {}  # from_bundle fills it from the bundle's metadata.json

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike | None = None, **overrides: Any) -> Segmenter:
        """The segmenter a bundle's ``inference.json`` defines (see :meth:`Predictor.from_bundle`), with what its
        ``metadata.json`` says for DICOM outputs: the algorithm name (the bundle folder's name) and version, and
        the per-class codes of its ``"dicom_seg": {"segments": {...}}`` entry."""
        segmenter = super().from_bundle(bundle, **overrides)
        segmenter.dicom_seg = _bundle_dicom_seg(bundle or cls.default_bundle)
        return segmenter

    @torch.no_grad()
    def __call__(
        self,
        image: str | os.PathLike | np.ndarray | torch.Tensor,
        ensemble: int | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        fusion: str | None = None,
        seed: int | None = None,
        keep_members: bool = True,
        progress: bool = False,
        series_uid: str | None = None,
    ) -> SegmentationResult:
        """Segment one image.

        Args:
            image: a path ``load_image`` reads (NIfTI, DICOM file or series folder, .npy), a list of paths (the
                channels of one image: modalities, nnU-Net ``case_0000``, ``case_0001``), or a channel-first
                array/tensor ``(C_img, *spatial)`` (2D or 3D; a MetaTensor keeps its geometry). The channel
                count must be the network's ``in_channels``.
            ensemble: members M (default from the bundle).
            steps: sampling steps K.
            sampler: ``ddim`` or ``ddpm``.
            fusion: ``mean``, ``majority`` or ``staple``.
            seed: seed of the members' noise.
            keep_members: keep the ``(M, C, *spatial)`` members on the result.
            progress: tqdm bar over sampling steps.
            series_uid: SeriesInstanceUID to segment in a DICOM folder that holds several series.

        Raises:
            MedsegDataError: an unreadable image, or one whose channel count is not the network's.
        """
        given = {"ensemble": ensemble, "steps": steps, "seed": seed, "progress": progress}
        options = self.options.updated(**{k: v for k, v in given.items() if v is not None})
        fusion = fusion or self.fusion
        original = self._as_image(image, series_uid)
        self._check_channels(original)
        planar = original.ndim == 3  # (C, H, W): a 2D image is a volume of one slice
        volume = original.unsqueeze(-1) if planar else original
        if planar and self.spatial_dims == 3:
            raise ValueError("a 3D network cannot segment a 2D image.")
        prepared = self.transforms({"image": volume})["image"]
        # a network that is an ensemble of fixed models (label-efficient MLPs) brings its own one-step process
        own = _inner_attribute(self.network, "sampling_process")
        scheduler = own if own is not None else make_scheduler(sampler or self.sampler, **self.schedule_args)
        if own is not None:
            options = options.updated(ensemble=own.num_members)
        common = {
            "num_channels": self.num_channels,
            "options": options,
            "codec": self.codec,
            "reduce": functools.partial(_fuse, fusion=fusion, keep_members=keep_members),
        }
        data = prepared.as_tensor().to(self.device)
        with reuse_freed_memory():  # across slice batches too, not only within one sampling run
            if self.spatial_dims == 2:
                axis = 2 if planar else self.slice_axis
                out = slicewise_inference(
                    self.network, data, scheduler, axis=axis, slice_batch_size=self.batch_size, **common
                )
            else:
                out = sliding_window_ensemble_inference(
                    self.network,
                    data,
                    scheduler,
                    roi_size=self.roi_size,
                    sw_batch_size=self.batch_size,
                    **common,
                )
        result = self._to_input_grid(out, prepared, original)
        if planar:
            result = _squeeze_last(result)
        result.dicom_seg = dict(self.dicom_seg)
        return result

    def _as_image(
        self,
        image: str | os.PathLike | Sequence[str | os.PathLike] | np.ndarray | torch.Tensor,
        series_uid: str | None,
    ) -> MetaTensor:
        """The input as a channel-first MetaTensor: paths are read, arrays and tensors wrapped."""
        if isinstance(image, (str, os.PathLike)) or (
            isinstance(image, (list, tuple))
            and image
            and all(isinstance(p, (str, os.PathLike)) for p in image)
        ):
            return load_image(image, series_uid=series_uid)
        if isinstance(image, MetaTensor):
            return image.float()
        tensor = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).float()
        if tensor.ndim not in (3, 4):
            raise ValueError(
                f"image must be channel-first (C, H, W) or (C, X, Y, Z), got shape {tuple(tensor.shape)}."
            )
        return MetaTensor(tensor)

    def _check_channels(self, image: MetaTensor) -> None:
        """The image's channel count against the network's ``in_channels``, named in the error."""
        expected = _input_channels(self.network)
        if expected is None or image.shape[0] == expected:
            return
        meta = image.meta if isinstance(image, MetaTensor) else {}
        files = meta.get("channel_files") or [meta.get("filename_or_obj", "image")]
        hint = (
            "give the modalities as a list of files, nnU-Net channel files (case_0000, case_0001, ...) or a 4D NIfTI"
            if image.shape[0] < expected
            else "give one single-channel file per case"
            if expected == 1
            else f"give exactly {expected} channel files per case"
        )
        raise MedsegDataError(
            f"{', '.join(map(str, files))}: {image.shape[0]} image channel(s), but the network of this bundle takes "
            f"{expected} ({hint})"
        )

    def _to_input_grid(
        self, out: VolumeOutput, prepared: MetaTensor, original: MetaTensor
    ) -> SegmentationResult:
        """Invert the spatial preprocessing (orientation, spacing, padding) for every fused map."""

        def invert(t: torch.Tensor) -> torch.Tensor:
            carrier = MetaTensor(t.detach().float().cpu(), meta=dict(prepared.meta))
            carrier.applied_operations = copy.deepcopy(prepared.applied_operations)
            back = self.transforms.inverse({"image": carrier})["image"]
            return MetaTensor(back.as_tensor(), meta=dict(original.meta))

        maps = dict(out.maps)
        probability = invert(maps.pop("probability"))
        mask = probability_to_mask(probability)  # the rule of the written (resampled) probability
        mask = MetaTensor(mask.as_tensor() if isinstance(mask, MetaTensor) else mask, affine=original.affine)
        members = maps.pop("members", None)
        if members is not None:
            members = torch.stack([invert(m) for m in members]).as_tensor()
        return SegmentationResult(
            image=original,
            probability=probability,
            mask=mask,
            uncertainty={k: invert(v) for k, v in maps.items()},
            members=members,
            class_names=self.class_names,
            network_evaluations=out.network_evaluations,
        )


def _input_channels(network: torch.nn.Module) -> int | None:
    """``in_channels`` of a network, looked up through wrappers (``FastInference``, DDP, ``torch.compile``)."""
    channels = _inner_attribute(network, "in_channels")
    return channels if isinstance(channels, int) else None


def _inner_attribute(network: torch.nn.Module, name: str) -> Any:
    """An attribute of a network, looked up through wrappers (``FastInference``, DDP, ``torch.compile``)."""
    for _ in range(4):
        value = getattr(network, name, None)
        if value is not None:
            return value
        inner = next(
            (getattr(network, a) for a in ("network", "module", "_orig_mod") if hasattr(network, a)), None
        )
        if not isinstance(inner, torch.nn.Module):
            return None
        network = inner
    return None


def _bundle_dicom_seg(bundle: str | os.PathLike) -> dict[str, Any]:
    """Algorithm name and version and the per-class codes that a bundle's metadata gives DICOM outputs."""
    root = bundle_path(bundle)
    try:
        meta = json.loads((root / "configs" / "metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    entry = meta.get("dicom_seg") if isinstance(meta.get("dicom_seg"), dict) else {}
    return {
        "algorithm_name": str(entry.get("algorithm_name") or root.name),
        "algorithm_version": str(entry.get("algorithm_version") or meta.get("version") or ""),
        "segments": entry.get("segments") or {},
    }


def _fuse(members: torch.Tensor, fusion: str, keep_members: bool) -> dict[str, torch.Tensor]:
    """The reduction each batch of slices gets: fused probability and uncertainty maps (and the members).

    Voxel-wise, so batch by batch gives the whole volume's maps; STAPLE estimates its rater performances per
    batch of slices.
    """
    fused = ensemble_prediction(members, fusion)
    maps = {"probability": fused.probability, **fused.uncertainty}
    return {**maps, "members": members} if keep_members else maps


def _squeeze_last(result: SegmentationResult) -> SegmentationResult:
    """Drop the singleton slice axis that a 2D image was given for slice-wise inference."""

    def sq(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[..., 0]

    return SegmentationResult(
        image=result.image,
        probability=sq(result.probability),
        mask=sq(result.mask),
        uncertainty={k: sq(v) for k, v in result.uncertainty.items()},
        members=sq(result.members),
        class_names=result.class_names,
        network_evaluations=result.network_evaluations,
        dicom_seg=result.dicom_seg,
    )
