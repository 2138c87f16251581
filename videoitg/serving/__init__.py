"""Serving VideoITG with Triton: the wire contract (`protocol`), the repository generator (`repository`), the launcher
(`server`, with `supervise`, `procfs`, `ports`, `shm`, `binaries`), the public front (`front`), the client (`client`),
routing over several servers (`routing`) and `perf`."""
