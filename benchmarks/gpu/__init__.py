"""The GPU check (`gpu_check`: its hot-path and decode sections, `gpu_hotpath`, `gpu_decode`), its picture
(`plot_gpu_check`), and the wheels it installs on a node without network (`gpu_requirements.txt`, `wheel_parts`)."""
