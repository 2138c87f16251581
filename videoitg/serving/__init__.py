"""Starting and talking to a Triton Inference Server: the launcher (`server`, `ports`, `shm`, `watchdog`), the
public front (`front`), the model-repository generator (`repository`), the Triton binaries (`binaries`), the
client (`client`), routing over several servers (`routing`) and `perf`. Submodules import heavy dependencies
lazily."""
