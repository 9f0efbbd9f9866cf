"""Helpers that shrink real configs for smoke runs on generated data."""
from .tiny import tiny_detection_cfg

__all__ = ['tiny_detection_cfg']
