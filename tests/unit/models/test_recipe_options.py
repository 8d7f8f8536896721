"""The recipe options beyond the lab's: each does what it says, and the defaults stay the lab's recipe."""
import math

import pytest
import torch

from models.config import ConfigError, TrainConfig
from models.augment import recolour
from models.cvae import VideoCVAE, background_plate
from models.trainer import Trainer, loss_terms

H, W = 8, 16


def small(**options) -> VideoCVAE:
    torch.manual_seed(0)
    return VideoCVAE(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, **options).eval()


def sequences(b: int = 2, t: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.rand(b, t, 3, H, W, generator=generator), torch.rand(b, t, 3, H, W, generator=generator)


def test_the_defaults_are_the_labs_recipe():
    config = TrainConfig()
    assert (config.output, config.first_frame, config.feedback, config.recon_loss, config.kl_reduction,
            config.lr_schedule, config.lr_warmup, config.rollout_z, config.rollout_quantize, config.colour_augment,
            config.input_noise) == ("sigmoid", False, "attached", "mse", "sum", "constant", 0, "sample", False, False, 0)


@pytest.mark.parametrize("key, value", [("output", "linear"), ("feedback", "cut"), ("recon_loss", "l2"),
                                        ("kl_reduction", "max"), ("lr_schedule", "step"), ("rollout_z", "mean")])
def test_unknown_choice_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"^{key} must be one of"):
        TrainConfig(**{key: value})


@pytest.mark.parametrize("key, value, message", [
    ("partial", 0, "partial must be in (0, 1], got 0"), ("ema", 1, "ema must be in [0, 1), got 1"),
    ("f_dim", 3, "f_dim must be a multiple of 8, got 3"), ("lr", 0, "lr must be > 0, got 0"),
    ("val_max_sequences", 0, "val_max_sequences must be >= 1, got 0"),      # the range of an optional int
    ("height", True, "height must be of type int, got True")])
def test_a_value_out_of_range_names_the_key_and_the_range(key, value, message):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{key: value})
    assert str(caught.value) == message


def test_residual_output_is_exactly_the_previous_frame_when_its_change_is_zero():
    model = small(output="residual")    # the output convolution starts at zero
    frames, poses = sequences()
    rollout = model.rollout(frames[:, 0], poses, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rollout, frames[:, :1].expand_as(frames))    # every frame is frame 0, bit for bit
    pred, _ = model.reconstruct(frames, poses, teacher_forcing=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pred, frames[:, :-1])    # teacher forced: each step copies its previous frame


def test_residual_output_adds_a_bounded_change_and_stays_in_range():
    model = small(output="residual")
    torch.nn.init.normal_(model.generator.output_conv.weight, std=5.0)   # a large change
    prev = torch.rand(2, 3, H, W)
    features = model.frame_encoder(prev)
    pose = model.label_encoder(torch.rand(2, 3, H, W))
    z = torch.zeros(2, 4, H, W)
    change = model.generator(model.decoder_fusion(features, pose, z))
    assert change.abs().max() < 1
    torch.testing.assert_close(model.decode(prev, features, pose, z), (prev + change).clamp(0, 1))


def test_detached_feedback_has_no_gradient_path_into_the_previous_step():
    for detach, expect_path in ((True, False), (False, True)):
        frames, poses = sequences(t=4)
        frames.requires_grad_(True)
        model = small(output="residual")
        torch.nn.init.normal_(model.generator.output_conv.weight, std=0.1)   # away from the identity
        pred, _ = model.reconstruct(frames, poses, teacher_forcing=False, generator=torch.Generator().manual_seed(0),
                                    detach_feedback=detach)
        # Frame 0 reaches the last step only through the fed-back predictions (the posterior sees frames 1..T-1).
        (grad,) = torch.autograd.grad(pred[:, -1].sum(), frames)
        assert bool(grad[:, 0].abs().sum() > 0) == expect_path
        assert grad[:, -1].abs().sum() > 0     # the last step's own posterior input always has a path


def test_first_frame_conditioning_lets_frame_0_change_later_steps():
    frames, poses = sequences()
    other = frames.clone()
    other[:, 0] = torch.rand(2, 3, H, W)
    for first_frame in (True, False):
        model = small(first_frame=first_frame)
        a, _ = model.reconstruct(frames, poses, True, torch.Generator().manual_seed(0))
        b, _ = model.reconstruct(other, poses, True, torch.Generator().manual_seed(0))
        # Step 1's previous frame is frame 0 either way; from step 2 on only the reference differs.
        assert torch.allclose(a[:, 1:], b[:, 1:]) != first_frame
    assert small(first_frame=True).decoder_fusion.net[0].body[0].in_channels == 16 + 8 + 4 + 16


@pytest.mark.parametrize("options", [{"first_frame": True}, {"first_frame": True, "first_pose": True},
                                     {"previous_pose": True}, {"first_frame": True, "first_pose": True,
                                                               "previous_pose": True},
                                     {"appearance_attention": True}, {"first_frame": True,
                                                                      "appearance_attention": True},
                                     {"background_plate": True}, {"first_frame": True, "background_plate": True},
                                     {"appearance_attention": True, "appearance_colours": True},
                                     {"appearance_attention": True, "appearance_colours": True,
                                      "background_plate": True}])
def test_context_options_match_step_by_step_decoding(options):
    """Rollouts and teacher-forced passes against a loop that builds each step's context by hand."""
    model = small(output="residual", **options)
    torch.nn.init.normal_(model.generator.output_conv.weight, std=0.1)
    frames, poses = sequences(b=1, t=4)
    pose_feat = [model.label_encoder(poses[:, step]) for step in range(4)]

    def context(step: int) -> torch.Tensor:
        parts = []
        if options.get("first_frame"):
            parts.append(model.frame_encoder(frames[:, 0]))
        if options.get("first_pose"):
            parts.append(pose_feat[0])
        if options.get("previous_pose"):
            parts.append(pose_feat[step - 1])
        if options.get("appearance_attention"):
            parts.append(appearance(step))
        if options.get("background_plate"):
            parts.append(background_plate(frames[:, 0], poses[:, 0]))  # decode() adds prev - plate
        return torch.cat(parts, dim=1)

    def appearance(step: int) -> torch.Tensor:
        """Attention written out: softmax over frame 0's pixels of query . key / sqrt(K), times value."""
        attention, pool = model.appearance, torch.nn.functional.avg_pool2d
        query = attention.query(pool(pose_feat[step], 2)).flatten(2)[0]          # [K, hw] on the coarse grid
        key = attention.key(pool(pose_feat[0], 2)).flatten(2)[0]
        first = torch.cat([model.frame_encoder(frames[:, 0]), frames[:, 0]], dim=1)
        value = attention.value(pool(first, 2))
        if options.get("appearance_colours"):
            value = torch.cat([value, pool(frames[:, 0], 2)], dim=1)    # decode() adds prev - colours
        value = value.flatten(2)[0]
        weights = torch.softmax(query.T @ key / attention.KEY_DIM ** 0.5, dim=1)    # [hw, hw]
        coarse = (value @ weights.T).reshape(1, -1, H // 2, W // 2)
        return torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)

    out = model.rollout(frames[:, 0], poses, zero_z=True, pose_chunk=2)
    prev = frames[:, 0]
    for step in range(1, 4):
        prev = model.decode(prev, model.frame_encoder(prev), pose_feat[step], torch.zeros(1, 4, H, W), context(step))
        torch.testing.assert_close(out[:, step], prev)

    generator = torch.Generator().manual_seed(3)
    forced, _ = model.reconstruct(frames, poses, True, generator)
    eps = torch.randn((3, 4, H, W), generator=torch.Generator().manual_seed(3))
    for step in range(1, 4):
        z, _, _ = model.gaussian_predictor(model.frame_encoder(frames[:, step]), pose_feat[step], eps[step - 1:step])
        expected = model.decode(frames[:, step - 1], model.frame_encoder(frames[:, step - 1]), pose_feat[step], z,
                                context(step))
        torch.testing.assert_close(forced[:, step - 1], expected, atol=1e-5, rtol=1e-4)


def test_background_plate_erases_the_figure_from_its_row():
    """A wall of one colour per row with a linear brightness gradient, a figure drawn over part of it:
    the plate is the wall again, by hand: masked pixels get the mean of the unmasked ones within W/6."""
    h, w = 10, 24
    wall = torch.linspace(0.2, 0.8, h)[:, None] * torch.linspace(0.9, 1.1, w)[None, :]
    frame = wall.expand(1, 3, h, w).clone()
    pose = torch.zeros(1, 3, h, w)
    pose[0, 1, 4:6, 11] = 1.0                     # a skeleton's limb: rows 4-5, column 11
    frame[0, :, 4:6, 8:15] = torch.tensor([0.9, 0.1, 0.5])[:, None, None]   # the figure, within reach 3
    plate = background_plate(frame, pose, reach=3)
    # Rows 1..8 and columns 8..14 masked (+- 3); column 11's window of +-4 columns sees 7 and 15 only.
    torch.testing.assert_close(plate[0, :, 4, 11], wall[4, [7, 15]].mean().expand(3))
    # Column 8's window (4..12) sees columns 4-7: the mean of those.
    torch.testing.assert_close(plate[0, :, 5, 8], wall[5, 4:8].mean().expand(3))
    # Unmasked pixels and rows are the frame itself.
    torch.testing.assert_close(plate[0, :, 0], frame[0, :, 0])
    torch.testing.assert_close(plate[0, :, 4, :8], frame[0, :, 4, :8])
    # A figure wider than the window is filled from the whole row.
    pose[0, 1, 9, 2:22] = 1.0
    frame[0, :, 9, 1:23] = 0.0                    # masked: columns 1..22
    torch.testing.assert_close(background_plate(frame, pose, reach=1)[0, :, 9, 10], wall[9, [0, 23]].mean().expand(3))


def test_background_plate_adds_the_plate_and_the_difference_from_it():
    assert small(background_plate=True).decoder_fusion.net[0].body[0].in_channels == 16 + 8 + 4 + 6


def test_appearance_colours_fetch_frame_0s_pixels():
    """Attention weights sum to 1: from a frame 0 of one colour every pose fetches exactly that colour,
    and from frame 0's own pose each coarse cell fetches a weighted mean of frame 0's cells."""
    model = small(appearance_attention=True, appearance_colours=True)
    _, poses = sequences(b=1, t=3)
    pose_feat = model.label_encoder(poses[0])                                  # [3, L, H, W]
    colour = torch.tensor([0.9, 0.2, 0.4])
    frame = colour[None, :, None, None].expand(1, 3, H, W)
    fetched = model.appearance(pose_feat[None, 1:], pose_feat[:1], model.frame_encoder(frame), frame)
    assert fetched.shape == (1, 2, 16 // 4 + 3, H, W)
    torch.testing.assert_close(fetched[0, :, -3:], colour[None, :, None, None].expand(2, 3, H, W))
    # The decoder's input: the features, the fetched colours and the previous frame minus them.
    assert model.decoder_fusion.net[0].body[0].in_channels == 16 + 8 + 4 + 16 // 4 + 6
    seen = {}
    model.decoder_fusion.register_forward_hook(lambda _m, args, _o: seen.update(input=args[0]))
    prev = torch.rand(1, 3, H, W)
    context = fetched[:, 0]
    model.decode(prev, model.frame_encoder(prev), pose_feat[1:2], torch.zeros(1, 4, H, W), context)
    torch.testing.assert_close(seen["input"][:, -3:], prev - colour[None, :, None, None])


def test_appearance_colours_need_the_attention():
    with pytest.raises(ConfigError, match="appearance_colours needs appearance_attention"):
        TrainConfig(appearance_colours=True)
    with pytest.raises(ValueError, match="appearance_colours needs appearance_attention"):
        small(appearance_colours=True)


def test_first_pose_needs_the_first_frame():
    with pytest.raises(ConfigError, match="first_pose needs first_frame"):
        TrainConfig(first_pose=True)
    model = small(first_frame=True, first_pose=True, previous_pose=True)
    assert model.decoder_fusion.net[0].body[0].in_channels == 16 + 8 + 4 + 16 + 8 + 8


def test_zero_latent_rollouts_ignore_the_noise_and_the_sample_count():
    model = small()
    frames, poses = sequences()
    a = model.rollout(frames[:, 0], poses, samples=1, generator=torch.Generator().manual_seed(1), zero_z=True)
    b = model.rollout(frames[:, 0], poses, samples=3, generator=torch.Generator().manual_seed(2), zero_z=True)
    torch.testing.assert_close(a, b)
    c = model.rollout(frames[:, 0], poses, samples=1, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, c)


def test_quantized_rollouts_feed_back_8_bit_frames():
    model = small(output="residual")
    torch.nn.init.normal_(model.generator.output_conv.weight, std=0.05)
    frames, poses = sequences()
    first = (frames[:, 0] * 255).round() / 255
    out = model.rollout(first, poses, zero_z=True, quantize=True)
    torch.testing.assert_close(out * 255, (out * 255).round(), atol=1e-4, rtol=0)
    plain = model.rollout(first, poses, zero_z=True)
    assert not torch.equal(out, plain)


def test_quantizing_removes_changes_below_half_a_grey_level():
    model = small(output="residual")
    torch.nn.init.zeros_(model.generator.output_conv.weight)
    model.generator.output_conv.bias.data.fill_(math.atanh(0.4 / 255))   # +0.4 grey levels per step
    frames, poses = sequences(t=20)
    first = (frames[:, 0] * 200).round() / 255       # room to grow below 1
    drifting = model.rollout(first, poses, zero_z=True)
    held = model.rollout(first, poses, zero_z=True, quantize=True)
    torch.testing.assert_close(drifting[:, -1] - first, torch.full_like(first, 19 * 0.4 / 255), atol=1e-5, rtol=0)
    assert torch.equal(held, first[:, None].expand_as(held))


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero(tiny_data, tiny_config):
    config = tiny_config.replace(epochs=3, lr=0.01, lr_schedule="cosine", lr_warmup=4)
    trainer = Trainer(config, tiny_data)
    total = 3 * trainer.steps_per_epoch
    for step in (0, 1, 3, 10, total - 1):
        warm = min(1.0, (step + 1) / 4)
        assert trainer.learning_rate(step) == pytest.approx(0.01 * warm * 0.5 * (1 + math.cos(math.pi * step / total)))
    constant = Trainer(tiny_config.replace(lr=0.01), tiny_data)
    assert {constant.learning_rate(step) for step in range(10)} == {0.01}


def test_loss_terms_follow_their_formulas(tiny_config):
    pred = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1, 1).expand(1, 2, 3, 32, 64)
    target = torch.zeros(1, 2, 3, 32, 64)
    kl_per_step = torch.tensor([2.0, 6.0])
    recon, kl = loss_terms(tiny_config, pred, target, kl_per_step)
    assert (recon.item(), kl.item()) == pytest.approx((0.5 ** 2 + 0.25 ** 2, 8.0))    # the lab's
    recon, kl = loss_terms(tiny_config.replace(recon_loss="l1", kl_reduction="mean"), pred, target, kl_per_step)
    assert (recon.item(), kl.item()) == pytest.approx((0.5 + 0.25, 8.0 / (4 * 32 * 64)))


def test_weight_average_follows_its_formula_and_is_what_validation_scores(tiny_data, tiny_config, tmp_path):
    config = tiny_config.replace(epochs=1, partial=0.5, ema=0.9)
    trainer = Trainer(config, tiny_data, tmp_path)
    before = [p.detach().clone() for p in trainer.averaged.parameters()]
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.optimizer.zero_grad()
    sum(p.sum() for p in trainer.model.parameters()).backward()
    trainer.optimizer.step()
    trainer.update_average(torch.tensor(False))     # a skipped step: the average stays
    for avg, old in zip(trainer.averaged.parameters(), before):
        torch.testing.assert_close(avg, old, rtol=0, atol=0)
    trainer.update_average(torch.tensor(True))
    decay = min(0.9, 2 / 11)     # the ramp's first step
    for avg, old, new in zip(trainer.averaged.parameters(), before, trainer.model.parameters()):
        torch.testing.assert_close(avg, decay * old + (1 - decay) * new)
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.model.parameters()))
    assert trainer.scored_model is trainer.averaged

    trainer.fit()
    from models.checkpoint import load_checkpoint, load_model
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    exported, _ = load_model(tmp_path / "checkpoints" / "last.pt")
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(value, state["averaged_model"][key])
    assert any(not torch.equal(state["averaged_model"][k], state["model"][k]) for k in state["model"])


def test_colour_augmentation_maps_each_sequence_into_range_with_one_affine_map_per_channel():
    frames = torch.rand(6, 4, 3, 8, 16)
    frames[:, :, :, 0, 0], frames[:, :, :, 0, 1] = 0.0, 1.0       # each channel spans all of [0, 1]
    out = recolour(frames, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    for b in range(6):
        for c in range(3):
            # An affine function of exactly one input channel, the same for all frames of the sequence.
            fits = []
            for source in range(3):
                x, y = frames[b, :, source].flatten(), out[b, :, c].flatten()
                slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
                fits.append((y - (y.mean() + slope * (x - x.mean()))).abs().max().item())
                if fits[-1] < 1e-5:
                    assert 0.5 - 1e-6 <= abs(slope) <= 1 + 1e-6
            assert sum(f < 1e-5 for f in fits) == 1
    assert not torch.allclose(out, frames)


def test_colour_augment_share_keeps_the_other_sequences_and_leaves_share_one_as_it_was():
    frames = torch.rand(40, 3, 3, 4, 8)
    everything = recolour(frames, torch.Generator().manual_seed(3))
    assert torch.equal(everything, recolour(frames, torch.Generator().manual_seed(3), share=1.0))
    half = recolour(frames, torch.Generator().manual_seed(3), share=0.5)
    kept = [torch.equal(half[b], frames[b]) for b in range(40)]
    for b in range(40):         # a sequence is kept whole or remapped as the full-share call remaps it
        assert kept[b] or torch.equal(half[b], everything[b])
    assert 8 <= sum(kept) <= 32


def test_colour_augment_share_needs_colour_augment():
    with pytest.raises(ConfigError, match="^colour_augment_share needs colour_augment"):
        TrainConfig(colour_augment_share=0.5)
    assert TrainConfig(colour_augment=True, colour_augment_share=0.5).colour_augment_share == 0.5
