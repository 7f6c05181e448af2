"""Operations fixtures: PostgreSQL 15 in a temp data dir, and an MLflow tracking server on it with the basic-auth app
and artifacts on the loopback S3 (tests/conftest.py), as a team would run it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from mlflow_servers import MlflowServer, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")  # the Debian package's place (scripts/setup.sh installs it)
ADMIN = "admin"


class Postgres:
    """A throwaway cluster: initdb in a temp dir, trust auth on loopback. initdb and postgres refuse root, so as root
    they run as the `postgres` user (STACK.md)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="deepgen-pg-"))  # not under pytest's 0700 tmp: postgres must reach it
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")

    def run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        self.run("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres")
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log", "-w", "start", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1")
        return self

    def create_db(self, name: str) -> str:
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


class AuthServer:
    """`mlflow server --app-name basic-auth` on PostgreSQL (runs and auth in two databases), artifacts proxied to
    s3://<bucket>/runs on the loopback S3: clients need MLflow credentials only, never S3 ones."""

    bucket = "mlflow-artifacts"

    def __init__(self, postgres: Postgres, s3_endpoint: str, tmp: Path):
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                               aws_access_key_id="server-key-id", aws_secret_access_key="server-secret")
        self.s3.create_bucket(Bucket=self.bucket)
        self.admin_password = secrets.token_urlsafe(16)
        ini = tmp / "basic_auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {postgres.create_db('mlflow_auth')}\n"
                       f"admin_username = {ADMIN}\nadmin_password = {self.admin_password}\n"
                       # each request otherwise re-hashes the password (PBKDF2): in one run 639 metric-history
                       # reads took 377 s on 2 busy cores
                       "auth_cache_ttl_seconds = 300\n")
        env = {"AWS_ACCESS_KEY_ID": "server-key-id", "AWS_SECRET_ACCESS_KEY": "server-secret",
               "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
               "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        self.server = MlflowServer(postgres.create_db("mlflow"), tmp / "server.log", env=env,
                                   args=("--app-name", "basic-auth", "--artifacts-destination",
                                         f"s3://{self.bucket}/runs"))

    @property
    def uri(self) -> str:
        return self.server.uri

    def create_user(self, username: str, password: str) -> None:
        """A pipeline user through the auth REST API, as an admin does it."""
        response = requests.post(f"{self.uri}/api/2.0/mlflow/users/create", auth=(ADMIN, self.admin_password),
                                 json={"username": username, "password": password}, timeout=30)
        assert response.ok, response.text

    def object_keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="module")
def auth_server(postgres, moto_server, tmp_path_factory):
    server = AuthServer(postgres, moto_server, tmp_path_factory.mktemp("mlflow-server"))
    server.server.start()
    yield server
    server.server.stop()
