"""Progressive distillation: targets checked against the sampler itself and against a hand-derived step."""

from __future__ import annotations

import pytest
import torch

from medseg.diffusion import (
    EnsembleSampler,
    GaussianProcess,
    ProgressiveDistillation,
    SamplingOptions,
    make_scheduler,
    teacher_steps,
)
from medseg.engines import DistillationPrepareBatch


def _teacher(prediction_type: str):
    """A deterministic stand-in network: a smooth function of x_t, t and the image."""

    def net(x, t, image):
        scale = (t.to(x.dtype) / 1000.0).reshape(-1, 1, 1, 1)
        out = torch.tanh(0.7 * x + image) * (1 - 0.5 * scale)
        return out if prediction_type == "sample" else 0.3 * out + 0.5 * x

    return net


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
@pytest.mark.parametrize(("student_steps", "substeps"), [(1, 2), (2, 2), (5, 2), (3, 4)])
def test_a_perfect_student_samples_what_the_teacher_samples_in_n_times_the_steps(
    prediction_type, student_steps, substeps
):
    scheduler = make_scheduler("ddim", prediction_type=prediction_type, clip_sample=False)
    distillation = ProgressiveDistillation(scheduler, student_steps, substeps)
    teacher = _teacher(prediction_type)

    def student(x, t, image):  # outputs exactly its training target at every state
        x_s, s = distillation.teacher_walk(teacher, x, t, image)
        return distillation.target(x, t, x_s, s)

    image = torch.rand(2, 1, 6, 5, generator=torch.Generator().manual_seed(1))
    sampler = EnsembleSampler(GaussianProcess(scheduler), options=SamplingOptions(ensemble=3, seed=4))
    many = sampler.sample(teacher, image, (1, 6, 5), steps=teacher_steps(student_steps, substeps))
    few = sampler.sample(student, image, (1, 6, 5), steps=student_steps)
    # inputs x members x steps
    assert few.network_evaluations == 2 * 3 * student_steps
    assert many.network_evaluations == 2 * 3 * teacher_steps(student_steps, substeps)
    assert torch.allclose(few.samples, many.samples, atol=1e-4)
    assert few.samples.std(dim=1).mean() > 0.01  # the members stay distinct


def test_one_step_target_by_hand():
    # student of 1 step, teacher of 2: t = 999 -> 0 -> clean end; an x0 teacher that returns a constant c
    # lands on c after both steps, so the one-step x0 target is c (sigma at the clean end is 0)
    scheduler = make_scheduler("ddim", prediction_type="sample", clip_sample=False)
    distillation = ProgressiveDistillation(scheduler, student_steps=1, substeps=2)
    assert distillation.student_grid == [999]
    x0 = torch.zeros(4, 1, 3, 3)
    inputs = distillation.training_inputs(
        lambda x, t, image: torch.full_like(x, 0.25),
        x0,
        torch.zeros(4, 1, 3, 3),
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(inputs.model_time, torch.full((4,), 999))
    assert torch.allclose(inputs.target, torch.full_like(x0, 0.25), atol=1e-6)


def test_two_step_target_is_the_ddim_inverse_by_hand():
    # x0* = (x_s - (sigma_s / sigma_t) x_t) / (alpha_s - (sigma_s / sigma_t) alpha_t), from Eq. 12 of DDIM solved
    scheduler = make_scheduler("ddim", prediction_type="sample", clip_sample=False)
    distillation = ProgressiveDistillation(scheduler, student_steps=2, substeps=2)
    t, s = torch.tensor([999]), torch.tensor([0])
    a_t, a_s = float(scheduler.alphas_cumprod[999]), float(scheduler.alphas_cumprod[0])
    x_t, x_s = torch.full((1, 1, 1, 1), 0.8), torch.full((1, 1, 1, 1), -0.3)
    r = ((1 - a_s) / (1 - a_t)) ** 0.5
    expected = (-0.3 - r * 0.8) / (a_s**0.5 - r * a_t**0.5)
    assert distillation.target(x_t, t, x_s, s).item() == pytest.approx(expected, rel=1e-6)


def test_grids_and_refusals():
    assert teacher_steps(1) == 2 and teacher_steps(4) == 7 and teacher_steps(4, substeps=3) == 10
    with pytest.raises(ValueError, match="SpacedDDIMScheduler"):
        ProgressiveDistillation(make_scheduler("ddpm"), 2)
    with pytest.raises(ValueError, match=">= 1"):
        teacher_steps(0)


def test_prepare_batch_gives_distillation_targets_and_freezes_the_teacher():
    teacher = torch.nn.Conv2d(4, 3, 1)  # x_t (3) + image (1) channels -> x0 of 3 classes

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = teacher

        def forward(self, x, t, image):
            return self.conv(torch.cat([x, image], 1))

    net = Net()
    prepare = DistillationPrepareBatch(
        net, make_scheduler("ddim", prediction_type="sample"), student_steps=2, num_channels=3, seed=0
    )
    batch = {"image": torch.rand(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 1, 8, 8))}
    x_t, target, args, kwargs = prepare(batch)
    assert not any(p.requires_grad for p in net.parameters())
    assert x_t.shape == target.shape == (2, 3, 8, 8) and args == ()
    assert set(kwargs["timesteps"].tolist()) <= {999, 0}
    x_s, s = prepare.distillation.teacher_walk(net, x_t, kwargs["timesteps"], kwargs["image"])
    assert torch.allclose(target, prepare.distillation.target(x_t, kwargs["timesteps"], x_s, s))
