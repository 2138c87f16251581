"""Triton python-backend models. Each file is thin: parse the Triton request, call the core package
(`videoitg.serving.steps`, `videoitg.model`, `videoitg.decode`), respond. Imported only inside tritonserver's
python stub (they need `triton_python_backend_utils`); the generated `model.py` shims import them."""
