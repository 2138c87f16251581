"""Benchmarking a running server (`videoitg perf`): perf_analyzer's levels with where each request's time goes per
step (`stats`), what was measured (`record`), the picture (`plot`) and runs side by side (`compare`)."""
