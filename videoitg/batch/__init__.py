"""Batch scoring at scale: a manifest of (video, instruction) rows scored on Ray Data, resumably and
exactly once. See docs/batch.md.

Modules: `manifest` (rows, row ids, allowed roots via `videoitg.paths`), `grouping` (units of work per
video), `backends` (the per-unit scoring loop; in-process engine / Triton client), `store` (atomic
shards, resume, merge), `ray_env` (local or cluster Ray), `runner` (the driver).
"""
