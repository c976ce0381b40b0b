"""The config sections that bundles share stay identical, so a fix made in one bundle cannot be forgotten in another.

Configs are compared file by file as flat ``id -> value`` maps (MONAI's ``#`` ids; handler lists keyed by their
``_target_``, so an extra handler in one bundle does not shift the others). What may differ is listed below,
with the reason: keep these lists short and honest.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import BUNDLES

CONFIGS = ("common", "train", "inference", "evaluate", "multi_gpu_train")

# MedSegDiff and SegDiff solve the same task with the same recipe; only the method differs.
SEGMENTATION_SPECIFIC = (
    "common#network_def",  # the architecture
    "common#num_train_timesteps",  # SegDiff trains with 100 steps, betas 1e-3..0.2 (its paper)
    "common#beta_start",
    "common#beta_end",
    "common#distilled",  # whether the distilled student is the default, chosen on the MNI validation slab
)

# Every bundle trains through the same SupervisedTrainer set-up (handlers, optimizer, EMA, checkpoints, initialize,
# multi-GPU); what a method or task brings of its own:
METHOD_SPECIFIC_TRAINING = (
    "train#output_dir",  # Palette writes one run folder per task
    # segmentation runs are bundle-shaped (configs/ and models/, so that medseg segment --bundle RUN takes them);
    # Palette keeps its per-task weights at the top of runs/<task>/, where its docs and benchmarks read them
    "train#models_dir",
    "train#max_epochs",  # the training length and hyperparameters of each recipe
    "train#learning_rate",
    "train#ema_decay",
    "train#val_interval",
    "train#val_steps",
    "train#train#preprocessing",  # data: 2D slices of labelled volumes vs degraded image crops
    "train#train#dataset",
    "train#validate#dataset",
    "train#train#prepare_batch#num_channels",  # mask channels (classes) vs image channels (task)
    "train#train#inferer#num_channels",
    "train#validate#inferer",  # validation: a mask ensemble scored by Dice vs one translation scored by PSNR
    "train#train#trainer#loss_function",  # Palette's loss counts only the pixels to generate
    "train#run",  # segmentation wires its early stopping on validation Dice
)


def _flat(value, prefix: str) -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}#{key}"))
        return out
    if isinstance(value, list) and any(isinstance(x, dict) for x in value):
        out = {}
        for i, item in enumerate(value):
            name = item.get("_target_", i) if isinstance(item, dict) else item
            out.update(_flat(item, f"{prefix}#{name}"))
        return out
    return {prefix: value}


def _config(bundle: str, names=CONFIGS) -> dict:
    flat = {}
    for name in names:
        flat.update(_flat(json.loads((BUNDLES / bundle / "configs" / f"{name}.json").read_text()), name))
    return flat


def _allowed(key: str, allowlist: tuple[str, ...]) -> bool:
    return any(key == a or key.startswith(a + "#") for a in allowlist)


def _segmentation_differences() -> set[str]:
    """Ids that medsegdiff and segdiff do not define alike (one-sided or with different values)."""
    a, b = _config("medsegdiff"), _config("segdiff")
    return (set(a) ^ set(b)) | {k for k in set(a) & set(b) if a[k] != b[k]}


def _training_differences() -> dict[str, list]:
    """Ids that all three bundles' train and multi_gpu_train configs define, with different values."""
    configs = [_config(b, ("train", "multi_gpu_train")) for b in ("medsegdiff", "segdiff", "palette")]
    shared = set.intersection(*(set(c) for c in configs))
    return {k: [c[k] for c in configs] for k in sorted(shared) if any(c[k] != configs[0][k] for c in configs)}


def test_medsegdiff_and_segdiff_differ_only_in_the_method() -> None:
    differ = sorted(k for k in _segmentation_differences() if not _allowed(k, SEGMENTATION_SPECIFIC))
    assert not differ, differ


def test_every_bundle_trains_with_the_same_set_up() -> None:
    configs = [_config(b, ("train", "multi_gpu_train")) for b in ("medsegdiff", "segdiff", "palette")]
    shared = set.intersection(*(set(c) for c in configs))
    # the set-up itself is shared: optimizer, EMA, the trainer's handlers, initialize, the multi-GPU overrides
    for key in (
        "train#optimizer#_target_",
        "train#train#handlers#ignite.handlers.EMAHandler#model",
        "train#initialize",
        "multi_gpu_train#initialize",
    ):
        assert key in shared, key
    assert sum(k.startswith("train#train#handlers#") for k in shared) >= 10
    differ = {k: v for k, v in _training_differences().items() if not _allowed(k, METHOD_SPECIFIC_TRAINING)}
    assert not differ, differ


@pytest.mark.parametrize(
    "allowlist, differences",
    [(SEGMENTATION_SPECIFIC, _segmentation_differences), (METHOD_SPECIFIC_TRAINING, _training_differences)],
    ids=["segmentation", "training"],
)
def test_every_allowlist_entry_excuses_a_real_difference(allowlist, differences) -> None:
    """An entry that no longer covers a difference is removed, not left to excuse a future one."""
    found = set(differences())
    stale = [a for a in allowlist if not any(_allowed(k, (a,)) for k in found)]
    assert not stale, stale
