"""Everything that runs inside tritonserver: the python-backend models (`videoitg_bls`, `decode`, `vision`,
`grounding`, `selection`; thin: parse, call the library, respond) and their library, which unit tests call without
a server (`steps`: parameters, request and step-input checks, decode answers; `cache` and `scheduling`: the feature
cache and who computes, shares, waits or is refused; `errors`: the one error format). The model files, `common` and
`features` need `triton_python_backend_utils`, so only the stub imports them (through the generated `model.py`
shims)."""
