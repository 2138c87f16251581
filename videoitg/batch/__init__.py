"""Batch scoring at scale: a manifest of (video, instruction) rows scored on Ray Data, resumably and exactly once
(docs/batch.md)."""
