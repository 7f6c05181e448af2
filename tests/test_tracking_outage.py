"""A tracking server that goes away mid-training: logging goes on with one warning, what was held reaches the server
once it is back (same port, same backend), and a stage's flush says what was held, delivered late and lost."""

from __future__ import annotations

import logging

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from deepgen import tracking
from mlflow_servers import MlflowServer, free_port


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "deepgen.tracking" and r.levelno == logging.WARNING]


def test_metrics_logged_while_the_server_is_down_reach_it_when_it_returns(tmp_path, caplog):
    server = MlflowServer(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "server.log",
                          args=("--artifacts-destination", str(tmp_path / "artifacts"))).start()
    try:
        client = MlflowClient(server.uri)
        run = {"uri": server.uri, "run_id": client.create_run(client.create_experiment("outage")).info.run_id}
        tracking.log_params(run, {"stage.lr": "0.001"})
        for step in (1, 2, 3):
            tracking.log_metrics(run, {"stage/loss": 1.0 / step, "stage/lr": 0.001}, step)
        server.stop()
        caplog.set_level(logging.WARNING, logger="deepgen.tracking")
        for step in range(4, 10):
            tracking.log_metrics(run, {"stage/loss": 1.0 / step, "stage/lr": 0.001}, step)  # no exception
        tracking.log_params(run, {"stage.trainable.dit": "1234"})
        assert len(warnings(caplog)) == 1 and "unreachable" in warnings(caplog)[0]
        server.start()
        tracking.log_metrics(run, {"stage/loss": 0.1, "stage/lr": 0.001}, 10)  # delivers the held ones first
        assert tracking.flush(run) == {"buffered": 13, "flushed": 13, "dropped": 0}
        assert len(warnings(caplog)) == 2 and "reachable again" in warnings(caplog)[1]
        for key in ("stage/loss", "stage/lr"):
            assert sorted(m.step for m in client.get_metric_history(run["run_id"], key)) == list(range(1, 11))
        assert client.get_run(run["run_id"]).data.params == {"stage.lr": "0.001", "stage.trainable.dit": "1234"}
        # a request the server refuses is an error, not an outage: nothing is held
        with pytest.raises(MlflowException):
            tracking.log_metrics({"uri": server.uri, "run_id": "0" * 32}, {"stage/loss": 1.0}, 1)
        assert tracking.flush({"uri": server.uri, "run_id": "0" * 32}) == {"buffered": 0, "flushed": 0,
                                                                           "dropped": 0}
    finally:
        server.stop()


def test_a_server_that_never_returns_loses_the_oldest_records_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(tracking, "MAX_HELD", 5)
    caplog.set_level(logging.WARNING, logger="deepgen.tracking")
    run = {"uri": f"http://127.0.0.1:{free_port()}", "run_id": "a" * 32}  # nothing listens there
    for step in range(4):
        tracking.log_metrics(run, {"stage/loss": 1.0, "stage/grad_norm": 2.0}, step)
    assert len(warnings(caplog)) == 1
    assert tracking.flush(run) == {"buffered": 8, "flushed": 0, "dropped": 8}  # 3 over the bound, 5 at the end
    assert "5 metric values" in warnings(caplog)[1]
