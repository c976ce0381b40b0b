"""PITI: the task encoder's residual injection, the null condition, two-stage training and normalised CFG."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from medseg.diffusion import Chunk, SamplingContext, make_scheduler
from medseg.translation.piti import (
    NULL_LABEL,
    NormalisedClassifierFreeGuidance,
    PITIModel,
    decode_label_map,
    encode_label_map,
    null_label_map,
    residual_layout,
)
from medseg.translation.piti_testbed import consistency_dice, piti_sample, tissue_label_map, train_piti


def tiny_ddpm() -> DiffusionModelUNet:
    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
    )


def _perturb(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_residual_layout_of_monai_unet() -> None:
    # conv_in, level-0 resnet, its downsampler (level 1), level-1 resnet; the middle block at level 1
    assert residual_layout(tiny_ddpm()) == ([(8, 0), (8, 0), (8, 1), (16, 1)], (16, 1))


def test_fresh_encoder_leaves_the_pretrained_prior_unchanged_and_null_means_no_condition() -> None:
    ddpm = tiny_ddpm()
    _perturb(ddpm)
    model = PITIModel(ddpm, num_classes=3).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    labels = encode_label_map(torch.randint(0, 3, (2, 1, 8, 8)), 3)
    prior = ddpm(x, t)
    torch.testing.assert_close(model(x, t, labels), prior)  # zero-initialised outputs
    _perturb(model.encoder)
    assert not torch.allclose(model(x, t, labels), prior)
    torch.testing.assert_close(model(x, t, null_label_map(labels)), prior)  # null: exactly the prior
    with pytest.raises(ValueError, match="encoded in"):
        model(x, t, torch.full_like(labels, 2.0))


def test_stages_freeze_the_decoder_then_train_both() -> None:
    model = PITIModel(tiny_ddpm(), num_classes=3)
    encoder_only = model.stage("encoder")
    assert {id(p) for p in encoder_only} == {id(p) for p in model.encoder.parameters()}
    assert len(model.stage("joint")) == len(list(model.parameters()))


def _context(model) -> SamplingContext:
    return SamplingContext(None, model, [], torch.zeros(2, dtype=torch.long), (1, 4, 4), [0])


def test_normalised_cfg_with_scale_one_is_the_conditional_prediction() -> None:
    cond, null = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)

    def model(x, time, condition):
        return null if bool((condition == NULL_LABEL).all()) else cond

    chunk = Chunk(torch.zeros(2, 1, 4, 4), 5, torch.zeros(2), torch.zeros(2, 1, 4, 4), slice(0, 2))
    out = NormalisedClassifierFreeGuidance(scale=1.0).guide_output(cond, chunk, _context(model))
    torch.testing.assert_close(out, cond)
    # w = 3: the plain CFG direction, rescaled to the conditional mean and std of each sample
    out = NormalisedClassifierFreeGuidance(scale=3.0).guide_output(cond, chunk, _context(model))
    plain = null + 3.0 * (cond - null)
    for i in range(2):
        want = (plain[i] - plain[i].mean()) / plain[i].std() * cond[i].std() + cond[i].mean()
        torch.testing.assert_close(out[i], want)
        assert out[i].std().item() == pytest.approx(cond[i].std().item(), rel=1e-5)


def test_two_stage_training_and_guided_sampling_run() -> None:
    model = PITIModel(tiny_ddpm(), num_classes=3)
    maps = torch.randint(0, 3, (4, 1, 8, 8))
    items = [{"image": encode_label_map(m, 3), "label": torch.rand(1, 8, 8) * 2 - 1} for m in maps]
    scheduler = make_scheduler("ddpm", num_train_timesteps=100)
    before = {k: v.clone() for k, v in model.ddpm.state_dict().items()}
    out = train_piti(model, items, scheduler, encoder_iterations=2, joint_iterations=0, batch_size=4)
    assert all(torch.equal(before[k], v) for k, v in model.ddpm.state_dict().items())  # decoder frozen
    assert out["encoder_loss"] > 0 and "joint_loss" not in out
    samples = piti_sample(model, maps[:1], make_scheduler("ddim", num_train_timesteps=100), scale=2.0)
    assert samples.shape == (1, 1, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1


def test_label_map_encoding_round_trips_and_null_decodes_negative() -> None:
    labels = torch.arange(5).reshape(1, 1, 1, 5)
    encoded = encode_label_map(labels, 5)
    assert encoded.flatten().tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert torch.equal(decode_label_map(encoded, 5), labels)
    assert (decode_label_map(null_label_map(encoded), 5) < 0).all()


def test_tissue_label_map_and_consistency() -> None:
    head = torch.zeros(1, 1, 4, 4)
    head[..., 1:, :] = 1
    brain = torch.zeros(1, 1, 4, 4)
    brain[..., 2:, :] = 1
    tissue = torch.zeros(1, 3, 4, 4)
    tissue[:, 1, 2] = 1  # GM on row 2
    tissue[:, 2, 3] = 1  # WM on row 3
    labels = tissue_label_map(head, brain, tissue)
    assert labels[0, 0, :, 0].tolist() == [0, 1, 3, 4]
    image = torch.zeros(1, 1, 4, 4)
    image[..., 2, :2] = 0.5  # GM intensity
    image[..., 2, 2:] = 0.1  # CSF intensity: half the GM row is missed
    image[..., 3, :] = 0.9  # WM
    scores = consistency_dice(image, labels, brain)
    assert scores["consistency_dice_wm"] == pytest.approx(1.0) and scores[
        "consistency_dice_gm"
    ] == pytest.approx(2 / 3)
