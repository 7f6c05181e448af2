"""Training stages under Ray Train: configuration, freeze schedule, data stream, the per-worker loop, the launcher."""
