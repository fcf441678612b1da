"""Child process for test_channels: a server (MasterX's or grpc's defaults) and a client that idles.

``python -m tests.faults.keepalive_child ours|bare``: one call, ``IDLE`` seconds without calls while
the client channel pings every ``MASTERX_KEEPALIVE_SECONDS``, one more call. gRPC core logs a
``too_many_pings`` GOAWAY to stderr when the server refuses the pings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys

import grpc

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.server import GrpcServer
from masterx_runtime.settings import ServerSettings
from tests.runtime.test_server import ScriptedApp


async def main(bare: bool) -> None:
    app = ScriptedApp()
    if bare:
        server = grpc.aio.server()
        app.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
    else:
        ours = GrpcServer(app, dataclasses.replace(ServerSettings(), grpc_port=0, metrics_port=-1))
        port = await ours.start()
    async with channel(f"127.0.0.1:{port}") as chan:
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi"), timeout=5)
        await asyncio.sleep(float(os.environ.get("IDLE", "6")))
        await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi"), timeout=5)
    print("calls ok", flush=True)
    if bare:
        await server.stop(0)
    else:
        await ours.stop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] == ["bare"]))
