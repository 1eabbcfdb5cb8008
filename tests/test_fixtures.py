"""The test session's own machinery: a teardown never leaves a process of ours running, and the tests are handed
out longest first without a worker waiting for the shared first run."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import FIRST_RUN_SECONDS, run_order, stop_process

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


def test_the_longest_tests_start_first_and_the_first_runs_sharers_after_enough_other_work():
    seconds = {"quick": 0, "workers": 220, "own-data": 30, "retrain": 105, "fan-out": 130, "recipe": 25,
               "sigkill": 25, "failing": 20, "exp": 25, "two-nodes": 20, "heads": 15, "launcher": 15,
               "features": 12, "other": 0}  # fmt: skip
    sharing = {"workers", "retrain", "fan-out", "failing"}
    order = run_order(list(seconds), seconds.get, sharing.__contains__, workers=2)
    assert order[0] == "workers"  # the longest: it makes the first run
    assert sorted(order) == sorted(seconds)
    before = order[: order.index("fan-out")]
    assert sum(seconds[t] for t in before if t not in sharing) >= 2 * FIRST_RUN_SECONDS  # the other worker is busy
    assert order.index("fan-out") < order.index("features")  # not later than needed
    assert order.index("fan-out") < order.index("retrain") < order.index("failing")  # longest first among them
    assert order[-2:] == ["quick", "other"]  # unmarked ones last, in the order given
    # A sharer shorter than the independent work before it still comes once, after that work.
    seconds["quick-sharer"] = 1
    order = run_order(list(seconds), seconds.get, {*sharing, "quick-sharer"}.__contains__, workers=2)
    assert sorted(order) == sorted(seconds) and order.index("fan-out") < order.index("quick-sharer")
    # Nothing shares the first run: simply longest first.
    assert run_order(["a", "b", "c"], {"a": 1, "b": 3, "c": 2}.get, lambda t: False) == ["b", "c", "a"]
