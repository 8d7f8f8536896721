"""Where `harness ui` opens the MLflow UI: for each study, its runs page showing the study's trials side by
side (not the parent run and its counters), the best final PSNR first in a column of its own, then the
searched parameters and each trial's state; and, where the study was confirmed, its confirmation runs so.

The MLflow UI (3.x) restores a shared view of an experiment's runs page (the filter, the sort, the columns)
from the experiment tag `mlflow.sharedViewState.KEY`, opened by `#/experiments/ID/runs?viewStateShareKey=KEY`:
the page's own "share" writes such tags, and so does this module, once per view and only when it changed.
`workflowType=machine_learning` opens it with the side bar of model training (runs, models), not the GenAI
one (traces, prompts) that MLflow 3 shows by default."""
from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Experiment, Run

from harness.outputs.names import final_metric, metric_keys

from .locations import Stores, check_tracking_server
from .tracking import ROLE_TAG, SEARCHED_TAG, STATE_TAG, STUDY_TAG

VIEW_TAG = "mlflow.sharedViewState."
WORKFLOW = "workflowType=machine_learning"
# Without it, the UI asks on a first visit what the experiment is for, over the page.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# The runs a study's views show (harness.role), and each view's key.
VIEWS = {"trial": "harness-trials", "confirmation": "harness-confirmation"}
# A confirmation run's tags that say what it confirms (tracking.StudyTracker.start_trial).
CONFIRMATION_TAGS = ("harness.candidate", "harness.confirms", "harness.seed")
# Runs a view's columns are chosen from: enough to see which keys and parameters the study's runs use.
SAMPLE = 200


@dataclass(frozen=True)
class StudyView:
    study: str
    role: str          # the runs it shows: "trial" (the search) or "confirmation"
    path: str          # below the UI's address: #/experiments/ID/runs?viewStateShareKey=KEY&workflowType=...


def study_views(stores: Stores) -> list[StudyView]:
    """Every study's views in the tracking store, their tags written where they changed; by study name."""
    check_tracking_server(stores.tracking_uri, stores.tracking_given_as)
    client = MlflowClient(tracking_uri=stores.tracking_uri)
    views = []
    for experiment in sorted(_study_experiments(client), key=lambda e: e.name):
        for role, key in VIEWS.items():
            runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = '{role}'", max_results=SAMPLE)
            if not runs:
                continue
            _set_tag(client, experiment, VIEW_TAG + key, json.dumps(view_state(role, runs), sort_keys=True))
            _set_tag(client, experiment, KIND_TAG, experiment.tags.get(KIND_TAG) or KIND)
            views.append(StudyView(experiment.name, role,
                                   f"#/experiments/{experiment.experiment_id}/runs?viewStateShareKey={key}&{WORKFLOW}"))
    return views


def view_state(role: str, runs: list[Run]) -> dict:
    """The runs page's state for one role's runs: only they, best final PSNR first (in the key their
    store uses: grouped, or flat in a store written before the groups), then what tells them apart."""
    keys = {key for run in runs for key in run.data.metrics}
    headline = next((key for key in metric_keys(final_metric()) if key in keys), metric_keys(final_metric())[0])
    spread = next((key for key in metric_keys(final_metric() + "_ci95") if key in keys), None)
    searched = sorted({name for run in runs for name in run.data.tags.get(SEARCHED_TAG, "").split(",") if name})
    columns = [f"metrics.`{headline}`", *([f"metrics.`{spread}`"] if spread else []),
               *(f"params.`{name}`" for name in searched),
               *(f"tags.`{tag}`" for tag in (CONFIRMATION_TAGS if role == "confirmation" else ())),
               f"tags.`{STATE_TAG}`"]
    return {"searchFilter": f"tags.`{ROLE_TAG}` = '{role}'", "orderByKey": f"metrics.`{headline}`",
            "orderByAsc": False, "selectedColumns": columns, "runsHiddenMode": "SHOW_ALL"}


def _study_experiments(client: MlflowClient) -> list[Experiment]:
    found, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        found += [e for e in page if STUDY_TAG in e.tags]
        token = page.token
        if not token:
            return found


def _set_tag(client: MlflowClient, experiment: Experiment, key: str, value: str) -> None:
    if experiment.tags.get(key) != value:
        client.set_experiment_tag(experiment.experiment_id, key, value)
