"""The conditional VAE for next-frame prediction (DESIGN.md, "The model").

Per time step t: the posterior q(z_t | x_t, p_t) sees the CURRENT ground-truth
frame and pose; the decoder sees the PREVIOUS frame, the current pose and z_t.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional

from .blocks import DW, FFN, DEFAULT_SLOPE, Res, conv1x1, conv3x3
from .config import TrainConfig


class RGB_Encoder(nn.Module):
    """Frame 3xHxW -> features F x H x W."""

    def __init__(self, f_dim: int):
        super().__init__()
        f = f_dim
        self.net = nn.Sequential(
            Res(3, f // 8), DW(f // 8, f // 8),
            Res(f // 8, f // 4), DW(f // 4, f // 4),
            Res(f // 4, f // 2), DW(f // 2, f // 2),
            conv3x3(f // 2, f),
        )

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.net(frame)


class Label_Encoder(nn.Module):
    """Pose frame 3xHxW -> features L x H x W."""

    def __init__(self, l_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, l_dim // 2, kernel_size=7),
            nn.BatchNorm2d(l_dim // 2),
            nn.LeakyReLU(DEFAULT_SLOPE),
            Res(l_dim // 2, l_dim),
        )

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        return self.net(pose)


class Gaussian_Predictor(nn.Module):
    """Frame and pose features -> (z, mu, logvar), each N x H x W."""

    def __init__(self, in_ch: int, n_dim: int):
        super().__init__()
        n = n_dim
        self.net = nn.Sequential(
            Res(in_ch, n // 4), DW(n // 4, n // 4),
            Res(n // 4, n // 2), DW(n // 2, n // 2),
            Res(n // 2, n),
            nn.LeakyReLU(DEFAULT_SLOPE),
            conv1x1(n, 2 * n),
        )

    def forward(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor,
                eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(torch.cat([frame_feat, pose_feat], dim=1)).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * eps
        return z, mu, logvar


class Decoder_Fusion(nn.Module):
    """(previous-frame features, pose features, z) -> D x H x W."""

    def __init__(self, in_ch: int, d_out_dim: int):
        super().__init__()
        c, d = in_ch, d_out_dim
        self.net = nn.Sequential(
            DW(c, c), Res(c, c // 4),
            DW(c // 4, c // 2), Res(c // 2, c // 2),
            DW(c // 2, d // 2), conv1x1(d // 2, d),
        )

    def forward(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([frame_feat, pose_feat, z], dim=1))


class Generator(nn.Module):
    """D x H x W -> 3 x H x W: the predicted frame in [0, 1] (sigmoid, the lab's), or with
    `residual` a change in (-1, 1) (tanh) that the model adds to the previous frame."""

    def __init__(self, d_in: int, residual: bool = False):
        super().__init__()
        d = d_in
        self.residual = residual
        self.net = nn.Sequential(
            DW(d, d), Res(d, d // 2),
            DW(d // 2, d // 2), Res(d // 2, d // 4),
            DW(d // 4, d // 4), Res(d // 4, d // 8),
            DW(d // 8, d // 8), conv1x1(d // 8, 3),
            nn.Tanh() if residual else nn.Sigmoid(),
        )

    @property
    def output_conv(self) -> nn.Conv2d:
        return self.net[-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AppearanceAttention(nn.Module):
    """Frame 0's appearance brought to where each pose wants it: every pixel of a pose attends, by
    its pose features, to the pixels of frame 0's pose, and takes a weighted mean of frame 0's
    features there. The skeleton's limbs have fixed colours, so a pixel of the left forearm now can
    find the left forearm in frame 0, wherever the figure has moved, and fetch its clothing's colour;
    a background pixel finds frame 0's background. Output: F/4 x H x W per pose (a few channels of
    appearance: the decoder's input, and so its cost, grows little).

    Colours vary slowly, so the attention runs on a grid POOL times coarser each way (average-pooled
    inputs, the output upsampled bilinearly): POOL**4 times fewer query-key pairs.

    With `colours`, three more output channels: frame 0's pixels themselves fetched by the same
    weights, a picture of the figure in the current pose in frame 0's colours, which no projection
    trained on other colours has to carry."""

    KEY_DIM = 16
    POOL = 2

    def __init__(self, l_dim: int, f_dim: int, colours: bool = False):
        super().__init__()
        self.channels = max(4, f_dim // 4)
        self.colours = colours
        self.out_channels = self.channels + 3 * colours
        self.query = conv1x1(l_dim, self.KEY_DIM)
        self.key = conv1x1(l_dim, self.KEY_DIM)
        self.value = conv1x1(f_dim + 3, self.channels)

    def coarse(self, x: torch.Tensor) -> torch.Tensor:
        return functional.avg_pool2d(x, self.POOL) if min(x.shape[-2:]) >= self.POOL else x

    def forward(self, poses_feat: torch.Tensor, first_pose_feat: torch.Tensor, first_feat: torch.Tensor,
                first_frame: torch.Tensor) -> torch.Tensor:
        """poses_feat [B, S, L, H, W] (S poses of each sequence); frame 0's pose features [B, L, H, W],
        features [B, F, H, W] and pixels [B, 3, H, W]. Returns [B, S, F/4 (+ 3 colours), H, W]."""
        b, s, _, h, w = poses_feat.shape
        query = self.query(self.coarse(_fold(poses_feat)))                       # [B*S, K, h', w']
        grid = query.shape[-2:]
        # [B, 1, S*h'*w', K] queries against [B, 1, h'*w', K] keys: one attention call per batch.
        query = query.unflatten(0, (b, s)).flatten(3).permute(0, 1, 3, 2).reshape(b, 1, -1, self.KEY_DIM)
        key = self.key(self.coarse(first_pose_feat)).flatten(2).transpose(1, 2)[:, None]
        value = self.value(self.coarse(torch.cat([first_feat, first_frame], dim=1)))
        if self.colours:
            value = torch.cat([value, self.coarse(first_frame)], dim=1)
        value = value.flatten(2).transpose(1, 2)[:, None]
        out = functional.scaled_dot_product_attention(query, key, value)        # [B, 1, S*h'*w', C]
        out = out.reshape(b * s, *grid, self.out_channels).permute(0, 3, 1, 2)
        if tuple(grid) != (h, w):
            out = upsample_bilinear(out, (h, w))
        return out.unflatten(0, (b, s))


def _bilinear_weights(size: int, source: int, like: torch.Tensor) -> torch.Tensor:
    """[size, source]: the weights by which bilinear interpolation (align_corners=False) takes each
    output row from the input rows, as functional.interpolate computes them."""
    position = ((torch.arange(size, dtype=like.dtype, device=like.device) + 0.5) * (source / size) - 0.5)
    position = position.clamp(0, source - 1)
    rows = torch.arange(source, dtype=like.dtype, device=like.device)
    return (1 - (position[:, None] - rows[None, :]).abs()).clamp_min(0)


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """functional.interpolate(x, size, mode="bilinear", align_corners=False) of [N, C, h, w], up to
    rounding, as two matrix products: CUDA's interpolation backward adds up with atomics, in a varying
    order, and torch.use_deterministic_algorithms refuses it; a matmul's backward is deterministic."""
    rows = _bilinear_weights(size[0], x.shape[-2], x)
    columns = _bilinear_weights(size[1], x.shape[-1], x)
    return torch.einsum("hi,ncij,wj->nchw", rows, x, columns)


def background_plate(frame: torch.Tensor, pose: torch.Tensor, reach: int = 2) -> torch.Tensor:
    """`frame` [B, 3, H, W] with its figure erased: the static background a moving figure uncovers.

    The figure is where the pose image [B, 3, H, W] (a skeleton on black) is drawn, widened by `reach`
    pixels each way; each of its pixels gets the mean of the unmasked pixels of its row within W/3 of
    it, or of the whole row where none is that near (a normalised convolution along the row: walls and
    floors are rows of one colour, and a gradient across the row is kept where both sides are seen).
    Pixels of a row without any unmasked pixel keep their value."""
    figure = functional.max_pool2d((pose.amax(dim=1, keepdim=True) > 0.05).to(frame.dtype), 2 * reach + 1, 1, reach)
    seen = 1 - figure
    b, c, h, w = frame.shape
    filled, known = frame, seen
    for half in (w // 6, w):
        window = torch.ones(1, 1, 1, 2 * half + 1, dtype=frame.dtype, device=frame.device)
        weight = functional.conv2d(seen, window, padding=(0, half))
        total = functional.conv2d((frame * seen).reshape(b * c, 1, h, w), window, padding=(0, half)).reshape(b, c, h, w)
        mean = total / weight.clamp_min(1e-6)
        filled = torch.where(known > 0, filled, mean)
        known = torch.maximum(known, (weight > 0).to(frame.dtype))
    return filled


def init_weights(model: nn.Module) -> None:
    """Start every residual block as its skip path.

    Convolutions get variance-preserving weights (std 1/sqrt(fan_in)) and zero
    biases, and the last convolution of each residual branch starts at zero,
    so at initialisation the network is a chain of well-scaled projections
    instead of a deep stack that shrinks its input. With PyTorch's default
    init the model first has to learn to pass the previous frame through at
    all; this init reaches a given training PSNR in several times fewer steps
    (bench/init_speed.py). The architecture is unchanged.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            nn.init.normal_(module.weight, std=fan_in ** -0.5)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, (Res, DW)):
            nn.init.zeros_(module.branch_output.weight)
        elif isinstance(module, FFN):
            nn.init.zeros_(module.project.weight)
        elif isinstance(module, Generator) and module.residual:
            # A residual model starts as the exact identity: its first rollout repeats frame 0.
            nn.init.zeros_(module.output_conv.weight)


def _fold(x: torch.Tensor) -> torch.Tensor:
    """[B, T, C, H, W] -> [B*T, C, H, W]."""
    return x.reshape(-1, *x.shape[2:])


def _in_passes(module, size: int, *inputs: torch.Tensor):
    """module(*inputs) over dim 0 in slices of at most `size`, outputs concatenated (tuples element-wise)."""
    if inputs[0].shape[0] <= size:
        return module(*inputs)
    outputs = [module(*(x[i:i + size] for x in inputs)) for i in range(0, inputs[0].shape[0], size)]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)


OUTPUTS = ("sigmoid", "residual")


class VideoCVAE(nn.Module):
    """The five modules plus the two ways of running them: training and rollout.

    Options beyond the lab's architecture (all off by default):
    - `output="residual"`: the prediction is clamp(previous frame + tanh change, 0, 1) instead of a
      sigmoid of the decoder, so copying the previous frame is exact (and is the untrained model);
    - `first_frame=True`: the decoder also sees the encoding of the sequence's first frame, the
      one frame a rollout is given, as a reference for the appearance that the previous
      (predicted) frame may have lost; `first_pose=True` adds the first frame's pose, which tells
      the reference's figure from its background;
    - `previous_pose=True`: the decoder also sees the previous frame's pose, so the motion from
      one pose to the next is given rather than inferred from the previous frame's pixels;
    - `appearance_attention=True`: the decoder also sees frame 0's appearance fetched by attention
      from the current pose to frame 0's pose (AppearanceAttention);
    - `appearance_colours=True` (with appearance_attention): the attention also fetches frame 0's
      pixels, a picture of the figure in the current pose in frame 0's colours;
    - `background_plate=True`: the decoder also sees frame 0 with its figure erased (background_plate),
      so painting the background where the figure leaves needs no memory of the training set's colours.
    Each adds its channels (F, L, F/4) to Decoder_Fusion's input; each picture (the fetched colours,
    the plate) adds 6: itself and the previous frame's difference from it, which a residual output
    can copy whatever the colours.
    """

    PICTURE_CHANNELS = 6  # a picture and the previous frame minus it

    def __init__(self, f_dim: int = 128, l_dim: int = 32, n_dim: int = 12, d_out_dim: int = 192,
                 output: str = "sigmoid", first_frame: bool = False, first_pose: bool = False,
                 previous_pose: bool = False, appearance_attention: bool = False, appearance_colours: bool = False,
                 background_plate: bool = False):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if appearance_colours and not appearance_attention:
            raise ValueError("appearance_colours needs appearance_attention: its weights fetch the colours")
        self.n_dim = n_dim
        self.residual = output == "residual"
        self.first_frame, self.first_pose, self.previous_pose = first_frame, first_pose, previous_pose
        self.appearance = AppearanceAttention(l_dim, f_dim, appearance_colours) if appearance_attention else None
        self.background_plate = background_plate
        self.pictures = appearance_colours + background_plate   # the last 3 * pictures context channels
        self.frame_encoder = RGB_Encoder(f_dim)
        self.label_encoder = Label_Encoder(l_dim)
        self.gaussian_predictor = Gaussian_Predictor(f_dim + l_dim, n_dim)
        context = f_dim * first_frame + l_dim * (first_pose + previous_pose)
        if self.appearance is not None:
            context += self.appearance.channels
        context += self.PICTURE_CHANNELS * self.pictures
        self.decoder_fusion = Decoder_Fusion(f_dim + l_dim + n_dim + context, d_out_dim)
        self.generator = Generator(d_out_dim, residual=self.residual)
        init_weights(self)

    @classmethod
    def from_config(cls, config: TrainConfig) -> "VideoCVAE":
        return cls(config.f_dim, config.l_dim, config.n_dim, config.d_out_dim, output=config.output,
                   first_frame=config.first_frame, first_pose=config.first_pose,
                   previous_pose=config.previous_pose, appearance_attention=config.appearance_attention,
                   appearance_colours=config.appearance_colours, background_plate=config.background_plate)

    def context(self, first_feat: torch.Tensor, first_pose_feat: torch.Tensor,
                previous_pose_feat: torch.Tensor, appearance: torch.Tensor | None = None,
                plate: torch.Tensor | None = None) -> torch.Tensor | None:
        """What the options add to the decoder's input, concatenated over channels (None: nothing).
        The pictures come last (the appearance's colours, then the plate): decode() adds the previous
        frame's difference from each."""
        parts = [x for x, on in ((first_feat, self.first_frame), (first_pose_feat, self.first_pose),
                                 (previous_pose_feat, self.previous_pose), (appearance, self.appearance is not None),
                                 (plate, self.background_plate))
                 if on]
        return torch.cat(parts, dim=-3) if parts else None

    def decode(self, prev: torch.Tensor, prev_feat: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted frame from the previous frame `prev` (pixels), its features, the pose's, z
        and the options' `context`."""
        if self.pictures:
            pictures = context[:, -3 * self.pictures:]
            context = torch.cat([context, prev.repeat(1, self.pictures, 1, 1) - pictures], dim=1)
        if context is not None:
            prev_feat = torch.cat([prev_feat, context], dim=1)
        out = self.generator(self.decoder_fusion(prev_feat, pose_feat, z))
        return (prev + out).clamp(0, 1) if self.residual else out

    def reconstruct(self, frames: torch.Tensor, poses: torch.Tensor, teacher_forcing: bool,
                    generator: torch.Generator | None = None, frames_per_pass: int | None = None,
                    detach_feedback: bool = False,
                    reference: torch.Tensor | None = None,
                    eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass over sequences [B, T, 3, H, W].

        Returns the predictions of frames 1..T-1, [B, T-1, 3, H, W], and the KL
        of each step, [T-1] (summed over latent elements, divided by B).
        Ground-truth frames and poses are encoded once, batched over time;
        with teacher forcing the whole decode is batched over time too, in
        passes of at most `frames_per_pass` frames (None: all at once). On a
        CPU small passes win: full-resolution activations of many frames at
        once overflow the caches (2x slower at the default dims).
        Without teacher forcing each prediction is fed back as the next previous
        frame; `detach_feedback` cuts the gradient through that path, so each step
        learns to correct the frame it is given rather than to shape it.
        With `first_frame`, `reference` [B, 3, H, W] is the frame the decoder is
        also conditioned on (default: frame 0 as given): the trainer passes the
        clean frame 0 when the frames the model is conditioned on carry noise.
        """
        b, t = frames.shape[:2]
        chunk = frames_per_pass or b * t
        frame_feat = _in_passes(self.frame_encoder, chunk, _fold(frames)).unflatten(0, (b, t))
        # Poses in one pass: the label encoder's batch norm must see the whole batch.
        pose_feat = self.label_encoder(_fold(poses)).unflatten(0, (b, t))
        if eps is None:
            eps = self.latent_noise(frames, generator)
        z, mu, logvar = _in_passes(self.gaussian_predictor, chunk, _fold(frame_feat[:, 1:]),
                                   _fold(pose_feat[:, 1:]), eps)
        # KL(q || N(0, I)) per element; the lab sums it over the latent and divides by B.
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).unflatten(0, (b, t - 1))
        kl_per_step = kl.sum(dim=(0, 2, 3, 4)) / b
        z = z.unflatten(0, (b, t - 1))
        uses_first = self.first_frame or self.appearance is not None
        first = frame_feat[:, 0] if reference is None or not uses_first else self.frame_encoder(reference)
        steps = (b, t - 1, -1, *frames.shape[3:])
        appearance = None
        if self.appearance is not None:
            first_pixels = frames[:, 0] if reference is None else reference
            appearance = self.appearance(pose_feat[:, 1:], pose_feat[:, 0], first, first_pixels)
        plate = None
        if self.background_plate:
            plate = background_plate(frames[:, 0] if reference is None else reference, poses[:, 0])
            plate = plate[:, None].expand(b, t - 1, *plate.shape[1:])
        context = self.context(first[:, None].expand(steps), pose_feat[:, :1].expand(steps), pose_feat[:, :-1],
                               appearance, plate)

        if teacher_forcing:
            # Time-major order so each pass holds whole steps of the batch.
            def fold_time(x: torch.Tensor) -> torch.Tensor:
                return _fold(x.transpose(0, 1))
            inputs = [fold_time(x) for x in (frames[:, :-1], frame_feat[:, :-1], pose_feat[:, 1:], z)]
            if context is not None:
                inputs.append(fold_time(context))
            pred = _in_passes(self.decode, chunk, *inputs)
            return pred.unflatten(0, (t - 1, b)).transpose(0, 1), kl_per_step

        preds = []
        prev, prev_feat = frames[:, 0], frame_feat[:, 0]
        for step in range(1, t):
            pred = self.decode(prev, prev_feat, pose_feat[:, step], z[:, step - 1],
                               None if context is None else context[:, step - 1])
            preds.append(pred)
            if step < t - 1:
                prev = pred.detach() if detach_feedback else pred
                prev_feat = self.frame_encoder(prev)
        return torch.stack(preds, dim=1), kl_per_step

    def latent_noise(self, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The standard-normal draws of a training pass over `frames` [B, T, ...]: [B * (T-1), N, H, W]."""
        b, t = frames.shape[:2]
        return torch.randn((b * (t - 1), self.n_dim, *frames.shape[3:]), generator=generator, device=frames.device,
                           dtype=frames.dtype)

    def frame_step(self, prev: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor,
                   context: torch.Tensor | None, quantize: bool) -> torch.Tensor:
        """One rollout frame: from the previous frame `prev` [B, 3, H, W], the pose's features, K latent
        draws z [K * B, N, H, W] (all K in one batched forward) and the options' context, the mean of
        the K predictions [B, 3, H, W], rounded to 8 bits with `quantize`. The same shapes every frame
        of a rollout: the part that models.compiled compiles."""
        k = z.shape[0] // prev.shape[0]
        prev_feat = self.frame_encoder(prev).repeat(k, 1, 1, 1)
        pred = self.decode(prev.repeat(k, 1, 1, 1), prev_feat, pose_feat.repeat(k, 1, 1, 1), z,
                           None if context is None else context.repeat(k, 1, 1, 1))
        frame = pred.unflatten(0, (k, prev.shape[0])).mean(dim=0)
        return frame.mul(255).round().div(255) if quantize else frame

    @torch.no_grad()
    def rollout(self, first_frame: torch.Tensor, poses: torch.Tensor, samples: int = 1,
                generator: torch.Generator | None = None, pose_chunk: int = 64,
                zero_z: bool = False, quantize: bool = False, frame_step: Callable | None = None) -> torch.Tensor:
        """Autoregressive generation from the first frame [B, 3, H, W] through poses [B, T, 3, H, W].

        z ~ N(0, I) (or z = 0, the prior's mean, with `zero_z`); each step decodes
        `samples` draws in one batched forward and feeds their mean back as the
        next previous frame, rounded to 8 bits with `quantize` (as a stored
        frame would be). `frame_step`: this model's `frame_step`, or a compiled
        one (models.compiled). Returns frames [B, T, 3, H, W] whose frame 0 is `first_frame`.
        """
        frame_step = frame_step or self.frame_step
        b, t = poses.shape[:2]
        k = 1 if zero_z else samples    # every sample of z = 0 is the same
        out = torch.empty_like(poses)
        out[:, 0] = first_frame
        prev = first_frame
        first_feat = self.frame_encoder(first_frame) if self.first_frame or self.appearance is not None else None
        previous_pose_feat = first_pose_feat = self.label_encoder(poses[:, 0]) if self.first_pose or \
            self.previous_pose or self.appearance is not None else None
        plate = background_plate(first_frame, poses[:, 0]) if self.background_plate else None
        z_shape = (k * b, self.n_dim, *poses.shape[3:])
        for start in range(1, t, pose_chunk):
            stop = min(start + pose_chunk, t)
            # Poses are known in advance: encode a chunk of them batched over time.
            pose_feat = self.label_encoder(_fold(poses[:, start:stop])).unflatten(0, (b, stop - start))
            appearance = None if self.appearance is None else \
                self.appearance(pose_feat, first_pose_feat, first_feat, first_frame)
            for step in range(start, stop):
                z = (torch.zeros(z_shape, device=poses.device, dtype=poses.dtype) if zero_z else
                     torch.randn(z_shape, generator=generator, device=poses.device, dtype=poses.dtype))
                context = self.context(first_feat, first_pose_feat, previous_pose_feat,
                                       None if appearance is None else appearance[:, step - start], plate)
                prev = frame_step(prev, pose_feat[:, step - start], z, context, quantize)
                previous_pose_feat = pose_feat[:, step - start]
                out[:, step] = prev
        return out


def initial_model(config: TrainConfig) -> VideoCVAE:
    """The model a run of `config` starts from, on the CPU: its weights drawn from the run's seed, with
    the process's own random state left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VideoCVAE.from_config(config)
