"""CPU per call of the ways one MasterX service calls another, client and server side.

    .venv/bin/python bench/bench_grpc_client.py [--calls 4000] [--concurrency 16] [--reps 3]

A trivial EmotionService (Analyze answers at once, StreamAnalyze answers each message at once)
runs in a child process on loopback; this process calls it ``--calls`` times with
``--concurrency`` calls in flight, one way per mode, with a request id bound as in a chat turn:

* ``plain``: a bare ``grpc.aio`` channel (no request id: the floor);
* ``interceptor``: the request id added by a ``grpc.aio`` client interceptor (how
  ``masterx_runtime.clients.channel`` did it before; that interceptor did not reach streaming
  calls, see ``tests/runtime/test_clients.py``);
* ``channel``: ``masterx_runtime.clients.channel`` (the request id added at the call);
* ``stream``: ``channel`` with every call one message on a single long-lived ``StreamAnalyze``
  (how the router sends its analyses, ``ROUTER_EMOTION_STREAM=1``).

Per run: calls/s, this process's CPU per call (``time.process_time``) and the server's (user +
system of the child, from /proc). The modes alternate, ``--reps`` times, so a busy machine hurts
all alike; the table has the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc  # noqa: E402
from masterx_runtime.clients import channel  # noqa: E402
from masterx_runtime.interceptors import REQUEST_ID_KEY  # noqa: E402
from masterx_runtime.logs import request_id_var  # noqa: E402
from masterx_runtime.testing.benchstats import cpu_seconds  # noqa: E402
from masterx_runtime.testing.servers import free_port, wait_for_port  # noqa: E402

MODES = ("plain", "interceptor", "channel", "stream")


class _Trivial(emotion_pb2_grpc.EmotionServiceServicer):  # type: ignore[misc]
    async def Analyze(self, request: Any, context: Any) -> emotion_pb2.AnalyzeResponse:
        return emotion_pb2.AnalyzeResponse(request_id=request.request_id)

    async def StreamAnalyze(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            yield emotion_pb2.AnalyzeResponse(request_id=request.request_id)


async def _serve(port: int) -> None:
    server = grpc.aio.server()
    emotion_pb2_grpc.add_EmotionServiceServicer_to_server(_Trivial(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class _RequestIdInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """The request-id client interceptor as the runtime had it (for the comparison only)."""

    def _details(self, details: Any) -> Any:
        rid = request_id_var.get()
        if not rid:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if REQUEST_ID_KEY not in metadata:
            metadata.add(REQUEST_ID_KEY, rid)
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def _open(mode: str, addr: str) -> grpc.aio.Channel:
    if mode == "plain":
        return grpc.aio.insecure_channel(addr)
    if mode == "interceptor":
        return grpc.aio.insecure_channel(addr, interceptors=[_RequestIdInterceptor()])
    return channel(addr)


async def _calls(mode: str, addr: str, calls: int, concurrency: int) -> float:
    """Seconds for ``calls`` calls, ``concurrency`` in flight."""
    request_id_var.set("bench-turn")
    chan = _open(mode, addr)
    stub = emotion_pb2_grpc.EmotionServiceStub(chan)
    request = emotion_pb2.AnalyzeRequest(text="I don't get why the loop runs once more.")
    try:
        if mode == "stream":
            queue: asyncio.Queue[Any] = asyncio.Queue()

            async def outgoing() -> AsyncIterator[Any]:
                while (msg := await queue.get()) is not None:
                    yield msg

            call = stub.StreamAnalyze(outgoing())
            pending: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()

            async def reader() -> None:
                async for response in call:
                    (await pending.get()).set_result(response)

            reading = asyncio.ensure_future(reader())
            loop = asyncio.get_running_loop()

            async def one() -> Any:
                fut = loop.create_future()
                pending.put_nowait(fut)
                queue.put_nowait(request)
                return await asyncio.wait_for(fut, 5)

        else:

            async def one() -> Any:
                return await stub.Analyze(request, timeout=5)

        for _ in range(50):  # connect, warm
            await one()
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        if mode == "stream":
            queue.put_nowait(None)
            await reading
        return seconds
    finally:
        await chan.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)  # the child
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
    try:
        wait_for_port("127.0.0.1", port, 30, child)
        for rep in range(args.reps):
            for mode in MODES if rep % 2 == 0 else tuple(reversed(MODES)):
                server0, client0 = cpu_seconds(child.pid), time.process_time()
                seconds = asyncio.run(_calls(mode, f"127.0.0.1:{port}", args.calls, args.concurrency))
                client = (time.process_time() - client0) * 1e6 / args.calls
                server = (cpu_seconds(child.pid) - server0) * 1e6 / args.calls
                rows[mode].append((args.calls / seconds, client, server))
    finally:
        child.terminate()
        child.wait(10)
    load = os.getloadavg()[0]
    print(f"\n{args.calls} calls x {args.reps} reps, {args.concurrency} in flight, load average {load:.2f}\n")
    print("| mode | calls/s | client CPU us/call | server CPU us/call | both |")
    print("|---|---|---|---|---|")
    for mode, got in rows.items():
        rps, client, server = (statistics.median(r[i] for r in got) for i in range(3))
        print(f"| {mode} | {rps:.0f} | {client:.0f} | {server:.0f} | {client + server:.0f} |")


if __name__ == "__main__":
    main()
