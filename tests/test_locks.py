"""Locks between processes on a folder and on S3 (a real loopback S3 server): a second holder waits, saying so,
until the first lets go; a dead holder blocks no one; an S3 lease is renewed while held and taken over once it ran
out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest

from deepgen import locks

CHILD = """
import logging, pathlib, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from deepgen import locks
with locks.held(sys.argv[1], "test work", poll=0.05):
    pathlib.Path(sys.argv[2]).write_text("inside")
    if len(sys.argv) > 3:
        print("holding", flush=True)
        sys.stdin.read()  # hold until the parent closes stdin (or kills this process)
"""


def child(lock: str, marker, *hold: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, lock, str(marker), *hold], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(stream, text: str) -> None:
    for line in stream:
        if text in line:
            return
    raise AssertionError(f"the child never said {text!r}")


def check_second_holder_waits(lock: str, tmp_path) -> None:
    marker = tmp_path / "inside"
    with locks.held(lock, "parent work"):
        waiter = child(lock, marker)
        wait_for_line(waiter.stderr, "test work:")  # the one-line waiting message
        assert waiter.poll() is None and not marker.exists()  # still outside the lock
    waiter.wait(timeout=60)
    assert waiter.returncode == 0 and marker.read_text() == "inside"


def test_a_second_holder_of_a_folder_lock_waits_for_the_first(tmp_path):
    check_second_holder_waits(str(tmp_path / "out.lock"), tmp_path)


def test_a_killed_holder_leaves_no_stale_folder_lock(tmp_path):
    lock = str(tmp_path / "out.lock")
    holder = child(lock, tmp_path / "first", "hold")
    wait_for_line(holder.stdout, "holding")
    holder.kill()
    holder.wait()
    second = child(lock, tmp_path / "second")
    assert second.wait(timeout=60) == 0 and (tmp_path / "second").exists()


@pytest.fixture
def bucket(s3):
    """(bucket name, client) of a fresh loopback S3 bucket."""
    name = s3[len("s3://"):]
    return name, boto3.client("s3", endpoint_url=os.environ["DEEPGEN_S3_ENDPOINT_URL"])


def test_a_second_holder_of_an_s3_lock_waits_and_the_lock_object_goes_away(bucket, tmp_path):
    name, client = bucket
    check_second_holder_waits(f"s3://{name}/shards/abc.lock", tmp_path)
    assert client.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0


def test_an_s3_lease_that_ran_out_is_taken_over(bucket, caplog):
    name, client = bucket
    dead = {"owner": "gone-host:1", "expires": time.time() - 1}
    client.put_object(Bucket=name, Key="runs/vae-1.lock", Body=json.dumps(dead).encode())
    with caplog.at_level("WARNING", logger="deepgen.locks"), locks.held(f"s3://{name}/runs/vae-1.lock", "stage vae"):
        held = json.loads(client.get_object(Bucket=name, Key="runs/vae-1.lock")["Body"].read())
        assert held["owner"] != dead["owner"]
    assert "took over" in caplog.text and "gone-host:1" in caplog.text


def test_an_s3_lease_is_renewed_while_held(bucket):
    """The holder keeps the lock past its first lease; a waiter polling all along never gets in. (A 4 s lease renewed
    every 1.3 s leaves 2.7 s for a stalled renewal: enough on two cores at a load average of 46.)"""
    name, client = bucket
    uri = f"s3://{name}/lease.lock"
    inside = threading.Event()

    def waiter() -> None:
        with locks.held(uri, "waiter", ttl=4.0, poll=0.2):
            inside.set()

    with locks.held(uri, "holder", ttl=4.0):
        first = json.loads(client.get_object(Bucket=name, Key="lease.lock")["Body"].read())
        thread = threading.Thread(target=waiter)
        thread.start()
        while True:
            lease = json.loads(client.get_object(Bucket=name, Key="lease.lock")["Body"].read())
            assert lease["token"] == first["token"] and not inside.is_set()
            if time.time() > first["expires"] + 1.0 and lease["expires"] > time.time():  # renewed past the first
                break
            time.sleep(0.2)
    thread.join(timeout=30)
    assert inside.is_set()
