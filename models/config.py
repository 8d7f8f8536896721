"""Training configuration: plain values, one place, saved with every checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .schedules import KL_SCHEDULES

KL_ANNEAL_TYPES = tuple(KL_SCHEDULES)
# Fields that take one of a few words; the first is the default (the lab's recipe).
CHOICES = {
    "kl_anneal_type": KL_ANNEAL_TYPES,
    "output": ("sigmoid", "residual"),
    "feedback": ("attached", "detached"),
    "recon_loss": ("mse", "l1"),
    "kl_reduction": ("sum", "mean"),
    "lr_schedule": ("constant", "cosine"),
    "rollout_z": ("sample", "zero"),
}

# The lab's loss convention, recorded in every config so results stay comparable.
LOSS_CONVENTION = (
    "recon: MSE mean over pixels; KL: sum over latent elements / batch size; "
    "both summed over the time steps 1..T-1 of a sequence"
)


def _option(default: Any, help: str) -> Any:
    """A config field with the help text the CLI shows for it."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # data
    data: str | None = _option(None, "Data root in the lab layout; unset: the built-in synthetic set.")
    height: int = _option(32, "Frame height in pixels; every frame must have it.")
    width: int = _option(64, "Frame width in pixels; every frame must have it.")
    train_vi_len: int = _option(16, "Frames per training sequence (non-overlapping runs of the train folder).")
    val_vi_len: int = _option(630, "Frames per validation rollout (runs of the val folder); the final rollout's length.")
    val_epoch_len: int | None = _option(None, "Frames of the per-epoch validation rollout, a prefix of each validation "
                                              "sequence; the full val_vi_len rollout then runs once at the end "
                                              "(unset: val_vi_len every epoch).")
    val_max_sequences: int | None = _option(None, "Use at most this many validation sequences (unset: all).")
    partial: float = _option(1.0, "Fraction of the training sequences used, in (0, 1].")
    # model widths (DESIGN.md: F, L, N, D)
    f_dim: int = _option(128, "RGB_Encoder output channels F (multiple of 8).")
    l_dim: int = _option(32, "Label_Encoder output channels L (even).")
    n_dim: int = _option(12, "Latent channels N (multiple of 4).")
    d_out_dim: int = _option(192, "Decoder_Fusion output channels D (multiple of 8).")
    # optimisation
    epochs: int = _option(70, "Number of training epochs.")
    batch_size: int = _option(2, "Sequences per training batch.")
    lr: float = _option(1e-3, "Adam learning rate.")
    grad_clip: float = _option(1.0, "Gradient-norm clipping threshold.")
    w_recon: float = _option(1.0, "Weight of the reconstruction (MSE) term.")
    w_kl: float = _option(1.0, "Weight of the KL term (on top of the annealed beta).")
    input_noise: float = _option(0.0, "Noise augmentation: the frames the model is conditioned on in training get "
                                      "Gaussian noise of a std drawn per sequence in [0, input_noise] (the loss "
                                      "targets clean frames), so it learns to correct its own errors in a rollout; "
                                      "0: the lab's recipe.")
    colour_augment: bool = _option(False, "Colour augmentation: each training sequence's frames (inputs and "
                                          "targets, not the poses) go through one random map of each channel's "
                                          "[0, 1] into itself (scale 0.5-1, maybe inverted, offset) and a random "
                                          "channel order, so appearance the training videos lack is not new.")
    # recipe options beyond the lab's; each default is the lab's recipe
    output: str = _option("sigmoid", "Decoder output: sigmoid (the lab's), or residual: the previous frame plus a "
                                     "tanh-bounded change, clamped to [0, 1], so that copying a frame is exact.")
    first_frame: bool = _option(False, "Condition the decoder on the first frame's encoding as well (a rollout is "
                                       "given frame 0): a reference for the appearance.")
    first_pose: bool = _option(False, "With first_frame: the decoder also sees the first frame's pose, which tells "
                                      "the reference's figure from its background.")
    previous_pose: bool = _option(False, "The decoder also sees the previous frame's pose, so the motion between "
                                         "two poses is given rather than read off the previous frame's pixels.")
    feedback: str = _option("attached", "Without teacher forcing, the prediction fed back as the next previous frame "
                                        "keeps its gradient (attached) or not (detached).")
    recon_loss: str = _option("mse", "Reconstruction term: mse (the lab's) or l1, a mean over pixels either way.")
    kl_reduction: str = _option("sum", "KL term: sum over the latent elements / batch size (the lab's), or mean "
                                       "per latent element.")
    lr_schedule: str = _option("constant", "Learning rate over the run: constant (the lab's) or cosine, decaying "
                                           "to 0 at the last step.")
    ema: float = _option(0.0, "Decay per step of an exponential moving average of the weights (e.g. 0.99); the "
                              "average is the model that validation scores and checkpoints export. 0: off (the lab's).")
    lr_warmup: int = _option(0, "Steps of linear learning-rate warm-up from 0 at the start of training.")
    # KL annealing
    kl_anneal_type: str = _option("Cyclical", f"KL beta schedule: {', '.join(KL_ANNEAL_TYPES)}.")
    kl_anneal_cycle: int = _option(10, "Number of cycles of the Cyclical schedule.")
    kl_anneal_ratio: float = _option(1.0, "Fraction of a cycle (or of the run) over which beta rises, in (0, 1].")
    # teacher forcing
    tfr: float = _option(1.0, "Initial teacher-forcing ratio, in [0, 1].")
    tfr_sde: int = _option(10, "Epoch from which the teacher-forcing ratio decays.")
    tfr_d_step: float = _option(0.1, "Teacher-forcing ratio decrease per epoch (floor 0).")
    # validation
    val_samples: int = _option(1, "Latent samples K averaged per rollout step (one batched forward).")
    rollout_z: str = _option("sample", "Latent of each rollout step: sample (z ~ N(0, I), the lab's) or zero "
                                       "(the prior's mean; val_samples is then moot).")
    rollout_quantize: bool = _option(False, "Round each frame fed back in a rollout to 8 bits, as a stored frame is: "
                                            "changes below half a grey level vanish instead of adding up.")
    baselines: bool = _option(True, "Score the repeat-first-frame and untrained-model baselines before training.")
    # run
    seed: int = _option(0, "Seed for initialisation, batch order, teacher forcing and noise.")
    device: str = _option("auto", "Torch device: auto (CUDA when available), cpu, cuda, cuda:1, ...")
    loss_convention: str = _option(LOSS_CONVENTION, "Recorded loss convention (informational).")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self._check_types()
        positive = ("height", "width", "f_dim", "l_dim", "n_dim", "d_out_dim", "epochs",
                    "batch_size", "kl_anneal_cycle", "val_samples")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if self.lr_warmup < 0:
            raise ConfigError(f"lr_warmup must be >= 0, got {self.lr_warmup}")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.train_vi_len < 2 or self.val_vi_len < 2:
            raise ConfigError("train_vi_len and val_vi_len must be >= 2 (frame 0 is given, frame 1 is predicted)")
        if self.val_epoch_len is not None and not 2 <= self.val_epoch_len <= self.val_vi_len:
            raise ConfigError(f"val_epoch_len must be in [2, val_vi_len={self.val_vi_len}], got {self.val_epoch_len}")
        for key in ("f_dim", "d_out_dim"):
            if getattr(self, key) % 8:
                raise ConfigError(f"{key} must be a multiple of 8, got {getattr(self, key)}")
        if self.l_dim % 2 or self.n_dim % 4:
            raise ConfigError(f"l_dim must be even and n_dim a multiple of 4, got {self.l_dim}, {self.n_dim}")
        if not 0 < self.partial <= 1:
            raise ConfigError(f"partial must be in (0, 1], got {self.partial}")
        if not 0 < self.kl_anneal_ratio <= 1:
            raise ConfigError(f"kl_anneal_ratio must be in (0, 1], got {self.kl_anneal_ratio}")
        for key, words in CHOICES.items():
            if getattr(self, key) not in words:
                raise ConfigError(f"{key} must be one of {', '.join(words)}, got {getattr(self, key)!r}")
        if not 0 <= self.tfr <= 1 or self.tfr_d_step < 0 or self.tfr_sde < 0:
            raise ConfigError("tfr must be in [0, 1], tfr_d_step and tfr_sde >= 0")
        for key in ("lr", "grad_clip", "w_recon"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("w_kl", "input_noise"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.first_pose and not self.first_frame:
            raise ConfigError("first_pose needs first_frame: it locates the figure in the first frame")
        if self.val_max_sequences is not None and self.val_max_sequences < 1:
            raise ConfigError(f"val_max_sequences must be >= 1, got {self.val_max_sequences}")

    def _check_types(self) -> None:
        """Reject wrong types early (configs also come from YAML and the CLI)."""
        accepted = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            base, _, optional = str(f.type).partition(" | ")
            if value is None and optional == "None":
                continue
            if (isinstance(value, bool) and base != "bool") or not isinstance(value, accepted[base]):
                raise ConfigError(f"{f.name} must be of type {f.type}, got {value!r}")
            if base == "float":
                setattr(self, f.name, float(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
