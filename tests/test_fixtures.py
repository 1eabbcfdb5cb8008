"""The test session's own process handling: a teardown never leaves a process of ours running."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import stop_process

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period():
    process = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    assert process.stdout.readline().strip() == "ready"
    stop_process(process, group=True, grace=1)
    assert process.returncode == -9
    process.stdout.close()


def test_a_process_that_exits_on_sigterm_is_not_killed():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    stop_process(process, grace=10)
    assert process.returncode == -15
