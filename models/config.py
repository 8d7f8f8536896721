"""Training configuration: plain values, one place, saved with every checkpoint.

A pydantic model: each field's type, range and help text sit on the field, the rules between fields
in one validator, and pydantic's errors become one-line ConfigErrors naming the key. The CLI makes
one option per field (harness.cli.config_options) from the same types and help.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .schedules import KL_SCHEDULES

KL_ANNEAL_TYPES = tuple(KL_SCHEDULES)
# Fields that take one of a few words; the first is the default (the lab's recipe).
KlAnnealType = Literal[KL_ANNEAL_TYPES]     # the registered schedules, in models.schedules
Output = Literal["sigmoid", "residual"]
Feedback = Literal["attached", "detached"]
ReconLoss = Literal["mse", "l1"]
KlReduction = Literal["sum", "mean"]
LrSchedule = Literal["constant", "cosine"]
RolloutZ = Literal["sample", "zero"]
Precision = Literal["fp32", "tf32", "bf16"]
Compile = Literal["off", "step", "rollout"]

# The lab's loss convention, recorded in every config so results stay comparable.
LOSS_CONVENTION = (
    "recon: MSE mean over pixels; KL: sum over latent elements / batch size; "
    "both summed over the time steps 1..T-1 of a sequence"
)


def _option(default: Any, help: str, **limits: float) -> Any:
    """A config field with the help text the CLI shows for it and its range (ge, gt, le, lt, multiple_of)."""
    return Field(default, description=help, **limits)


class TrainConfig(BaseModel):
    """Every value a training run depends on. Strict types (YAML's `true` is no 1, nor "4" a number);
    immutable: `replace` makes a validated copy."""
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", validate_default=True)

    # data
    data: str | None = _option(None, "Data root in the lab layout; unset: the built-in synthetic set.")
    height: int = _option(32, "Frame height in pixels; every frame must have it.", ge=1)
    width: int = _option(64, "Frame width in pixels; every frame must have it.", ge=1)
    train_vi_len: int = _option(16, "Frames per training sequence (non-overlapping runs of the train folder).", ge=2)
    val_vi_len: int = _option(630, "Frames per validation rollout (runs of the val folder); the final rollout's "
                                   "length.", ge=2)
    val_epoch_len: int | None = _option(None, "Frames of the per-epoch validation rollout, a prefix of each validation "
                                              "sequence; the full val_vi_len rollout then runs once at the end "
                                              "(unset: val_vi_len every epoch).")
    val_max_sequences: Annotated[int, Field(ge=1)] | None = _option(
        None, "Use at most this many validation sequences (unset: all).")
    partial: float = _option(1.0, "Fraction of the training sequences used, in (0, 1].", gt=0, le=1)
    # model widths (DESIGN.md: F, L, N, D)
    f_dim: int = _option(128, "RGB_Encoder output channels F (multiple of 8).", ge=1, multiple_of=8)
    l_dim: int = _option(32, "Label_Encoder output channels L (even).", ge=1, multiple_of=2)
    n_dim: int = _option(12, "Latent channels N (multiple of 4).", ge=1, multiple_of=4)
    d_out_dim: int = _option(192, "Decoder_Fusion output channels D (multiple of 8).", ge=1, multiple_of=8)
    # optimisation
    epochs: int = _option(70, "Number of training epochs.", ge=1)
    batch_size: int = _option(2, "Sequences per training batch.", ge=1)
    lr: float = _option(1e-3, "Adam learning rate.", gt=0)
    grad_clip: float = _option(1.0, "Gradient-norm clipping threshold.", gt=0)
    w_recon: float = _option(1.0, "Weight of the reconstruction (MSE) term.", gt=0)
    w_kl: float = _option(1.0, "Weight of the KL term (on top of the annealed beta).", ge=0)
    input_noise: float = _option(0.0, "Noise augmentation: the frames the model is conditioned on in training get "
                                      "Gaussian noise of a std drawn per sequence in [0, input_noise] (the loss "
                                      "targets clean frames), so it learns to correct its own errors in a rollout; "
                                      "0: the lab's recipe.", ge=0)
    colour_augment: bool = _option(False, "Colour augmentation: each training sequence's frames (inputs and "
                                          "targets, not the poses) go through one random map of each channel's "
                                          "[0, 1] into itself (scale 0.5-1, maybe inverted, offset) and a random "
                                          "channel order, so appearance the training videos lack is not new.")
    colour_augment_share: float = _option(1.0, "With colour_augment: the share of training sequences recoloured; the "
                                               "rest keep the data set's own colours.", gt=0, le=1)
    # recipe options beyond the lab's; each default is the lab's recipe
    output: Output = _option("sigmoid", "Decoder output: sigmoid (the lab's), or residual: the previous frame plus a "
                                     "tanh-bounded change, clamped to [0, 1], so that copying a frame is exact.")
    first_frame: bool = _option(False, "Condition the decoder on the first frame's encoding as well (a rollout is "
                                       "given frame 0): a reference for the appearance.")
    first_pose: bool = _option(False, "With first_frame: the decoder also sees the first frame's pose, which tells "
                                      "the reference's figure from its background.")
    previous_pose: bool = _option(False, "The decoder also sees the previous frame's pose, so the motion between "
                                         "two poses is given rather than read off the previous frame's pixels.")
    appearance_attention: bool = _option(False, "The decoder also sees frame 0's appearance where the current pose "
                                                "wants it: each pixel attends by its pose features to frame 0's pose "
                                                "and takes frame 0's features there (the figure's colours follow it).")
    appearance_colours: bool = _option(False, "With appearance_attention: the same attention also fetches frame 0's "
                                              "pixels, and the decoder sees that picture of the figure in frame 0's "
                                              "colours and the previous frame's difference from it.")
    background_plate: bool = _option(False, "The decoder also sees frame 0 with its figure erased (the pixels near "
                                            "frame 0's pose filled from the rest of their row) and the previous "
                                            "frame's difference from it: the background a moving figure uncovers.")
    feedback: Feedback = _option("attached", "Without teacher forcing, the prediction fed back as the next previous frame "
                                        "keeps its gradient (attached) or not (detached).")
    recon_loss: ReconLoss = _option("mse", "Reconstruction term: mse (the lab's) or l1, a mean over pixels either way.")
    kl_reduction: KlReduction = _option("sum", "KL term: sum over the latent elements / batch size (the lab's), or mean "
                                       "per latent element.")
    lr_schedule: LrSchedule = _option("constant", "Learning rate over the run: constant (the lab's) or cosine, decaying "
                                           "to 0 at the last step.")
    ema: float = _option(0.0, "Decay per step of an exponential moving average of the weights (e.g. 0.99); the "
                              "average is the model that validation scores and checkpoints export. 0: off (the lab's).",
                              ge=0, lt=1)
    lr_warmup: int = _option(0, "Steps of linear learning-rate warm-up from 0 at the start of training.", ge=0)
    # KL annealing
    kl_anneal_type: KlAnnealType = _option("Cyclical", f"KL beta schedule: {', '.join(KL_ANNEAL_TYPES)}.")
    kl_anneal_cycle: int = _option(10, "Number of cycles of the Cyclical schedule.", ge=1)
    kl_anneal_ratio: float = _option(1.0, "Fraction of a cycle (or of the run) over which beta rises, in (0, 1].",
                                     gt=0, le=1)
    # teacher forcing
    tfr: float = _option(1.0, "Initial teacher-forcing ratio, in [0, 1].", ge=0, le=1)
    tfr_sde: int = _option(10, "Epoch from which the teacher-forcing ratio decays.", ge=0)
    tfr_d_step: float = _option(0.1, "Teacher-forcing ratio decrease per epoch (floor 0).", ge=0)
    # validation
    val_samples: int = _option(1, "Latent samples K averaged per rollout step (one batched forward).", ge=1)
    rollout_z: RolloutZ = _option("sample", "Latent of each rollout step: sample (z ~ N(0, I), the lab's) or zero "
                                       "(the prior's mean; val_samples is then moot).")
    rollout_quantize: bool = _option(False, "Round each frame fed back in a rollout to 8 bits, as a stored frame is: "
                                            "changes below half a grey level vanish instead of adding up.")
    baselines: bool = _option(True, "Score the repeat-first-frame and untrained-model baselines before training.")
    # run
    seed: int = _option(0, "Seed for initialisation, batch order, teacher forcing and noise.")
    device: str = _option("auto", "Torch device: auto (CUDA when available), cpu, cuda, cuda:1, ...")
    # how it runs on a device (docs/training.md, "On a GPU")
    precision: Precision = _option("fp32", "fp32: IEEE float32 everywhere, TF32 off on GPUs, so a GPU computes what the "
                                          "CPU does; tf32: TF32 matmuls and convolutions on GPUs that have it; bf16: "
                                          "bfloat16 autocast of convolutions and matmuls.")
    deterministic: bool = _option(False, "Deterministic kernels (cuDNN deterministic, torch.use_deterministic_algorithms"
                                         ", CUBLAS_WORKSPACE_CONFIG): a resumed GPU run ends bit-equal to an "
                                         "uninterrupted one; off: cuDNN benchmark mode picks the fastest kernels.")
    compile: Compile = _option("off", "torch.compile: step compiles the training pass (forward and backward) and each "
                                     "rollout frame; rollout only the rollout frames (validation, generate; CUDA "
                                     "graphs on a GPU); off: eager.")
    loss_convention: str = _option(LOSS_CONVENTION, "Recorded loss convention (informational).")


    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(_message(err)) from None

    @model_validator(mode="after")
    def _rules_between_fields(self) -> TrainConfig:
        if self.val_epoch_len is not None and not 2 <= self.val_epoch_len <= self.val_vi_len:
            raise ValueError(f"val_epoch_len must be in [2, val_vi_len={self.val_vi_len}], got {self.val_epoch_len}")
        if self.first_pose and not self.first_frame:
            raise ValueError("first_pose needs first_frame: it locates the figure in the first frame")
        if self.appearance_colours and not self.appearance_attention:
            raise ValueError("appearance_colours needs appearance_attention: its weights fetch the colours")
        if self.colour_augment_share < 1 and not self.colour_augment:
            raise ValueError("colour_augment_share needs colour_augment: it is the share of sequences recoloured")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig(**{**self.model_dump(), **changes})


CHOICES = {name: get_args(f.annotation) for name, f in TrainConfig.model_fields.items()
           if getattr(f.annotation, "__origin__", None) is Literal}


def _message(error: ValidationError) -> str:
    """Pydantic's first error as one line naming the key, in the words the CLI and the specs use."""
    details = error.errors(include_url=False)
    unknown = [d["loc"][0] for d in details if d["type"] == "extra_forbidden"]
    if unknown:
        return f"unknown config key(s): {', '.join(map(str, unknown))}"
    detail = details[0]
    kind, value, ctx = detail["type"], detail["input"], detail.get("ctx", {})
    if kind == "value_error":       # a rule between fields: its message names the keys
        return str(ctx["error"])
    key = str(detail["loc"][0])
    if kind == "literal_error":
        return f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}"
    if kind == "multiple_of":
        return f"{key} must be a multiple of {ctx['multiple_of']}, got {value}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{key} must be {_range(key)}, got {value}"
    annotation = TrainConfig.model_fields[key].annotation
    return f"{key} must be of type {getattr(annotation, '__name__', None) or annotation}, got {value!r}"


def _range(key: str) -> str:
    """A field's allowed range in interval notation ("in (0, 1]") or as one bound (">= 1")."""
    limits = {}
    for constraint in _constraints(TrainConfig.model_fields[key]):
        for bound in ("ge", "gt", "le", "lt"):
            if getattr(constraint, bound, None) is not None:
                limits[bound] = getattr(constraint, bound)
    low = ("[", limits["ge"]) if "ge" in limits else ("(", limits["gt"]) if "gt" in limits else None
    high = (limits["le"], "]") if "le" in limits else (limits["lt"], ")") if "lt" in limits else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
    sign, bound = (">=" if "ge" in limits else ">", low[1]) if low else ("<=" if "le" in limits else "<", high[0])
    return f"{sign} {bound:g}"


def _constraints(field: Any) -> list:
    """A field's range constraints, also those on the int of `Annotated[int, Field(ge=1)] | None`."""
    found = list(field.metadata)
    for member in get_args(field.annotation):
        for inner in getattr(member, "__metadata__", ()):     # the Field(...) of an Annotated member
            found += inner.metadata
    return found
