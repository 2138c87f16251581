"""The public front of a launched server, the only ports a client reaches: it passes on to tritonserver's loopback
ports what the public API allows, each request read once and bounded first.

Its modules, each importing only those listed before it: `policy` (what a client may reach: pure checks, the API
key's among them, `Refusal` and its `Reason`, the bounds), `grpc_policy` (a ModelInfer's checks), `bounds` (the
held-bytes budget, a body's pace, `BodyReader`), `config` (`FrontConfig`, `FrontCounters`), `process` (the
process's memory and open-file settings), `tritonserver` (the HTTP client toward tritonserver), `lost` (the
inferences a model's process took with it, answered once the launcher says so), `tls` (each connection's TLS
handshake, the certificate read again when it changes), `connections` (the HTTP ports' connections), `http`
(`HttpPort`, `MetricsPort`), `answer` (the answer endpoint's routes on the HTTP port, docs/answer.md),
`grpc_frames` and `grpc_calls` (HTTP/2 read frame by frame, the calls), `grpc` (`GrpcPort`), `webpage` (the page at
`/`, docs/page.md), `main` (the process; `python -m videoitg.front`).
"""
