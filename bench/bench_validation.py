"""Cost of the shared input rules (masterx_runtime.validation) on typical requests.

    .venv/bin/python bench/bench_validation.py [--n 20000]

Times ``check_request`` (the innermost interceptor of every service runs it once per request
message) on a router GenerateRequest with 1 and with 10 chat messages and on a reasoning
AllocateBudgetRequest. Prints p50/p95 in microseconds and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx.reasoning.v1 import reasoning_pb2  # noqa: E402
from masterx.router.v1 import router_pb2  # noqa: E402
from masterx_runtime.testing.benchstats import machine, percentile  # noqa: E402
from masterx_runtime.validation import check_request  # noqa: E402


def generate(messages: int) -> router_pb2.GenerateRequest:
    req = router_pb2.GenerateRequest(user_id="s-42", session_id="sess-1", max_tokens=512, cost_quality=0.5)
    for i in range(messages):
        req.messages.add(role="user" if i % 2 == 0 else "assistant", content="Explain how fractions work. " * 12)
    return req


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    n = parser.parse_args().n
    cases = {
        "GenerateRequest, 1 message": generate(1),
        "GenerateRequest, 10 messages": generate(10),
        "AllocateBudgetRequest": reasoning_pb2.AllocateBudgetRequest(query="Why is 0.1 + 0.2 != 0.3?" * 4),
    }
    print(f"check_request, {n} calls each; {machine()}")
    print("| request | p50 us | p95 us |\n|---|---|---|")
    for name, request in cases.items():
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            check_request(request)
            times.append((time.perf_counter() - t0) * 1e6)
        print(f"| {name} | {percentile(times, 50):.1f} | {percentile(times, 95):.1f} |")


if __name__ == "__main__":
    main()
