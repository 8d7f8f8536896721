"""A stop signal sets a flag that safe points turn into StopRequested; a second one stops at once."""
import os
import signal
import subprocess
import sys

import pytest

from harness.worker.signals import StopRequested, StopSignals


def test_the_first_signal_is_only_noted_until_a_safe_point():
    with StopSignals() as stop:
        stop.check()                            # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)    # handled in this thread before kill returns
        assert stop.received == signal.SIGTERM
        with pytest.raises(StopRequested, match="interrupted by SIGTERM") as caught:
            stop.check()
    assert caught.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # the handlers are given back


def test_a_second_signal_stops_the_process_at_once():
    code = ("import os, signal, time\n"
            "from harness.worker.signals import StopSignals\n"
            "with StopSignals():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "print('survived')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGTERM and "survived" not in result.stdout
