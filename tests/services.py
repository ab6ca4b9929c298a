"""Real services for tests (a Ray cluster on this machine, PostgreSQL, an MLflow server). Where one is missing a
test skips saying why, except under CI=true, where `.ci/run` provides them all: there it fails. Also the one way
the tests start a server and wait for it (`started`), and wait for anything else (`wait_until`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
POSTGRES = os.environ.get("FAKEFINDER_TEST_POSTGRES", "postgresql://fakefinder:fakefinder@127.0.0.1:5432/fakefinder")


def require(ok: bool, why: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI provides it: see .ci/run)")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_database():
    """A fresh database on the test PostgreSQL server, dropped afterwards: its URL."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - no driver, no server, wrong password: all mean "not here"
        require(False, f"PostgreSQL at {POSTGRES} is not reachable ({type(exc).__name__})")
    name = f"ff_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def wait_until(check: Callable[[], T], what: str, timeout: float = 120.0) -> T:
    """`check()` asked again until it gives something true, which is returned. The timeout only guards against a
    hang (the test then fails saying what never happened); no test passes or fails by the clock here."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return result


def children(pid: int) -> set[int]:
    """The processes that `pid` started and that are still its children."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(c) for c in task.read_text().split()}
        except OSError:  # the thread or the process ended meanwhile
            pass
    return found


def exited(pid: int) -> bool:
    """Whether process `pid` has ended (gone, or a zombie that nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        return True  # it answers (maybe 401): it is up
    except OSError:
        return False
    return True


@contextmanager
def started(cmd: list[str], url: str, *, ready: str = "/", **popen) -> Iterator[subprocess.Popen]:
    """`cmd`, a server that will answer at `url`, in its own process group: the process once `url + ready` answers
    (any HTTP status), stopped afterwards (its stdin closed, then SIGTERM to the group). Its stderr is kept for the
    error when it does not start. The one way the tests start a server and wait for it."""
    with tempfile.TemporaryFile("w+") as stderr:
        popen = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": stderr, **popen}
        proc = subprocess.Popen(cmd, text=True, start_new_session=True, **popen)
        name = " ".join(a for a in map(str, cmd[1:]) if "\n" not in a)[:100]  # not the code of a -c
        try:
            def up() -> bool:
                if proc.poll() is not None:
                    stderr.seek(0)
                    raise RuntimeError(f"{name}: exited with {proc.returncode}: {stderr.read()[-2000:]}")
                return _answers(url + ready)

            wait_until(up, f"{name}: answering at {url}")
            yield proc
        finally:
            if proc.stdin:
                proc.stdin.close()  # whatever waits on it (held verdicts) goes on
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def mlflow_server(backend_uri: str, artifacts: str):
    """`mlflow server` on a free port with `backend_uri` as its store, serving artifacts from `artifacts`."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
           artifacts, "--serve-artifacts", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    with started(cmd, url, ready="/health", env=env):
        yield url


@contextmanager
def ray_cluster(workers: int = 2):
    """Ray's own multi-node test cluster on this machine: a head that runs no tasks and `workers` one-CPU nodes,
    with node failures noticed within about a second."""
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        require(False, "Ray is not installed (pip install 'fakefinder[scale]')")
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_health_check_period_ms="500",
                      RAY_health_check_failure_threshold="2", RAY_health_check_timeout_ms="500")
    store = 80 * 2**20
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args=dict(num_cpus=0, include_dashboard=False, object_store_memory=store))
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=store) for _ in range(workers)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
