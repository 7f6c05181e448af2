"""The Kedro project package: settings, pipeline registry, one folder per pipeline."""
