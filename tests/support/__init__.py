"""Helpers the tests share: clips, tiny checkpoints, training data, batch manifests, served repositories, Ray
sessions and fuzzing. Imported as `tests.support.<name>`; pytest fixtures shared by several modules are in
`tests/conftest.py`."""
