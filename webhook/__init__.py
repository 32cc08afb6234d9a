"""storeops service: store requests in, store entries in Git, status out."""

from __future__ import annotations
