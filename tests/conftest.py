"""Shared fixtures: real moto S3 servers over HTTP on free 127.0.0.1 ports, and a fresh bucket per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def pytest_configure(config: pytest.Config) -> None:
    # `make test` spreads the tests over one pytest-xdist worker per core. Each gets its share of the cores as
    # torch threads (and so do the stages its tests start, through OMP_NUM_THREADS): two workers of two threads
    # each on two cores would make torch's spinning threads wait on each other, several times slower.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        from mmp_core.publishing.workspaces import threads_per_stage  # the fan-out's own share of the cores

        threads = threads_per_stage(workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


FIRST_RUN_SECONDS = 75  # tests/flows/conftest.py: first_run, made once per session by the first test that needs it


def run_order(tests: list, seconds, shares_first_run, *, workers: int = 2) -> list:
    """The order to hand `tests` out in: the longest first (`seconds(test)`), the others as they come. Of the
    tests that share the session's first run (`shares_first_run(test)`), only the first starts early: it makes
    that run while the others wait for it, so they come after enough work that does not need it to keep the
    other workers busy meanwhile."""
    ordered = sorted(tests, key=lambda test: -seconds(test))  # stable: the given order among equals
    sharing = [test for test in ordered if shares_first_run(test)]
    if len(sharing) < 2:
        return ordered
    first, later = sharing[0], sharing[1:]
    held = set(later)
    enough = FIRST_RUN_SECONDS * workers  # handed out in turn: a share also queues behind the first
    result, independent = [], 0.0
    for test in ordered:
        if test in held:
            continue  # placed once, below
        if later and independent >= enough:
            result += later
            later = []
        result.append(test)
        if test is not first and first in result:
            independent += seconds(test)
    return result + later


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first (`@pytest.mark.slow(seconds=N)`, about N seconds on a quiet 2-core machine):
    pytest-xdist (`--dist loadgroup`) hands tests out in this order to whichever worker has little left, so the
    long ones run side by side from the start and the short ones fill in around them."""

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return float(marker.kwargs.get("seconds", 0)) if marker else 0.0

    workers = max(2, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "2")))
    items[:] = run_order(items, seconds, lambda item: "first_run" in item.fixturenames, workers=workers)


def stop_process(process: subprocess.Popen, *, group: bool = False, grace: float = 30) -> None:
    """Stop a process this test session started (its whole process group if `group`, for one started with
    `start_new_session=True`): SIGTERM, then SIGKILL if it has not exited within `grace` seconds. A Prefect
    worker that is handing back a flow run can outlive a SIGTERM; without the SIGKILL it fails the teardown and
    then polls a stopped API server for ever."""
    if process.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited between the poll and the signal
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=grace)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """A `moto_server` process on 127.0.0.1 (in-memory S3); `url` is its endpoint."""

    def __init__(self, log_dir: Path):
        exe = Path(sys.executable).with_name("moto_server")
        self.exe = str(exe) if exe.exists() else shutil.which("moto_server")
        if not self.exe:
            raise RuntimeError("moto_server not found: install the dev extras (moto[server])")
        self.log_path = log_dir / "moto_server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> MotoServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._log = log
        self.proc = subprocess.Popen(
            [self.exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({self.proc.returncode}); see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture(scope="session")
def aws_test_env():
    """Fake credentials for the whole session (never real AWS)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_TEST_ENV.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        yield AWS_TEST_ENV


@pytest.fixture(scope="session")
def moto_server(aws_test_env, tmp_path_factory) -> str:
    """Endpoint URL of a moto S3 server shared by the session (real HTTP on 127.0.0.1)."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def moto_server_factory(aws_test_env, tmp_path):
    """Start private moto servers (e.g. to stop one mid-test): `server = moto_server_factory()`; `server.url`,
    `server.stop()`. Every server still running is stopped at teardown."""
    servers: list[MotoServer] = []

    def start() -> MotoServer:
        log_dir = tmp_path / f"moto-{len(servers)}"
        log_dir.mkdir()
        servers.append(MotoServer(log_dir).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server) -> str:
    """A fresh, empty bucket on the shared moto server; its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    return name


def flow_env(tmp: Path, endpoint: str | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_LOGGING_LEVEL="INFO",
        DVC_NO_ANALYTICS="1",
        DS_ACCELERATOR="cpu",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        MMP_CACHE_DIR=str(tmp / "cache"),
    )
    env.pop("PREFECT_API_URL", None)
    # aiobotocore (DVC's S3 client) refuses a config file that is not a regular file, such as /dev/null.
    env.pop("AWS_CONFIG_FILE", None)
    env.pop("AWS_SHARED_CREDENTIALS_FILE", None)
    return env


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = flow_env(tmp_path)
    log = open(tmp_path / "prefect-server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert process.poll() is None, (tmp_path / "prefect-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "prefect server did not become healthy"
            time.sleep(0.5)
    yield url, env
    stop_process(process)
    log.close()


@pytest.fixture(scope="session", autouse=True)
def stop_prefect_temporary_servers():
    """Stop the temporary Prefect server that in-process flows start, while pytest's output is still open: left
    to Prefect's atexit hook, its "Stopping temporary server" line is written to a closed stream and prints a
    logging traceback after the test summary."""
    yield
    if "prefect.server.api.server" in sys.modules:
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer

        APILogWorker.drain_all(timeout=5)  # the flows' last log lines go to the server before it stops
        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
