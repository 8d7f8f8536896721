"""A worker's heartbeat and grace period: from the environment, checked before any store is touched."""
import pytest

from harness.errors import UsageError
from harness.store.optuna_storage import heartbeat_settings


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
