"""The served path: latency and throughput (`bench_serving`), the front's cost (`bench_front`, over the floors `relay`
and `grpc_relay`), the stop (`bench_stop`), the server's memory (`bench_server_memory`) and availability under attack
(`availability`, with the raw HTTP/2 client `h2client`)."""
