"""Every name scheme the harness writes and reads back, in one place: the files of a run folder, the
metric keys of a trial's MLflow run, its per-frame curve keys, where one seed of several goes, the
checkpoint artifact. Writers (run folder, MLflow logging) and readers (report, best, resume) import
these; none spells a key itself.
"""
from __future__ import annotations

from models.records import BASELINES, BEST_CHECKPOINT, LAST_CHECKPOINT, MODEL, REGIONS, EpochRecord

# The trainer's own names (models.records), listed here with the harness's.
__all__ = ["BASELINES", "BEST_CHECKPOINT", "LAST_CHECKPOINT", "MODEL", "REGIONS"]

# -- files of a run folder ------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
PSNR_CSV = "psnr_per_frame.csv"
LOSS_PNG = "loss.png"
SCHEDULES_PNG = "schedules.png"
PSNR_PNG = "psnr_per_frame.png"
ROLLOUT_GIF = "rollout.gif"
ERROR_FILE = "error.txt"            # the traceback of a trial that ended in an error
CHECKPOINTS_DIR = "checkpoints"     # the trainer writes LAST_CHECKPOINT and BEST_CHECKPOINT there
# The files of a run folder that go to its MLflow run, in this order.
RUN_FILES = (CONFIG_FILE, METRICS_CSV, METRICS_JSON, PSNR_CSV, LOSS_PNG, SCHEDULES_PNG, PSNR_PNG, ROLLOUT_GIF,
             ERROR_FILE)

# -- names of things in a study -------------------------------------------------------------------
CHECKPOINT_FOLDER = "checkpoint"    # in a trial's MLflow run (under seed_<s>/ for one seed of several)
CHECKPOINT_ARTIFACT = f"{CHECKPOINT_FOLDER}/{LAST_CHECKPOINT}"


def trial_name(number: int) -> str:
    """A trial's folder under trials/STUDY/ and its MLflow run's name."""
    return f"trial-{number:04d}"


# -- the confirmation of a study ------------------------------------------------------------------
# Its trainings are the trials of a second Optuna study beside the search's, so that the search's
# sampler, pruner, counts and best trial never see them; their MLflow runs join the search's experiment.
CONFIRM_SUFFIX = ".confirm"
STAGE_ATTR = "stage"                 # a confirmation trial's user attr: CONFIRM_STAGE
CONFIRM_STAGE = "confirm"
CANDIDATE_ATTR = "candidate"         # ... which candidate it trains ("c0", ...)
CONFIRMS_ATTR = "confirms"           # ... the search trial it confirms
CONFIRM_SEED_ATTR = "confirm_seed"   # ... its one fresh seed
CANDIDATES_ATTR = "candidates"       # the confirmation study's plan: its candidates, ...
CONFIRM_SEEDS_ATTR = "confirm_seeds"  # ... the fresh seeds, in the order rounds take them,
RACE_ATTR = "race"                   # ... min_seeds and racing
STOPPED_PREFIX = "stopped:"          # + candidate id: why racing stopped it
CONFIRMED_CSV = "confirmed_ranking.csv"   # the answer, in the study's parent run and its report folder


def confirm_study_name(study: str) -> str:
    """The Optuna study that holds a study's confirmation trainings."""
    return study + CONFIRM_SUFFIX


def confirm_run_name(number: int) -> str:
    """A confirmation training's MLflow run name (its trial folder is trials/STUDY.confirm/trial-NNNN)."""
    return f"confirm-{number:04d}"


def seed_prefix(seed: int, seeds: int) -> str:
    """Where one seed's metrics and files go in its trial's run: the top level when the trial has
    one seed, else under `seed_<s>/` (the top level then holds the seeds' means)."""
    return "" if seeds == 1 else f"seed_{seed}/"


def seed_folder_name(seed: int) -> str:
    """A seed's folder in the folder of a trial with several seeds."""
    return f"seed-{seed}"


# -- metric keys ----------------------------------------------------------------------------------
# A metric has a flat name wherever a trial's facts are kept (its Optuna user attrs, a run folder's
# metrics.csv and metrics.json): the names below. In MLflow it goes under a group prefix (metric_key), so
# that the chart view sections the ~40 of them: the headline final/psnr and what else a finished trial
# scored in final/, each epoch's validation in val/, its losses in train/, the schedules in schedule/,
# durations in time/, per-frame curves in frames/, the baselines (the same for every trial) in baseline/,
# a study's counters (its parent run) in study/. Stores written before these groups hold the flat names;
# readers try both (metric_keys).
# The metrics of an epoch's record that a trial's run logs per epoch (the regions on data with masks).
EPOCH_METRICS = ("loss", "recon", "kl", "beta", "tfr", "teacher_forced", "lr", "val_psnr", "val_psnr_figure",
                 "val_psnr_background", "val_mse", "seconds", "val_seconds")
# What a finished run logs once.
FINAL_METRICS = ("best_val_psnr", "epochs_run", "final_val_psnr", "final_val_seconds", "final_val_psnr_figure",
                 "final_val_psnr_background")


def epoch_metrics(record: EpochRecord) -> dict[str, float]:
    """The MLflow metrics of one epoch's record."""
    row = record.row()
    return {key: row[key] for key in EPOCH_METRICS if key in row}


def model_metric(region: str | None = None) -> str:
    """The key of the model's validation PSNR: val_psnr, or over a region val_psnr_figure, ..."""
    return "val_psnr" + (f"_{region}" if region else "")


def final_metric(region: str | None = None) -> str:
    """The key of the final rollout's mean PSNR: final_val_psnr, final_val_psnr_figure, ..."""
    return "final_" + model_metric(region)


def baseline_key(name: str, region: str | None = None) -> str:
    """The metric of a baseline's mean PSNR: baseline_repeat_first_frame, baseline_untrained_model_figure, ..."""
    return "baseline_" + name.replace(" ", "_") + (f"_{region}" if region else "")


def curve_key(name: str = MODEL, region: str | None = None) -> str:
    """The key of a PSNR-per-frame series (the frame as its step): the model's val_psnr_per_frame,
    val_psnr_figure_per_frame, ...; a baseline's baseline_repeat_first_frame_per_frame, ..."""
    return (model_metric(region) if name == MODEL else baseline_key(name, region)) + "_per_frame"


def psnr_column(name: str = MODEL, region: str | None = None) -> str:
    """The column of a curve in a run folder's PSNR_CSV: "model", "model figure", "untrained model", ..."""
    return name + (f" {region}" if region else "")


# Flat names the group rules of metric_key do not cover, with their MLflow keys.
_GROUPED = {"loss": "train/loss", "recon": "train/recon", "kl": "train/kl", "beta": "schedule/beta",
            "tfr": "schedule/tfr", "teacher_forced": "schedule/teacher_forced", "lr": "schedule/lr",
            "val_mse": "val/mse", "seconds": "time/epoch_seconds", "best_val_psnr": "final/best_epoch_psnr",
            "last_val_psnr": "final/last_epoch_psnr", "epochs_run": "final/epochs_run"}
PER_FRAME = "_per_frame"


def metric_key(name: str) -> str:
    """The MLflow key of a metric's flat name: val_psnr -> val/psnr, final_val_psnr_figure ->
    final/psnr_figure, baseline_repeat_first_frame -> baseline/repeat_first_frame, val_psnr_per_frame ->
    frames/psnr, seed_3/val_psnr -> seed_3/val/psnr; a name no rule knows goes to trial/."""
    seed, slash, rest = name.rpartition("/")
    if slash:
        return f"{seed}/{metric_key(rest)}"
    if name.endswith(PER_FRAME):
        curve = name.removesuffix(PER_FRAME)
        if curve.startswith("baseline_"):
            return metric_key(curve) + PER_FRAME
        return "frames/" + curve.removeprefix("val_")
    for flat, group in (("final_val_psnr", "final/psnr"), ("val_psnr", "val/psnr"), ("baseline_", "baseline/")):
        if name.startswith(flat):
            return group + name.removeprefix(flat)
    if name in _GROUPED:
        return _GROUPED[name]
    if name.endswith(("_seconds", "_share")):
        return "time/" + name
    return "trial/" + name


def metric_keys(name: str) -> tuple[str, str]:
    """Where a reader finds a metric: its MLflow key, then (a store written before the groups) its flat name."""
    return metric_key(name), name


def study_metric(name: str) -> str:
    """The key of a study's counter on its parent run: study/trials_complete, study/best_psnr, ..."""
    return "study/" + name
