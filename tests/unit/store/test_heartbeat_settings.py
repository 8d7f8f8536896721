"""A worker's heartbeat and grace period: from the environment, checked before any store is touched."""
import pytest

from harness.errors import UsageError
from harness.store.optuna_storage import heartbeat_settings, idle_poll_seconds


@pytest.mark.parametrize("heartbeat, grace, message", [
    ("0", "30", "$HARNESS_HEARTBEAT_SECONDS must be a whole number of seconds >= 1, got '0'"),
    ("10", "soon", "$HARNESS_GRACE_SECONDS must be a whole number of seconds >= 1, got 'soon'"),
    ("10", "10", "$HARNESS_GRACE_SECONDS (10) must exceed $HARNESS_HEARTBEAT_SECONDS (10)"),
])
def test_bad_heartbeat_settings_are_named_errors(heartbeat, grace, message, monkeypatch):
    monkeypatch.setenv("HARNESS_HEARTBEAT_SECONDS", heartbeat)
    monkeypatch.setenv("HARNESS_GRACE_SECONDS", grace)
    with pytest.raises(UsageError) as error:
        heartbeat_settings()
    assert str(error.value).startswith(message)


def test_heartbeat_settings_default_to_10_and_30_seconds(monkeypatch):
    monkeypatch.delenv("HARNESS_HEARTBEAT_SECONDS", raising=False)
    monkeypatch.delenv("HARNESS_GRACE_SECONDS", raising=False)
    assert heartbeat_settings() == (10, 30)


@pytest.mark.parametrize("heartbeat, poll", [(None, 2), ("1", 1)])
def test_an_idle_worker_looks_at_the_study_every_2_seconds_or_each_heartbeat_if_sooner(heartbeat, poll, monkeypatch):
    """Not at the heartbeat's 10 s: a worker waiting for the others' last trial left up to 10 s after it."""
    monkeypatch.delenv("HARNESS_GRACE_SECONDS", raising=False)
    if heartbeat is None:
        monkeypatch.delenv("HARNESS_HEARTBEAT_SECONDS", raising=False)
    else:
        monkeypatch.setenv("HARNESS_HEARTBEAT_SECONDS", heartbeat)
    assert idle_poll_seconds() == poll
