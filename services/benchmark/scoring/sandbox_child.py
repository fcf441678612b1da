"""Code that runs INSIDE the sandbox (``python -I -S -B <this file>``): a trusted harness and the answer's worker.

Standard library only; nothing from this project is importable here. Two processes:

* the **harness** (this script's process; PID 1 of the sandbox's PID namespace in
  ``namespaces`` mode) reads the spec from stdin, builds the private filesystem view (see
  :func:`build_root`), then runs every test snippet **itself**. It never runs the answer's code.
* the **worker**, forked from the harness, drops privileges, sets the resource limits, loses the
  verdict channel and only then compiles and runs the answer. It serves calls of the answer's
  functions over a socket pair: the harness sends plain-data arguments, the worker sends back
  plain-data results (or the name of the exception raised). The test's ``assert`` is evaluated in
  the harness on values the harness decoded into plain built-in types, so an object with a
  rigged ``__eq__`` or a forged message cannot make a test pass.

Channels: stdin (the spec, then /dev/null), stdout (the worker's output, read and capped by the
service), stderr (**verdicts**: one JSON object per line, kinds ``setup``/``compile``/``module``/
``test``/``done``). The worker's stderr is pointed at stdout and its copy of the verdict pipe is
closed before any answer code runs; the harness is not dumpable, so the worker cannot reach the
pipe through ``/proc/1/fd`` either.
"""

import builtins
import contextlib
import ctypes
import json
import os
import platform
import resource
import select
import signal
import socket
import struct
import sys
import time

VERDICT_FD = 2
MAX_FRAME = 1 << 20
MAX_NAMES = 256

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "aarch64": 41, "arm64": 41}

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The private view could not be built: the harness refuses to run the answer."""


class _TestTimeout(BaseException):
    """The test's time ran out while the answer was computing (the worker was killed)."""


class _WorkerGone(BaseException):
    """The worker exited or broke the protocol during a call."""


# --- plain-data codec (both sides; the harness only ever builds built-in types from it) ---


def encode(value, depth=0):
    if depth > 64:
        raise TypeError("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"i": str(value)}
    if kind is float:
        return {"f": repr(value)}
    if kind is list:
        return {"l": [encode(v, depth + 1) for v in value]}
    if kind is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {"s" if kind is set else "fs": [encode(v, depth + 1) for v in value]}
    if kind is bytes:
        return {"b": value.hex()}
    raise TypeError("unsupported type " + kind.__name__ + " (answers must return plain data)")


def decode(obj, depth=0):
    if depth > 64:
        raise ValueError("value nested too deeply")
    if obj is None or type(obj) is bool or type(obj) is str:
        return obj
    if type(obj) is not dict or len(obj) != 1:
        raise ValueError("malformed value")
    ((tag, body),) = obj.items()
    if tag == "i" and type(body) is str:
        return int(body)
    if tag == "f" and type(body) is str:
        return float(body)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if type(body) is not list:
        raise ValueError("malformed value")
    if tag == "l":
        return [decode(v, depth + 1) for v in body]
    if tag == "t":
        return tuple(decode(v, depth + 1) for v in body)
    if tag == "s":
        return {decode(v, depth + 1) for v in body}
    if tag == "fs":
        return frozenset(decode(v, depth + 1) for v in body)
    if tag == "d":
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed value")
            out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
        return out
    raise ValueError("malformed value")


def send_frame(sock, payload):
    data = json.dumps(payload).encode("utf-8")
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_exact(sock, size, deadline):
    buf = b""
    while len(buf) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise _TestTimeout()
        chunk = sock.recv(min(65536, size - len(buf)))
        if not chunk:
            raise _WorkerGone("closed")
        buf += chunk
    return buf


def recv_frame(sock, deadline=None):
    (size,) = struct.unpack(">I", recv_exact(sock, 4, deadline))
    if size > MAX_FRAME:
        raise _WorkerGone("reply over " + str(MAX_FRAME) + " bytes")
    try:
        return json.loads(recv_exact(sock, size, deadline).decode("utf-8"))
    except ValueError as exc:
        raise _WorkerGone("malformed reply") from exc


def describe(exc):
    return (type(exc).__name__ + ": " + str(exc))[:300]


# --- the private filesystem view (harness, before anything else runs) ---


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(what + ": " + os.strerror(err))


def _mount(source, target, fstype, flags, data=None):
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    enc = [None if v is None else os.fsencode(v) for v in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), "mount " + str(target))


def _locked_flags(path):
    """Flags a read-only remount must keep (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    flags = MS_NOSUID | MS_NODEV
    for st, ms in ((8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            flags |= ms
    return flags


def _makedirs(path):
    """Like os.makedirs, but every folder is 0755 whatever the umask (the worker is not root)."""
    if os.path.isdir(path):
        return
    _makedirs(os.path.dirname(path))
    os.mkdir(path)
    os.chmod(path, 0o755)


def _bind(root, path, read_only=True):
    target = root + path
    if os.path.isdir(path):
        _makedirs(target)
    else:
        _makedirs(os.path.dirname(target))
        with open(target, "a"):
            pass
    _mount(path, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(path))


def build_root(view):
    """A tmpfs root holding only read-only binds of the Python runtime, a few /dev nodes, own /proc,
    size-capped private /tmp and /dev/shm; then pivot into it and drop the host's tree."""
    root = view["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in view["binds"]:
        _bind(root, path)
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        host = "/" + name
        if os.path.islink(host) and not os.path.lexists(root + host):
            os.symlink(os.readlink(host), root + host)
    for dev in ("null", "zero", "urandom", "random"):
        if os.path.exists("/dev/" + dev):
            _bind(root, "/dev/" + dev, read_only=dev in ("urandom", "random"))
    caps = {"/tmp": view["tmp_mb"], "/dev/shm": view["shm_mb"]}
    for path, size_mb in caps.items():
        _makedirs(root + path)
        _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={size_mb}m,mode=1777")
    _makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    number = SYS_PIVOT_ROOT.get(platform.machine().lower())
    if number is None:
        raise SetupError("pivot_root: unknown syscall number on " + platform.machine())
    os.chdir(root)
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


# --- the worker (forked; runs the answer) ---


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


def _block_sockets(keep):
    """Weak mode only (no network namespace): make new sockets fail (C extensions could bypass it)."""

    def refuse(*_args, **_kwargs):
        raise PermissionError("network access is disabled in the benchmark sandbox")

    class _NoSocket:
        def __init__(self, *_args, **_kwargs):
            refuse()

    socket.socket = _NoSocket  # type: ignore[misc, assignment]
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    socket.socketpair = refuse
    socket.fromfd = refuse
    del keep


def _close_other_fds(keep):
    for fd in range(3, 1024):
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):  # the answer may have replaced or closed them
            stream.flush()


def worker_main(sock, spec):
    """In the forked worker: lose the verdict channel, drop rights, then run the answer and serve calls."""
    os.dup2(1, VERDICT_FD)  # stderr -> the output pipe; the verdict pipe is gone from this process
    _close_other_fds({sock.fileno()})
    with contextlib.suppress(OSError):
        os.setsid()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if spec.get("nested_userns"):
        # unprivileged service: a user namespace of our own leaves no capability over the harness
        _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    if spec.get("drop_uid") is not None:
        os.setgroups([])
        os.setgid(int(spec["drop_gid"]))
        os.setuid(int(spec["drop_uid"]))
    _set_limits(spec.get("limits") or {})
    if spec.get("block_sockets"):
        _block_sockets(sock)
    with contextlib.suppress(OSError):
        os.chdir(spec.get("cwd") or "/tmp")
    try:
        compiled = compile(spec["code"], "<answer>", "exec")
    except (SyntaxError, ValueError) as exc:
        send_frame(sock, {"kind": "compile", "error": describe(exc)})
        os._exit(0)
    namespace: dict = {"__name__": "__answer__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)
    except BaseException as exc:  # anything the answer raises at top level is a finding
        _flush()
        send_frame(sock, {"kind": "module", "error": describe(exc)})
        os._exit(0)
    _flush()
    names = [n for n, v in namespace.items() if callable(v) and not n.startswith("__")][:MAX_NAMES]
    send_frame(sock, {"kind": "ready", "names": names})
    while True:
        try:
            request = recv_frame(sock)
        except BaseException:
            os._exit(0)
        try:
            fn = namespace[request["fn"]]
            result = fn(*decode(request["args"]), **decode(request["kwargs"]))
            reply = {"ok": encode(result)}
        except BaseException as exc:  # a failing call is a result for the harness
            reply = {"exc": type(exc).__name__, "msg": str(exc)[:300]}
        _flush()
        try:
            send_frame(sock, reply)
        except BaseException:
            os._exit(0)


# --- the harness ---


def emit(payload):
    with contextlib.suppress(OSError):
        os.write(VERDICT_FD, (json.dumps(payload) + "\n").encode("utf-8", "replace"))


def _safe_exception(name, message):
    """The built-in exception class the worker named (so ``except ValueError`` in a test works)."""
    cls = getattr(builtins, str(name), None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError(str(name) + ": " + str(message))


class Worker:
    """The harness's handle on one worker process."""

    def __init__(self, spec):
        self.spec = spec
        self.pid = 0
        self.sock = None
        self.names = []
        self.deadline = None

    def start(self, timeout_s):
        """Fork and wait for the answer's top level; returns None when ready, else (kind, error)."""
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent.close()
            try:
                worker_main(child, self.spec)
            finally:
                os._exit(70)
        child.close()
        self.pid, self.sock = pid, parent
        try:
            msg = recv_frame(parent, time.monotonic() + timeout_s)
        except _TestTimeout:
            self.kill()
            return ("module", "timeout while executing the answer's top-level code")
        except _WorkerGone as exc:
            return ("module", "the answer's process broke off at top level (" + str(exc) + ", " + self.kill() + ")")
        if msg.get("kind") == "ready" and isinstance(msg.get("names"), list):
            self.names = [n for n in msg["names"] if isinstance(n, str) and n.isidentifier()][:MAX_NAMES]
            return None
        kind = "compile" if msg.get("kind") == "compile" else "module"
        self.kill()
        return (kind, str(msg.get("error", "unknown error"))[:300])

    def call(self, name, args, kwargs):
        if self.sock is None:
            raise _WorkerGone("not running")
        try:
            send_frame(self.sock, {"fn": name, "args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        except TypeError as exc:
            raise TypeError("test passes a value the sandbox cannot send: " + str(exc)) from None
        except OSError:
            raise _WorkerGone("closed") from None
        reply = recv_frame(self.sock, self.deadline)
        if "ok" in reply:
            try:
                return decode(reply["ok"])
            except (ValueError, TypeError) as exc:
                raise TypeError("the answer returned data the harness cannot read: " + str(exc)[:200]) from None
        if "exc" in reply:
            raise _safe_exception(reply.get("exc"), reply.get("msg", ""))
        raise _WorkerGone("malformed reply")

    def proxy(self, name):
        def call(*args, **kwargs):
            return self.call(name, args, kwargs)

        call.__name__ = name
        return call

    def kill(self):
        """Kill the worker and everything it started; how the worker ended (exit code or signal)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if not self.pid:
            return "gone"
        if self.spec.get("pid_namespace"):
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)  # as init of the namespace: every other process in it
        else:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        how = "gone"
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(self.pid, 0)
            if os.WIFEXITED(status):
                how = "exit code " + str(os.WEXITSTATUS(status))
            else:
                how = "killed by signal " + str(os.WTERMSIG(status))
        self.pid = 0
        _reap_orphans()
        return how


def _reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_tests(spec):
    per_test = float(spec.get("per_test_timeout_s") or 2.0)
    worker = Worker(spec)
    failed = worker.start(per_test)
    if failed is not None:
        emit({"kind": failed[0], "error": failed[1]})
        worker.kill()
        return
    for index, test in enumerate(spec["tests"]):
        if worker.sock is None:
            failed = worker.start(per_test)
            if failed is not None:
                emit({"kind": "test", "index": index, "ok": False, "error": "restart failed: " + failed[1]})
                continue
        scope = {"__builtins__": builtins}
        scope.update({name: worker.proxy(name) for name in worker.names})
        worker.deadline = time.monotonic() + per_test
        try:
            exec(compile(test, "<test " + str(index) + ">", "exec"), scope)
            emit({"kind": "test", "index": index, "ok": True})
        except _TestTimeout:
            worker.kill()
            emit({"kind": "test", "index": index, "ok": False, "error": "timeout"})
        except _WorkerGone as exc:
            how = worker.kill()
            emit(
                {
                    "kind": "test",
                    "index": index,
                    "ok": False,
                    "error": "answer process exited early (" + str(exc) + ", " + how + ")",
                }
            )
        except BaseException as exc:  # a failing test is a result, not a crash
            emit({"kind": "test", "index": index, "ok": False, "error": describe(exc)})
        finally:
            worker.deadline = None
    worker.kill()


def main():
    spec = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/1/fd, no ptrace for same-uid workers
    view = spec.get("view")
    if view:
        try:
            build_root(view)
        except (SetupError, OSError) as exc:
            emit({"kind": "setup", "error": describe(exc)})
            os._exit(3)
    run_tests(spec)
    emit({"kind": "done"})
    os._exit(0)


if __name__ == "__main__":
    main()
