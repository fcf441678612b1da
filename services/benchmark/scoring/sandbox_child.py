"""Code that runs INSIDE the sandbox process (passed to the interpreter with ``-c``).

It must only use the standard library and must not import anything from this project: the
sandbox interpreter is a bare Python started with ``-I -S``. Protocol:

* stdin: one JSON object ``{nonce, code, tests, per_test_timeout_s, limits, drop_uid,
  drop_gid, block_sockets}``; stdin is closed after reading so user code cannot read more.
* stdout: user output plus result lines ``@@<nonce>@@<json>``. Result kinds: ``compile``
  (syntax error), ``module`` (error while executing the answer), ``test`` (one per test with
  ``index``/``ok``/``error``), ``done``.

Order matters: limits are set and privileges dropped *before* the answer's code is compiled,
so nothing the answer does runs with more rights than the limits allow.
"""

import contextlib
import json
import os
import resource
import signal
import sys


class _TestTimeout(BaseException):
    """Raised by the interval timer; a BaseException so a bare ``except Exception`` cannot eat it."""


def _emit(nonce, payload):
    line = "\n@@" + nonce + "@@" + json.dumps(payload) + "\n"
    with contextlib.suppress(Exception):  # user code may have replaced or closed stdout
        sys.stdout.flush()
    os.write(1, line.encode("utf-8", "replace"))


def _set_limits(limits):
    pairs = (
        ("as_bytes", resource.RLIMIT_AS),
        ("cpu_seconds", resource.RLIMIT_CPU),
        ("nproc", resource.RLIMIT_NPROC),
        ("file_bytes", resource.RLIMIT_FSIZE),
        ("open_files", resource.RLIMIT_NOFILE),
    )
    for key, which in pairs:
        value = limits.get(key)
        if value:
            resource.setrlimit(which, (int(value), int(value)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _block_sockets():
    """Fallback when no network namespace is available: make socket creation fail."""
    import socket

    def refuse(*_args, **_kwargs):
        raise PermissionError("network access is disabled in the benchmark sandbox")

    class _NoSocket:
        def __init__(self, *_args, **_kwargs):
            refuse()

    socket.socket = _NoSocket  # type: ignore[misc, assignment]
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    socket.socketpair = refuse
    try:
        import _socket

        _socket.socket = _NoSocket  # type: ignore[misc, assignment]
    except ImportError:
        pass


def _drop_privileges(uid, gid):
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _alarm(_signum, _frame):
    raise _TestTimeout()


def _describe(exc):
    text = type(exc).__name__ + ": " + str(exc)
    return text[:300]


def main():
    raw = sys.stdin.buffer.read()
    spec = json.loads(raw.decode("utf-8"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    nonce = spec["nonce"]
    per_test = float(spec.get("per_test_timeout_s") or 2.0)
    if spec.get("block_sockets"):
        _block_sockets()
    _set_limits(spec.get("limits") or {})
    if spec.get("drop_uid") is not None:
        _drop_privileges(int(spec["drop_uid"]), int(spec["drop_gid"]))
    signal.signal(signal.SIGALRM, _alarm)
    try:
        compiled = compile(spec["code"], "<answer>", "exec")
    except (SyntaxError, ValueError) as exc:
        _emit(nonce, {"kind": "compile", "error": _describe(exc)})
        os._exit(0)
    namespace = {"__name__": "__answer__", "__builtins__": __builtins__}
    try:
        signal.setitimer(signal.ITIMER_REAL, per_test)
        exec(compiled, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _TestTimeout:
        _emit(nonce, {"kind": "module", "error": "timeout while executing the answer's top-level code"})
        os._exit(0)
    except BaseException as exc:  # anything the answer raises is a finding
        signal.setitimer(signal.ITIMER_REAL, 0)
        _emit(nonce, {"kind": "module", "error": _describe(exc)})
        os._exit(0)
    for index, test in enumerate(spec["tests"]):
        scope = dict(namespace)
        try:
            signal.setitimer(signal.ITIMER_REAL, per_test)
            exec(compile(test, f"<test {index}>", "exec"), scope)
            signal.setitimer(signal.ITIMER_REAL, 0)
            _emit(nonce, {"kind": "test", "index": index, "ok": True})
        except _TestTimeout:
            _emit(nonce, {"kind": "test", "index": index, "ok": False, "error": "timeout"})
        except BaseException as exc:  # a failing test is a result, not a crash
            signal.setitimer(signal.ITIMER_REAL, 0)
            _emit(nonce, {"kind": "test", "index": index, "ok": False, "error": _describe(exc)})
    _emit(nonce, {"kind": "done"})
    os._exit(0)


if __name__ == "__main__":
    main()
