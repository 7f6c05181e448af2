"""Real `mlflow server` processes for tests: started on a free loopback port, waited for, stopped by process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` in its own process group; `start()` returns once it answers HTTP, `stop()` kills the group."""

    def __init__(self, backend_uri: str, log_file: Path, port: int | None = None, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self.backend_uri, self.log_file, self.args = backend_uri, Path(log_file), args
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> MlflowServer:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", self.backend_uri, *self.args]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout  # up in ~8 s on idle cores (STACK.md); the margin is for busy ones
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}): "
                                   f"{self.log_file.read_text()[-3000:]}")
            try:
                requests.get(f"{self.uri}/health", timeout=2)  # any HTTP answer: up (basic auth may refuse it)
                return self
            except requests.ConnectionError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow server on port {self.port} not up after {timeout} s: "
                           f"{self.log_file.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
