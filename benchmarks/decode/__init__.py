"""Decoding and a request's whole path: decoders' rate (`bench_decode`), DALI's pixels against FFmpeg's
(`bench_dali_pixels`), and the end to end against the released path (`bench_e2e`, on the long clips of `e2e_clips`)."""
