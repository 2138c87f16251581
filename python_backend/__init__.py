"""The models tritonserver runs (`videoitg_bls`, `decode`, `vision`, `grounding`, `selection`) and their library.
The folder keeps Triton's backend name, python_backend/; pyproject's `package-dir` installs it as
`videoitg.python_backend`, so the project puts one name, `videoitg`, into site-packages."""
