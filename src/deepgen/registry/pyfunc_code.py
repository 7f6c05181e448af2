"""The registered model's code, logged as MLflow "models from code": MLflow runs this file to rebuild the pyfunc, so
a registered version holds no pickled object (`mlflow.pyfunc.load_model` unpickles nothing of ours) and loading it
needs only an installed `deepgen`."""

import mlflow

from deepgen.registry.load import DeepGenPyfunc

mlflow.models.set_model(DeepGenPyfunc())
