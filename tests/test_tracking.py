"""What reaches MLflow params: nested config flattened, names MLflow accepts, nothing that looks like a secret."""

from deepgen.tracking import flat_params, resolve_uri


def test_flat_params_drops_secrets_and_fixes_names():
    params = flat_params("", {"sft": {"keep": {"*": 0.2}, "optim": {"lr": 1e-3}},
                              "s3": {"aws_secret_access_key": "hunter2", "endpoint_url": "http://x"},
                              "api_token": "abc"})
    assert params == {"sft.keep._": "0.2", "sft.optim.lr": "0.001", "s3.endpoint_url": "http://x"}
    assert "hunter2" not in str(params) and "abc" not in str(params)


def test_relative_sqlite_uri_becomes_absolute(tmp_path):
    uri = resolve_uri("sqlite:///db/mlflow.db", root=tmp_path)
    assert uri == f"sqlite:///{tmp_path}/db/mlflow.db" and uri.startswith("sqlite:////")
    assert resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
