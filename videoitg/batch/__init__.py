"""Batch scoring at scale: a manifest of (video, instruction) rows scored on Ray Data, resumably and
exactly once. See docs/batch.md. Modules: `paths` (allowed roots), `manifest` (rows and row ids),
`grouping` (units of work per video), `backends` (in-process engine / Triton client), `store`
(atomic shards, resume, merge), `ray_env` (local or cluster Ray), `runner` (the driver)."""
