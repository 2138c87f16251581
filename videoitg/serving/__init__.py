"""Serving VideoITG with a real Triton Inference Server: binaries and launcher (`server`), the model-repository
generator (`repository`), the visual-feature cache (`cache`), the request steps the python-backend models call
(`steps`) and a tritonclient-based client (`client`). Submodules import their heavy dependencies lazily."""
