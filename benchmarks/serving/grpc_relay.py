"""grpcio's pass-through: each call of the KServe v2 inference service passed on to one upstream address whole and
unread, by grpc.aio as the front uses it and with the front's memory settings (`front.process.return_freed_memory`;
its launcher gives it `front.process.environment`), but none of the front's checks. It is what any front built on
grpcio costs before its policy (`bench_front.py --relay`, the route `grpcio`); the inference key its client sends
is passed on.

    python -m benchmarks.serving.grpc_relay PORT HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio

from videoitg.front.config import GRPC_INFER_KEY_HEADER
from videoitg.front.grpc_policy import GRPC_METHODS, SERVICE
from videoitg.front.process import return_freed_memory


async def main(port: int, upstream: str) -> None:
    import grpc

    unbounded = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channel = grpc.aio.insecure_channel(upstream, options=unbounded)

    def handler(method: str) -> grpc.RpcMethodHandler:
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # raw bytes both ways

        async def relay(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            key = [(k, v) for k, v in context.invocation_metadata() or () if k == GRPC_INFER_KEY_HEADER]
            try:
                return await call(raw, metadata=key or None)  # the inference key its client sent, passed on
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")
                raise  # abort raises; never reached

        return grpc.unary_unary_rpc_method_handler(relay)

    server = grpc.aio.server(options=unbounded)
    handlers = {m: handler(m) for m in GRPC_METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="the port to listen on")
    parser.add_argument("upstream", metavar="HOST:PORT", help="the KServe v2 gRPC address each call is passed to")
    args = parser.parse_args()
    return_freed_memory()
    asyncio.run(main(args.port, args.upstream))
