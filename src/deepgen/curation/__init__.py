"""Data curation: checks and filters applied to training texts and images before they reach a training run."""
