"""Label-efficient segmentation (Baranchuk et al.): DDPM features, the pixel-MLP ensemble, and its members in
the one sampler, the Segmenter and :mod:`medseg.ensemble`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet

from medseg.diffusion import MaskCodec
from medseg.inferers import sample_ensemble
from medseg.label_efficient import (
    DDPMFeatureExtractor,
    DDPMFeatureSegmenter,
    MemberCrossEntropyLoss,
    MemberProcess,
    PixelMLPEnsemble,
    decoder_blocks,
    spread_indices,
    train_pixel_ensemble,
)
from medseg.workflows import Segmenter


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


def tiny_segmenter(num_members: int = 4) -> DDPMFeatureSegmenter:
    return DDPMFeatureSegmenter(
        tiny_ddpm(), 1, 3, blocks=(3, 0), timesteps=(50, 250), num_members=num_members, hidden=(16, 8)
    ).eval()


def test_decoder_blocks_follow_guided_diffusion_numbering() -> None:
    net = tiny_ddpm()
    blocks = decoder_blocks(net)
    # two levels x (num_res_blocks + 1) sub-blocks, deepest (attention) level first
    assert blocks == [*net.up_blocks[0].attentions, *net.up_blocks[1].resnets]


def test_features_are_the_documented_blocks_and_timesteps_with_fixed_noise() -> None:
    net = tiny_ddpm()
    extractor = DDPMFeatureExtractor(net, blocks=(3, 0), timesteps=(50, 250))
    image = torch.rand(2, 1, 16, 12)
    features = extractor(image)
    assert extractor.block_channels == (8, 16)
    assert features.shape == (2, (8 + 16) * 2, 16, 12) and extractor.num_features == 48
    assert torch.equal(features, extractor(image))  # fixed noise: the same features twice
    # by hand: x_t = sqrt(abar) x + sqrt(1 - abar) eps with eps = randn(seed 0) at the image size, shared
    eps = torch.randn((1, 16, 12), generator=torch.Generator().manual_seed(0))
    abar = extractor.scheduler.alphas_cumprod
    captured = {}
    hooks = [
        b.register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out))
        for k, b in enumerate(decoder_blocks(net))
    ]
    offset = 0
    for t in (50, 250):
        x_t = abar[t].sqrt() * (2 * image - 1) + (1 - abar[t]).sqrt() * eps
        net(x_t, torch.full((2,), t))
        for block, width in ((3, 8), (0, 16)):
            want = F.interpolate(captured[block], size=(16, 12), mode="bilinear", align_corners=False)
            torch.testing.assert_close(features[:, offset : offset + width], want, atol=1e-5, rtol=1e-5)
            offset += width
    for h in hooks:
        h.remove()
    assert offset == features.shape[1]


def test_feature_choices_are_checked() -> None:
    with pytest.raises(ValueError, match=r"blocks must lie in 0\.\.3"):
        DDPMFeatureExtractor(tiny_ddpm(), blocks=(4,))
    with pytest.raises(ValueError, match="timesteps must lie"):
        DDPMFeatureExtractor(tiny_ddpm(), blocks=(0,), timesteps=(1000,))
    with pytest.raises(ValueError, match="must not repeat"):
        DDPMFeatureExtractor(tiny_ddpm(), blocks=(1, 1))
    with pytest.raises(ValueError, match="expected an image"):
        DDPMFeatureExtractor(tiny_ddpm(), blocks=(0,))(torch.rand(1, 2, 8, 8))


def test_member_process_gives_each_item_its_member_index() -> None:
    process = MemberProcess(3)
    gens = [torch.Generator() for _ in range(6)]
    state = process.prior((2, 4, 4), gens, "cpu")
    assert state[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2] and torch.equal(state[4], torch.ones(2, 4, 4))
    assert process.set_timesteps(20, "cpu") == [0]
    out = torch.rand(6, 2, 4, 4)
    assert process.step(out, 0, state, gens).prev_sample is out
    with pytest.raises(ValueError, match="number of pixel classifiers"):
        process.prior((2, 4, 4), gens[:4], "cpu")


def test_member_loss_is_each_members_cross_entropy() -> None:
    logits = torch.randn(5, 2, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    each = [F.cross_entropy(logits[:, m], labels) for m in range(2)]
    assert MemberCrossEntropyLoss()(logits, labels).item() == pytest.approx(sum(each).item() / 2, abs=1e-6)


def test_members_differ_by_initialisation_and_repeat_by_seed() -> None:
    a, b = PixelMLPEnsemble(6, 3, 2, (4,), seed=1), PixelMLPEnsemble(6, 3, 2, (4,), seed=1)
    assert torch.equal(a.members[0][0].weight, b.members[0][0].weight)
    assert not torch.equal(a.members[0][0].weight, a.members[1][0].weight)
    assert a(torch.rand(7, 6)).shape == (7, 2, 3) and a(torch.rand(1, 6, 5, 4)).shape == (1, 2, 3, 5, 4)


def test_sampled_members_are_the_mlps() -> None:
    seg = tiny_segmenter()
    image = torch.rand(2, 1, 8, 12)
    out = sample_ensemble(
        seg, image, seg.sampling_process, 3, ensemble=4, max_batch=3, codec=MaskCodec(3, margin=0.0)
    )
    assert out.members.shape == (2, 4, 3, 8, 12)
    torch.testing.assert_close(out.members, seg.member_probabilities(image), atol=1e-6, rtol=0)


def test_training_fits_the_labelled_pixels() -> None:
    seg = tiny_segmenter(num_members=3)
    image = torch.rand(2, 1, 8, 8)
    label = (image > 0.5).long() + (image > 0.8).long()  # intensity classes the features can see
    before = (seg.member_probabilities(image).argmax(2) == label).float().mean()
    loss = train_pixel_ensemble(seg, {"image": image, "label": label}, max_epochs=30, batch_size=32)
    after = (seg.member_probabilities(image).argmax(2) == label).float().mean()
    assert loss < 0.7 and after > before + 0.2


def test_segmenter_serves_the_mlp_ensemble_through_medseg_ensemble() -> None:
    seg = tiny_segmenter()
    segmenter = Segmenter(
        seg, num_channels=3, divisible_by=2, fusion="majority", ensemble=2, decode_margin=0.0, device="cpu"
    )
    image = torch.rand(1, 8, 12)
    result = segmenter(image)
    members = seg.member_probabilities(image[None])[0]  # (M, C, H, W)
    assert result.members.shape == (4, 3, 8, 12)  # every MLP, whatever ensemble was configured
    torch.testing.assert_close(result.members, members, atol=1e-5, rtol=0)
    votes = F.one_hot(members.argmax(1), 3).sum(0)  # (H, W, C): the paper's per-pixel vote
    assert torch.equal(result.mask[0].long(), votes.argmax(-1))
    mean = members.mean(0)
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum(0)
    each = -(members * members.clamp_min(1e-12).log()).sum(1).mean(0)
    # Baranchuk et al.'s JS uncertainty H(mean) - mean H is the mutual information map
    torch.testing.assert_close(result.uncertainty["mutual_information"][0], entropy - each, atol=1e-4, rtol=0)


def test_spread_indices() -> None:
    assert spread_indices(65, 1) == [32] and spread_indices(8, 4) == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="num_labelled"):
        spread_indices(3, 4)
