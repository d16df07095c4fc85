"""Thin wrappers over pretrained networks, each behind a small interface."""
