"""Real services for tests (a Ray cluster on this machine, PostgreSQL, an MLflow server). Where one is missing a
test skips saying why, except under CI=true, where `.ci/run` provides them all: there it fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest

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


@contextmanager
def mlflow_server(backend_uri: str, artifacts: str):
    """`mlflow server` on a free port with `backend_uri` as its store, serving artifacts from `artifacts`."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                             "--artifacts-destination", artifacts, "--serve-artifacts", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


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
