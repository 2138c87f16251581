"""The model in-process: what stopping SigLIP early saves on a CPU (`bench_cpu_savings`), the head's precision
(`bench_head_precision`), the moment rule's variants (`bench_moments`) and the start check's weight scan
(`bench_checkpoint_scan`)."""
