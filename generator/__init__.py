"""storeops generator: store entries and cluster profiles in, Argo CD Applications and values out."""

from __future__ import annotations

from generator.errors import (
    ConfigError,
    GitError,
    InvalidInput,
    MassDeleteRefused,
    Problem,
    PushConflict,
    StaleOutput,
    StoreopsError,
)
from generator.settings import Settings

__all__ = [
    "ConfigError",
    "GitError",
    "InvalidInput",
    "MassDeleteRefused",
    "Problem",
    "PushConflict",
    "Settings",
    "StaleOutput",
    "StoreopsError",
]
