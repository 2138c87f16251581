"""Batch scoring on Ray Data: rows/s by workers, grouping by video on and off (`bench_batch`)."""
