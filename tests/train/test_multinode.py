"""A stage on a two-node Ray cluster, started on this machine the way a real one is (`ray start --head`, then
`ray start --address` on the second node), one CPU per node: the two training workers run on different nodes, talk
gloo across them, and the stage ends with a checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from deepgen.train.config import StageConfig
from deepgen.train.launch import RECORD_FILE, run_name

RAY = str(Path(sys.executable).with_name("ray"))
STAGE = {"objective": "vae", "trainable": ["vae"], "steps": 4, "batch_size": 2, "log_every": 2,
         "checkpoint_every": 4, "crop": 32, "scaling": {"num_workers": 2, "cpus_per_worker": 1}}
INIT = {"preset": "tiny", "seed": 0}
LAUNCH = """
import json, sys
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
stage, init, data, runs, address = json.loads(sys.argv[1])
print(json.dumps(run_stage(StageConfig.from_dict("vae", stage), init, data, "v-test", runs, ray_address=address)))
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    """`ray start --block` in its own session: the node's processes (raylet, workers) share its process group, so
    this test stops exactly its own nodes (`ray stop` would stop every Ray on the machine)."""
    ports = dict(zip(("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                      "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"),
                     free_ports(6)))
    command = [RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
               *[str(x) for item in ports.items() for x in item], *args]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # workers may outlive `ray start` for a moment: the group goes with it
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive_nodes(dashboard: str) -> list:
    from ray.util.state import list_nodes

    try:
        return [n for n in list_nodes(address=dashboard, raise_on_missing_output=False) if n.state == "ALIVE"]
    except Exception:  # noqa: BLE001 - the dashboard is not up yet
        return []


def start_alive(args: list[str], log: Path, dashboard: str, count: int, deadline: float) -> subprocess.Popen:
    """Start a node and wait until the cluster has `count` live nodes. `ray start` gives a node 30 s to register
    (fixed in Ray's node.py); on a machine loaded by other jobs that ran out (seen here at load average 70), so a node
    that gave up is started again, twice at most."""
    for _ in range(3):
        node = start_node(args, log)
        while len(alive_nodes(dashboard)) < count:
            if node.poll() is not None:
                break
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        else:
            return node
        stop_node(node)
    raise AssertionError(log.read_text()[-3000:])


@pytest.fixture
def two_nodes(monkeypatch):
    """(GCS address, dashboard URL) of a head and a second node, one CPU each."""
    # Ray 2.60 turns token auth on when ~/.ray/auth_token exists (a local ray.init writes one): this loopback
    # cluster, its driver and the state API client here all run without it
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    temp = Path(tempfile.mkdtemp(prefix="dgmn", dir="/tmp"))  # short: Ray's socket paths live under it
    gcs, dashboard, client = free_ports(3)
    address, url = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 400  # a head took 40-50 s to come up here with other jobs running
    nodes = []
    try:
        nodes.append(start_alive(["--head", "--port", str(gcs), "--temp-dir", str(temp), "--dashboard-host",
                                  "127.0.0.1", "--dashboard-port", str(dashboard), "--ray-client-server-port",
                                  str(client)], temp / "head.log", url, 1, deadline))
        nodes.append(start_alive(["--address", address], temp / "node2.log", url, 2, deadline))
        yield address, url
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_stage_runs_one_worker_on_each_of_two_nodes(two_nodes, small_shards, tmp_path):
    from ray.util.state import list_actors

    address, dashboard = two_nodes
    record, _, _ = small_shards
    runs = tmp_path / "runs"  # every node of this cluster sees this folder; a real cluster needs shared storage or S3
    args = json.dumps([STAGE, INIT, {"train": record["train_urls"]}, str(runs), address])
    proc = subprocess.run([sys.executable, "-c", LAUNCH, args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    folder = runs / run_name(StageConfig.from_dict("vae", STAGE), INIT, "v-test")
    result = json.loads((folder / RECORD_FILE).read_text())
    assert result["metrics"]["step"] == STAGE["steps"] and Path(result["checkpoint_uri"], "config.json").is_file()
    workers = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker")], detail=True,
                          raise_on_missing_output=False)
    nodes = {n.node_id for n in alive_nodes(dashboard)}
    assert len(workers) == 2 and {w.node_id for w in workers} == nodes and len(nodes) == 2, (workers, nodes)
