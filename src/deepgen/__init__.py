"""deepgen: a reproducible pipeline for DeepGen-1.0-style unified image generation and editing models."""
