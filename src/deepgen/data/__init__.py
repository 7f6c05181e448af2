"""Training data on disk: webdataset shards, their manifest (the data version), data contracts, streaming."""
