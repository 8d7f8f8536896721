"""MLflow logging for sweeps: one experiment and one parent run per study, one nested run per trial.

Free of torch and the trainer (readers of a store use it); what a training run sends while it
trains is harness.worker.mlflow_logger's."""
from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from harness.errors import UsageError
from harness.outputs.names import (CHECKPOINT_ARTIFACT, CHECKPOINT_FOLDER, CHECKPOINTS_DIR, CONFIRMED_CSV,
                                   LAST_CHECKPOINT, RUN_FILES, confirm_run_name, metric_key, study_metric, trial_name)
from .locations import Stores, check_tracking_server, prepare_sqlite, sqlite_path, store_lock
from .sqlite_files import check_sqlite_file

STUDY_TAG = "harness.study"
ROLE_TAG = "harness.role"          # "study" (parent), "trial" or "confirmation"
TRIAL_TAG = "harness.trial"
STATE_TAG = "harness.state"        # RUNNING, then COMPLETE, PRUNED or FAIL
STOPPED_TAG = "harness.stopped"    # on a parent run the last worker left unfinished: why, and what remains
SEARCHED_TAG = "harness.searched"  # the params the sampler chose, comma-separated
# Each Optuna/MLflow state of a finished trial, as the MLflow run status it ends with.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
# MLflow's log_batch takes at most 1000 metrics per call.
BATCH = 1000
# How a unique-key collision reads in MLflow's errors (PostgreSQL, SQLite, MySQL), and how often to retry it.
DUPLICATE_KEY_SIGNS = ("UniqueViolation", "duplicate key", "UNIQUE constraint failed", "IntegrityError")
RACE_RETRIES = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


def _race_tolerant(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an MLflow write on the study's parent run, which every worker writes to.

    MLflow's SQL store checks for a tag (or latest-metric) row, then inserts it: two workers writing
    the same key at the same moment collide on the insert with a unique-key error. Retried, the
    later writer finds the row and updates it."""
    for attempt in range(RACE_RETRIES + 1):
        try:
            return call(*args, **kwargs)
        except MlflowException as err:
            if attempt == RACE_RETRIES or not any(sign in str(err) for sign in DUPLICATE_KEY_SIGNS):
                raise
            time.sleep(0.2 * (attempt + 1))


class StudyTracker:
    """The MLflow side of one study; safe to use from several workers at once."""

    def __init__(self, stores: Stores, study_name: str):
        self.stores = stores
        self.study_name = study_name
        check_tracking_server(stores.tracking_uri, stores.tracking_given_as)
        if sqlite_path(stores.tracking_uri) is not None:
            check_sqlite_file(sqlite_path(stores.tracking_uri), stores.store_label(stores.tracking_uri))
        prepare_sqlite(stores.tracking_uri)
        with store_lock(stores.tracking_uri):   # the client opens its store at once; the first opening migrates it
            self.client = MlflowClient(tracking_uri=stores.tracking_uri)
        self.experiment_id = self._experiment()
        self.parent_run_id = self._parent_run()

    # -- study level -----------------------------------------------------------
    def _experiment(self) -> str:
        experiment = self.client.get_experiment_by_name(self.study_name)
        if experiment is None:
            try:
                return self.client.create_experiment(self.study_name, self.stores.artifact_location,
                                                      tags={STUDY_TAG: self.study_name})
            except MlflowException:    # another worker created it first
                experiment = self.client.get_experiment_by_name(self.study_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise UsageError(f"MLflow experiment {self.study_name!r} was deleted; restore it "
                             f"(mlflow experiments restore) or use another study name")
        return experiment.experiment_id

    def _parent_runs(self) -> list:
        runs = self.client.search_runs([self.experiment_id], f"tags.`{ROLE_TAG}` = 'study'")
        return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))

    def _parent_run(self) -> str:
        """The study's parent run. Workers starting together may each create one; all keep the
        oldest and delete their own extra, so every worker ends up with the same parent."""
        runs = self._parent_runs()
        if runs:
            return runs[0].info.run_id
        mine = self.client.create_run(self.experiment_id, run_name=self.study_name,
                                      tags={ROLE_TAG: "study", STUDY_TAG: self.study_name}).info.run_id
        chosen = self._parent_runs()[0].info.run_id
        if chosen != mine:
            self.client.delete_run(mine)
        return chosen

    def study_started(self, spec_text: str, description: str) -> None:
        self.study_resumed()
        _race_tolerant(self.client.set_tag, self.parent_run_id, "mlflow.note.content", description)
        self.client.log_text(self.parent_run_id, spec_text, "study.yaml")

    def log_study_progress(self, step: int, best_value: float | None, counts: dict[str, int]) -> None:
        metrics = [Metric(study_metric(f"trials_{state.lower()}"), count, _now_ms(), step)
                   for state, count in counts.items()]
        if best_value is not None:
            metrics.append(Metric(study_metric("best_psnr"), best_value, _now_ms(), step))
        _race_tolerant(self.client.log_batch, self.parent_run_id, metrics=metrics)

    def log_confirmation(self, rows: list[dict[str, Any]]) -> None:
        """The confirmed ranking on the study's parent run: as a table, and its leader as tags."""
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
        self.client.log_text(self.parent_run_id, table.getvalue(), CONFIRMED_CSV)
        if rows:
            top = rows[0]
            _race_tolerant(self.client.set_tag, self.parent_run_id, "harness.confirmed_leader",
                           f"trial {top['search_trial']}: {top['confirmed_psnr']:.2f} ± {top['ci95']:.2f} dB "
                           f"over {top['seeds']} fresh seeds ({top['params']})")

    def study_finished(self, best_trial: int | None) -> None:
        if best_trial is not None:
            _race_tolerant(self.client.set_tag, self.parent_run_id, "harness.best_trial", str(best_trial))
        _race_tolerant(self.client.set_terminated, self.parent_run_id, "FINISHED")

    def study_stopped(self, why: str) -> None:
        """The last worker left the study unfinished: its parent run ends KILLED, saying why and what remains."""
        _race_tolerant(self.client.set_tag, self.parent_run_id, STOPPED_TAG, why)
        _race_tolerant(self.client.set_terminated, self.parent_run_id, "KILLED")

    def study_resumed(self) -> None:
        """A worker trains the study's trials again: its parent run is RUNNING (a no-op while it is)."""
        parent = self.client.get_run(self.parent_run_id)
        if parent.info.status != "RUNNING":
            _race_tolerant(self.client.update_run, self.parent_run_id, status="RUNNING")
        if STOPPED_TAG in parent.data.tags:
            with contextlib.suppress(MlflowException):      # another worker may have cleared it first
                self.client.delete_tag(self.parent_run_id, STOPPED_TAG)

    # -- trial level -----------------------------------------------------------
    def start_trial(self, trial_number: int, config: dict[str, Any], searched: list[str],
                    confirmation: dict[str, Any] | None = None) -> str:
        """A trial's run under the study's parent run; a confirmation training's (`confirmation`: the
        candidate, the search trial it confirms, its seed) is tagged as one, beside the search's trials."""
        role, name = ("confirmation", confirm_run_name(trial_number)) if confirmation else ("trial",
                                                                                             trial_name(trial_number))
        extra = {f"harness.{key}": str(value) for key, value in (confirmation or {}).items()}
        run = self.client.create_run(
            self.experiment_id, run_name=name,
            tags={MLFLOW_PARENT_RUN_ID: self.parent_run_id, ROLE_TAG: role, STUDY_TAG: self.study_name,
                  TRIAL_TAG: str(trial_number), STATE_TAG: "RUNNING", SEARCHED_TAG: ",".join(searched), **extra})
        params = [Param(key, str(value)) for key, value in config.items() if key != "loss_convention"]
        self.client.log_batch(run.info.run_id, params=params,
                              tags=[RunTag("harness.loss_convention", config["loss_convention"])])
        return run.info.run_id

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        """Metrics by their flat names (names.py), each logged under its grouped MLflow key (names.metric_key)."""
        now = _now_ms()
        metrics = [Metric(metric_key(name), float(value), now, step) for name, value in values.items()]
        self.client.log_batch(run_id, metrics=metrics)

    def log_series(self, run_id: str, name: str, values: list[float]) -> None:
        """PSNR per frame as one metric with the frame as its step, so MLflow draws it as a curve;
        from frame 1: frame 0 is given, and its capped 100 dB would squash every chart."""
        now, key = _now_ms(), metric_key(name)
        metrics = [Metric(key, float(v), now, step) for step, v in enumerate(values) if step and math.isfinite(v)]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH])

    def log_files(self, run_id: str, folder: Path, prefix: str = "") -> None:
        """A run folder's config, tables, plots, GIF and last checkpoint, whichever exist, under
        the artifact folder `prefix` (one seed of several: `seed_<s>/`)."""
        where = prefix.rstrip("/") or None
        for name in RUN_FILES:
            if (folder / name).is_file():
                self.client.log_artifact(run_id, str(folder / name), where)
        checkpoint = folder / CHECKPOINTS_DIR / LAST_CHECKPOINT
        if checkpoint.is_file():
            self.upload_checkpoint(run_id, checkpoint, prefix)

    def upload_checkpoint(self, run_id: str, checkpoint: Path, prefix: str = "") -> None:
        """A run's latest checkpoint, at the one artifact path it keeps (each upload replaces the
        last): where a retry on any worker finds it, and what `harness best --export` reads."""
        self.client.log_artifact(run_id, str(checkpoint), prefix + CHECKPOINT_FOLDER)

    def set_tags(self, run_id: str, tags: dict[str, object]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def close_lost_trial(self, run_id: str, trial_number: int, message: str) -> None:
        """Close the run of a trial whose worker died, if it is that trial's own run and still open
        (a retry carries its predecessor's run id until it starts its own)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return
        if run.info.status == "RUNNING" and run.data.tags.get(TRIAL_TAG) == str(trial_number):
            self.end_trial(run_id, "FAIL", message)

    def end_trial(self, run_id: str, state: str, message: str = "") -> None:
        self.client.set_tag(run_id, STATE_TAG, state)
        if message:
            self.client.set_tag(run_id, "harness.message", message[:5000])
        self.client.set_terminated(run_id, RUN_STATUS[state])

    def download_checkpoint(self, run_id: str, out_dir: Path, prefix: str = "") -> Path:
        """The run's latest checkpoint, copied into `out_dir`; MlflowException or OSError when it has none."""
        return Path(self.client.download_artifacts(run_id, prefix + CHECKPOINT_ARTIFACT, str(out_dir)))

