"""The trusted side of the worker protocol: sandboxes, connections and proxies.

Graded tests never import submission code. `autograder.impl.load("kv_cache", "attention")`
returns a `Remote` proxy of the module as imported in a worker (protocol.py, run in the sandbox
of isolation.py); attribute access, calls, indexing, `len`, iteration and `in` travel as requests,
and what comes back is plain data (exact built-in types, new `torch.Tensor`s) or more proxies.

* One sandbox per suite process: a zygote that imported torch once. Each test gets a fresh worker
  forked from it (`begin_test`), so no state leaks between tests; after the test everything the
  sandbox holds besides the zygote is killed (`end_test`).
* Tensors a test passes are mirrored into shared memory, and a tensor the worker returns that
  views a mirror comes back as a view of the test's own tensor (so `out=` and "returns views of
  the cache" can be checked). They are read-only to the submission unless the test declared them
  `writable(...)` (an `out=`, a cache the call fills): the worker's writes show in a writable
  tensor when the call returns; a write into any other fails the call (`InputModified`), and the
  test's tensor keeps its value, so no reference is ever computed from inputs the submission
  changed. Copies happen at call boundaries only: between calls nothing the worker does can
  change the test's memory.
* GPU memory made by `device_tensor` is not mirrored but shared (protocol.DeviceShare): the worker
  maps the same memory. Only the speed harness uses it (timing.compare_loops), for inputs it
  writes and outputs it copies out itself around a timed run.
* An exception raised in the worker is raised here as the same built-in class, or as a local class
  named after the submission's own (so `pytest.raises(BlockPoolError)` works); anything that is
  not an `Exception` (SystemExit, KeyboardInterrupt, pytest's skip/xfail/exit) becomes a
  `SubmissionError`, which fails the test: only the grader decides what is not graded.
"""
from __future__ import annotations

import builtins
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import torch

from ..sandbox import descendants, kill_all
from . import isolation
from .protocol import Codec, DeviceShare, ProtocolError, SharedBuffer, dtype_name, mirror_view, place_blobs, \
    recv_frame, send_frame, strided_view

# request fields sent as plain JSON (names and ids, and a script's steps: 100,000 of them are
# encoded here inside a timed run, so not through the codec); the worker checks their types
_RAW_FIELDS = ("name", "handle_id", "bench", "methods", "steps", "pluck")
READY_TIMEOUT_S = 180.0   # a cold start imports torch (and triton) in the sandbox
MAX_REPLY_BYTES = 2 << 30  # tensor data in one reply: larger answers fail the test instead of filling the host
LOG_HEAD, LOG_TAIL = 200_000, 64_000


class WorkerError(Exception):
    """The worker died, hung past its deadline, or broke the protocol: the running test fails."""


class SubmissionError(Exception):
    """The submission raised something that is not an Exception (SystemExit, KeyboardInterrupt,
    pytest.skip / xfail / exit), or an exception that cannot be rebuilt here."""


class InputModified(SubmissionError):
    """The submission wrote into a tensor the test passed it as an input (not declared writable)."""


# Storages the running test declared writable, by (device, data_ptr, nbytes), with the tensors that
# declared them: held until the test ends (end_test), so that no storage is freed and its address
# reused while it counts as writable, and so that a tensor handed over and dropped at once
# (`obj.k = writable(t)`) stays writable.
_WRITABLE: dict[tuple[str, int, int], list[torch.Tensor]] = {}


def _storage_key(t: torch.Tensor) -> tuple[str, int, int]:
    st = t.untyped_storage()
    return (str(t.device), st.data_ptr(), st.nbytes())


def writable(*tensors: torch.Tensor):
    """Declare tensors the submission may write into: an `out=` it fills, a cache a call writes.
    Every other tensor a test passes is read-only to the submission (see the module's docstring).
    Lasts until the test ends. Returns its argument (one tensor) or arguments (several), so
    `out = writable(torch.empty(...))`."""
    for t in tensors:
        _WRITABLE.setdefault(_storage_key(t), []).append(t)
    return tensors[0] if len(tensors) == 1 else tensors


# ----------------------------------------------------------------------------- processes

class Sandbox:
    """A zygote in its isolation, for one submission. Forks a fresh worker per test."""

    def __init__(self, submission: Path, extra_ro: list[Path] = (), mode: str = "zygote", wait: bool = True):
        from ..runner import CappedLog

        self.submission = Path(submission)
        ctl, child = socket.socketpair()
        cmd, self.isolation = isolation.command(mode, self.submission, child.fileno(), extra_ro=list(extra_ro))
        self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], env=worker_env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        child.close()
        self.log = CappedLog(self.proc.stdout, LOG_HEAD, LOG_TAIL)
        self.ctl, self.keep, self.mode = ctl, set(), mode
        self.starting = mode == "zygote"
        if not wait:  # the first fork() waits (the zygote imports torch meanwhile)
            return
        self.wait_ready()

    def wait_ready(self) -> None:
        if not self.starting:
            return
        self.starting = False
        ready = _recv_within(self.ctl, READY_TIMEOUT_S, "the sandbox to start")
        if "ready" not in ready:
            raise WorkerError(f"the sandbox did not start: {self.log_tail()}")
        self.keep = set(descendants(self.proc.pid))

    def fork(self) -> "Connection":
        self.wait_ready()
        mine, theirs = socket.socketpair()
        send_frame(self.ctl, {"op": "fork"}, [], [theirs.fileno()])
        theirs.close()
        reply = _recv_within(self.ctl, 30.0, "a worker to fork")
        conn = Connection(mine, self)
        conn.pid = reply.get("pid") if type(reply.get("pid")) is int else None
        return conn

    def exit_status(self, pid: int) -> str | None:
        """How a forked worker ended, as its zygote saw it ("killed by SIGSEGV", "exit code 3")."""
        if self.mode != "zygote":
            return None
        try:
            send_frame(self.ctl, {"op": "status", "pid": pid}, [])
            st = _recv_within(self.ctl, 5.0, "the worker's exit status").get("status")
        except (WorkerError, OSError):
            return None
        if type(st) is not int:
            return None
        if st < 0:
            try:
                name = signal.Signals(-st).name
            except ValueError:
                name = f"signal {-st}"
            what = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed", "SIGABRT": "aborted", "SIGBUS": "bus error",
                    "SIGFPE": "floating-point exception"}.get(name, name)
            return f"{what} ({name})"
        return f"exit code {st} (sys.exit / os._exit?)"

    def serve_connection(self) -> "Connection":
        assert self.mode == "serve"
        return Connection(self.ctl, self)

    def clean(self) -> None:
        """Kill whatever the last test left in the sandbox (processes, threads' processes, orphans)."""
        if self.starting:  # no test has used it yet: nothing of a test's is in it
            return
        kill_all([p for p in descendants(self.proc.pid) if p not in self.keep])

    def alive(self) -> bool:
        return self.proc.poll() is None and all(os.path.exists(f"/proc/{p}") for p in self.keep)

    def close(self) -> None:
        kill_all(descendants(self.proc.pid))
        kill_all([self.proc.pid])
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.ctl.close()
        except OSError:
            pass

    def log_tail(self, n: int = 6) -> str:
        lines = [ln for ln in self.log.snapshot().splitlines() if ln.strip()]
        return " | ".join(lines[-n:])[-800:]


def worker_env() -> dict:
    """The worker's environment: nothing of the grader's (no keys, no channel, no paths of it)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
            "TRITON_INTERPRET", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NVIDIA_VISIBLE_DEVICES")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # NCCL's and NVSHMEM's settings pass through: a machine may turn features off for a reason
    # (NVLink multicast, NCCL_NVLS_ENABLE=0, can take a shared host's GPUs down), and ranks obey them
    env.update({k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "NVSHMEM_", "TORCH_SYMM_MEM_"))})
    from llmsys.models import cache_dir

    from llmsys import DATA_DIR

    env.update(HOME="/tmp", TMPDIR="/tmp", LLMSYS_CACHE=str(cache_dir()), LLMSYS_DATA=str(DATA_DIR),
               PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", TRITON_CACHE_DIR="/tmp/triton", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    return env


def _recv_within(sock: socket.socket, seconds: float, what: str) -> dict:
    r, _, _ = select.select([sock], [], [], seconds)
    if not r:
        raise WorkerError(f"timed out after {seconds:.0f} s waiting for {what}")
    try:
        header, _, fds = recv_frame(sock, max_header=1 << 16, max_blobs=0)
    except (EOFError, OSError, ProtocolError) as e:
        raise WorkerError(f"lost the sandbox while waiting for {what}: {e}") from None
    for fd in fds:
        os.close(fd)
    return header


# ----------------------------------------------------------------------------- connections

class _Mirror:
    """A tensor storage of the test's, shared with the worker through a memfd."""

    __slots__ = ("id", "buf", "u8", "new", "dev", "key", "desc")

    def __init__(self, mid: int, storage, device: torch.device, key: tuple, desc: str):
        self.id, self.dev, self.key, self.desc = mid, str(device), key, desc
        self.u8 = torch.empty(0, dtype=torch.uint8, device=device).set_(storage)
        self.buf = SharedBuffer(self.u8.numel())
        self.new = True

    def take_writes(self) -> bool:
        """After a request: copy what the worker wrote back into the test's tensor if it is
        writable; False if the worker changed a read-only one (which then keeps its value)."""
        if self.key in _WRITABLE:
            self.u8.copy_(self.buf.bytes)
            return True
        return torch.equal(self.u8, self.buf.bytes.to(self.u8.device))


class Connection:
    """One worker. Not thread-safe: one request at a time (a lock serialises them)."""

    def __init__(self, sock: socket.socket, sandbox: Sandbox | None):
        self.sock, self.sandbox = sock, sandbox
        self.lock = threading.RLock()
        self.deadline: float | None = None
        self.dead: str | None = None
        self.proxies: "weakref.WeakValueDictionary[int, Remote]" = weakref.WeakValueDictionary()
        self.exc_classes: dict[int, type] = {}
        self.methods: dict[int, frozenset] = {}  # the worker's class id -> its method names
        self.release: list[int] = []
        self.mirrors: dict[tuple[str, int, int], _Mirror] = {}
        self.mirror_ids = itertools.count(1)
        self.by_id: dict[int, _Mirror] = {}
        self.codec = Codec(self._handle_of, self._from_handle, self._share, self._shared, self._copied)
        self.grad = True
        self.pid: int | None = None  # the worker's pid in the sandbox (forked workers)
        self.shares_sent: set[int] = set()  # device shares this worker has mapped
        self.shares_new: list[DeviceShare] = []  # ... and those the request being encoded adds

    # -- values
    def _handle_of(self, obj) -> dict:
        if isinstance(obj, Remote) and object.__getattribute__(obj, "_r_conn") is self:
            return {"H": object.__getattribute__(obj, "_r_id")}
        if isinstance(obj, type) and obj in self.exc_classes.values():
            hid = next(h for h, c in self.exc_classes.items() if c is obj)
            return {"H": hid}
        raise TypeError(f"cannot pass a {type(obj).__name__} to submission code (plain data, tensors and objects "
                        "that came from the submission only)")

    def _from_handle(self, msg: dict):
        hid = msg.get("H")
        if type(hid) is not int:
            raise ProtocolError("bad handle")
        if msg.get("k") == "exc_class":
            return self._exception_class(msg)
        if "methods" in msg and type(msg.get("tc")) is int and type(msg["methods"]) is list:
            self.methods[msg["tc"]] = frozenset(str(m) for m in msg["methods"])
        p = self.proxies.get(hid)
        if p is None:
            p = Remote._make(self, hid, str(msg.get("k", "object")), str(msg.get("n", "?"))[:200],
                             self.methods.get(msg.get("tc"), frozenset()))
            self.proxies[hid] = p
            weakref.finalize(p, self.release.append, hid)
        return p

    def _exception_class(self, msg: dict) -> type:
        hid = msg["H"]
        cls = self.exc_classes.get(hid)
        if cls is not None:
            return cls
        if "builtin" in msg:  # ValueError itself: the real class, so pytest.raises(ValueError) works
            cls = _builtin_exception(msg["builtin"]) or SubmissionError
            self.exc_classes[hid] = cls
            return cls
        base: type = SubmissionError
        for link in msg.get("mro") or []:
            if type(link) is not dict:
                continue
            if "builtin" in link:
                base = _builtin_exception(link["builtin"]) or SubmissionError
                break
            if type(link.get("H")) is int:
                parent = self.exc_classes.get(link["H"])
                if parent is not None:
                    base = parent
                    break
        name = str(msg.get("n", "SubmissionException")).rsplit(".", 1)[-1][:100] or "SubmissionException"
        try:
            cls = type(name, (base,), {"__module__": "submission", "__qualname__": name})
        except TypeError:
            cls = type(name, (SubmissionError,), {"__module__": "submission"})
        self.exc_classes[hid] = cls
        return cls

    def _share(self, t: torch.Tensor):
        if type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
            t = t.as_subclass(torch.Tensor)
        if t.device.type == "cuda":
            d = _DEVICE_SHARES.get(t.untyped_storage().data_ptr())
            if d is not None:
                sid = _SHARE_IDS[d.ptr]
                if sid not in self.shares_sent and d not in self.shares_new:
                    self.shares_new.append(d)
                return {"v": sid, "dt": dtype_name(t.dtype), "o": t.storage_offset(), "s": list(t.shape),
                        "st": list(t.stride())}
        if t.untyped_storage().nbytes() == 0 or t.is_sparse or t.device.type not in ("cpu", "cuda"):
            return None
        key = _storage_key(t)
        m = self.mirrors.get(key)
        if m is None:
            m = _Mirror(next(self.mirror_ids), t.untyped_storage(), t.device, key,
                        f"{list(t.shape)} {str(t.dtype)[6:]}")
            self.mirrors[key], self.by_id[m.id] = m, m
        return {"m": m.id, "dt": dtype_name(t.dtype), "o": t.storage_offset(), "s": list(t.shape),
                "st": list(t.stride())}

    def _shared(self, spec: dict):
        return mirror_view(spec, lambda m: self.by_id[m].u8 if m in self.by_id else None,
                           lambda v: _SHARES_BY_ID[v].bytes if v in _SHARES_BY_ID and v in self.shares_sent else None)

    def _copied(self, t: torch.Tensor, spec: dict) -> None:
        wp, wh = spec.get("wp"), spec.get("wh")
        if type(wp) is int and wp:
            _remember(t, (id(self), wp))
        if type(wh) is int:
            weakref.finalize(t, self.release.append, wh)

    # -- requests
    def request(self, op: str, what: str = "", **fields):
        with self.lock:
            if self.dead:
                raise WorkerError(self.dead)
            blobs: list = []
            header = {"op": op, "grad": torch.is_grad_enabled()}
            self.shares_new = []
            for k, v in fields.items():
                header[k] = v if k in _RAW_FIELDS else self.codec.encode(v, blobs)
            if "handle_id" in header:
                header["H"] = header.pop("handle_id")
            if self.release:
                header["release"], self.release = list(self.release), []
            new = [m for m in self.mirrors.values() if m.new]
            header["new_mirrors"] = [{"id": m.id, "n": m.buf.nbytes, "dev": m.dev} for m in new]
            shares, self.shares_new = self.shares_new, []
            header["new_shares"] = [{"id": _SHARE_IDS[d.ptr], "n": d.nbytes, "size": d.size, "dev": d.device}
                                    for d in shares]
            for m in self.mirrors.values():  # the test's tensors as they are now
                m.buf.bytes.copy_(m.u8)
            place_blobs(header, blobs)
            try:
                send_frame(self.sock, header, blobs, [m.buf.fd for m in new] + [d.fd for d in shares])
                for m in new:
                    m.new = False
                self.shares_sent.update(_SHARE_IDS[d.ptr] for d in shares)
                reply, blob = self._receive(what or op)
            finally:  # what the worker wrote into writable tensors, once, now; read-only ones are checked
                changed = [m for m in self.mirrors.values() if not m.take_writes()]
            if changed:
                raise InputModified(
                    f"{what or op} wrote into a tensor it was given as an input ({changed[0].desc}"
                    + (f", and {len(changed) - 1} more" if len(changed) > 1 else "") + "): submission code must "
                    "not modify its inputs, only the outputs it is given to fill (an `out=` tensor, the KV cache "
                    "a write goes to); work on a copy (`x = x.clone()`) or out of place (`x = x * s`, not `x *= s`)")
            if "err" in reply:
                raise self._exception(reply["err"])
            if "ok" not in reply:
                raise self._die(f"the worker sent a malformed reply to {what or op}")
            try:
                return self.codec.decode(reply["ok"], blob)
            except (ProtocolError, KeyError, TypeError, ValueError, RuntimeError) as e:
                raise self._die(f"the worker's reply to {what or op} could not be decoded: {e}") from None

    def _receive(self, what: str):
        while True:
            left = None if self.deadline is None else self.deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._die(f"timed out: {what} did not return before the test's time limit (infinite loop or "
                                "deadlock?)")
            r, _, _ = select.select([self.sock], [], [], min(left, 1.0) if left is not None else 1.0)
            if r:
                break
        try:
            left = None if self.deadline is None else max(0.1, self.deadline - time.monotonic())
            self.sock.settimeout(left)  # a frame that starts must also end before the deadline
            try:
                header, blob, fds = recv_frame(self.sock, max_blobs=MAX_REPLY_BYTES)
            finally:
                self.sock.settimeout(None)
        except socket.timeout:
            raise self._die(f"timed out: {what} did not return before the test's time limit") from None
        except (EOFError, ConnectionError, OSError):
            how = self.sandbox.exit_status(self.pid) if self.sandbox and self.pid else None
            tail = self.sandbox.log_tail(3) if self.sandbox else ""
            raise self._die(f"the submission's process died during {what}" + (f": {how}" if how else "")
                            + (f" | output: {tail}" if tail else "")) from None
        except ProtocolError as e:
            raise self._die(f"the worker broke the protocol during {what}: {e}") from None
        for fd in fds:
            os.close(fd)
        return header, blob

    def _die(self, why: str) -> WorkerError:
        self.dead = why
        return WorkerError(why)

    def _exception(self, err: dict) -> BaseException:
        if type(err) is not dict:
            return self._die("malformed error reply")
        msg, name = str(err.get("msg", ""))[:4000], str(err.get("name", "?"))
        cls = None
        if type(err.get("cls")) is dict and _is_exception(err["cls"]):
            try:
                cls = self._exception_class(err["cls"])
            except (ProtocolError, KeyError, TypeError):
                cls = None
        exc: BaseException
        if cls is None or cls is SubmissionError:
            # SystemExit, KeyboardInterrupt, pytest's skip/xfail/exit...: a failure of this test
            exc = SubmissionError(f"the submission raised {name.rsplit('.', 1)[-1]}" + (f": {msg}" if msg else ""))
        else:
            try:
                exc = cls(msg)
            except Exception:  # noqa: BLE001
                exc = SubmissionError(f"{name}: {msg}")
        exc.submission_traceback = [tuple(f) for f in err.get("tb") or [] if type(f) is list and len(f) == 3]
        return exc

    def import_module(self, name: str) -> "Remote":
        """The worker's `importlib.import_module(name)`, as a proxy."""
        return self.request("import", f"importing {name}", name=name)

    def close(self) -> None:
        with self.lock:
            if not self.dead:
                try:
                    send_frame(self.sock, {"op": "bye"}, [])
                except OSError:
                    pass
            self.dead = self.dead or "closed"
            self.sock.close()
            for m in self.mirrors.values():
                os.close(m.buf.fd)
            self.mirrors.clear()


def _builtin_exception(name) -> type | None:
    b = getattr(builtins, str(name), None)
    return b if isinstance(b, type) and issubclass(b, Exception) else None


def _is_exception(cls_msg: dict) -> bool:
    """Whether a raised class derives from Exception (built in, or through its MRO's built-in base)."""
    if "builtin" in cls_msg:
        return _builtin_exception(cls_msg["builtin"]) is not None
    for link in cls_msg.get("mro") or []:
        if type(link) is dict and "builtin" in link:
            return _builtin_exception(link["builtin"]) is not None
    return False


# A tensor the worker returned by value: which of the worker's storages it was copied from (as the
# worker reports it). checks.same_memory uses it to see "the second call returned the first call's
# buffer" across the boundary; it is the worker's claim, used only to find that bug.
_origins: dict[int, tuple[weakref.ref, tuple[int, int]]] = {}  # id(tensor) -> (ref, origin): tensors hash by id


def _remember(t: torch.Tensor, where: tuple[int, int]) -> None:
    key = id(t)
    _origins[key] = (weakref.ref(t, lambda _r, k=key: _origins.pop(k, None)), where)


def origin(t: torch.Tensor) -> tuple[int, int] | None:
    entry = _origins.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else None


# ----------------------------------------------------------------------------- proxies

class Remote:
    """An object that lives in the worker. Identity is the worker object's: the same object always
    comes back as the same proxy, so `is` works; `==` is identity too."""

    __slots__ = ("_r_conn", "_r_id", "_r_kind", "_r_name", "_r_methods", "__weakref__")

    @classmethod
    def _make(cls, conn: Connection, hid: int, kind: str, name: str, methods: frozenset = frozenset()) -> "Remote":
        p = object.__new__(cls)
        for k, v in (("_r_conn", conn), ("_r_id", hid), ("_r_kind", kind), ("_r_name", name), ("_r_methods", methods)):
            object.__setattr__(p, k, v)
        return p

    def _r(self, op: str, what: str = "", **fields):
        conn = object.__getattribute__(self, "_r_conn")
        return conn.request(op, what, handle_id=object.__getattribute__(self, "_r_id"), **fields)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if name in object.__getattribute__(self, "_r_methods"):
            return _Method(self, name)  # looked up when called: one request for obj.method(...)
        return self._r("getattr", f"{self._label()}.{name}", name=name)

    def __setattr__(self, name: str, value) -> None:
        self._r("setattr", f"setting {self._label()}.{name}", name=name, value=value)

    def __call__(self, *args, **kwargs):
        return self._r("call", f"{self._label()}(...)", args=list(args), kwargs=dict(kwargs))

    def __getitem__(self, key):
        return self._r("getitem", f"{self._label()}[...]", key=key)

    def __setitem__(self, key, value) -> None:
        self._r("setitem", f"{self._label()}[...] = ...", key=key, value=value)

    def __len__(self) -> int:
        n = self._r("len", f"len({self._label()})")
        if type(n) is not int or n < 0:
            raise TypeError(f"len() of a submission object gave {n!r}")
        return n

    def __bool__(self) -> bool:
        b = self._r("bool", f"bool({self._label()})")
        if type(b) is not bool:
            raise TypeError("bool() of a submission object is not a bool")
        return b

    def __iter__(self):
        items = self._r("iter", f"iterating {self._label()}")
        if type(items) is not list:
            raise TypeError("iterating a submission object gave no list")
        return iter(items)

    def __contains__(self, value) -> bool:
        b = self._r("contains", f"`in` {self._label()}", value=value)
        if type(b) is not bool:
            raise TypeError("`in` on a submission object is not a bool")
        return b

    def __eq__(self, other) -> bool:
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __repr__(self) -> str:
        try:
            r = self._r("repr", "repr")
            return r if type(r) is str else self._label()
        except Exception:  # noqa: BLE001 - a repr must never raise (pytest calls it in reports)
            return f"<{self._label()} in the submission>"

    def _label(self) -> str:
        name = object.__getattribute__(self, "_r_name")
        return name.removeprefix("module ").rsplit(".", 1)[-1] if object.__getattribute__(self, "_r_kind") in (
            "class", "callable", "exc_class", "module") else name.rsplit(".", 1)[-1]


class _Method:
    """`obj.name` of a method of a submission object, called as one request."""

    __slots__ = ("obj", "name")

    def __init__(self, obj: Remote, name: str):
        self.obj, self.name = obj, name

    def __call__(self, *args, **kwargs):
        return self.obj._r("callmethod", f"{self.obj._label()}.{self.name}(...)", name=self.name, args=list(args),
                           kwargs=dict(kwargs))

    def __repr__(self) -> str:
        return f"<method {self.name} of {self.obj._label()} in the submission>"


# ----------------------------------------------------------------------------- per test

# GPU memory shared with workers (timing.compare_loops): base address -> share, and ids
_DEVICE_SHARES: dict[int, DeviceShare] = {}
_SHARE_IDS: dict[int, int] = {}
_SHARES_BY_ID: dict[int, DeviceShare] = {}
_share_ids = itertools.count(1)


def device_tensor(shape, dtype: torch.dtype, device: str | torch.device = "cuda") -> torch.Tensor:
    """A new (uninitialised) CUDA tensor in memory a worker maps rather than copies when it is
    passed to one: what the worker writes there is in this tensor as soon as the GPU has done it.
    Freed by `free_device_tensors()` (end of the test): do not keep a reference past it."""
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    item = torch.empty((), dtype=dtype).element_size()
    numel = 1
    for n in shape:
        numel *= int(n)
    d = DeviceShare(max(numel * item, 1), index)
    sid = next(_share_ids)
    _DEVICE_SHARES[d.ptr], _SHARE_IDS[d.ptr], _SHARES_BY_ID[sid] = d, sid, d
    stride, acc = [], 1
    for n in reversed(list(shape)):
        stride.insert(0, acc)
        acc *= int(n)
    return strided_view(d.bytes, dtype, 0, [int(n) for n in shape], stride)


def free_device_tensors() -> None:
    if not _DEVICE_SHARES:
        return
    torch.cuda.synchronize()
    for d in list(_DEVICE_SHARES.values()):
        d.close()
    _DEVICE_SHARES.clear()
    _SHARE_IDS.clear()
    _SHARES_BY_ID.clear()


class trusted_worker:
    """A worker for the grader's own code (the speed tests' baselines), in a process of its own
    and outside any sandbox: `import vllm` changes Inductor and NCCL settings of the process that
    imports it, and a baseline is timed by the same harness, through the same protocol, as the
    submission. `with trusted_worker() as w: w.import_module("autograder.baselines")...`"""

    def __enter__(self) -> "Connection":
        from .. import REPO_ROOT

        import tempfile

        mine, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGRADER_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.log = tempfile.TemporaryFile()  # a baseline's error output, for its "baseline error" reason
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("protocol.py")), "trusted",
                                      str(theirs.fileno()), "", str(REPO_ROOT)], pass_fds=[theirs.fileno()], env=env,
                                     cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        theirs.close()
        self.conn = Connection(mine, None)
        self.conn.pid = self.proc.pid
        self.conn.log_tail = self.log_tail
        self.conn.deadline = None if _deadline is None else max(_deadline, time.monotonic() + 120)
        return self.conn

    def log_tail(self, n: int = 1500) -> str:
        """The last lines the baseline's process printed (its errors), on one line."""
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 20 * n))
        lines = [ln for ln in self.log.read().decode(errors="replace").splitlines()
                 if ln.strip() and "Warning" not in ln and "warn(" not in ln]
        return " | ".join(lines[-12:])[-n:]

    def __exit__(self, *exc) -> None:
        children = descendants(self.proc.pid)  # vLLM's engine-core process, say: found while it has a parent
        self.conn.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        kill_all([self.proc.pid, *children])
        self.log.close()


_sandbox: Sandbox | None = None
_current: Connection | None = None
_more: list[Connection] = []  # the test's other workers (ZeRO's ranks), closed with it
_submission: Path | None = None
_deadline: float | None = None


def configure(submission: Path) -> None:
    global _submission
    _submission = Path(submission)


def prestart() -> None:
    """Start the suite's sandbox now without waiting for it (python, torch and triton are
    imported in it while pytest collects); the first test's fork waits for it to be ready.
    Started from this (the main) thread: bwrap's --die-with-parent follows the thread that
    started it."""
    global _sandbox
    if _submission is not None and _sandbox is None:
        try:
            _sandbox = Sandbox(_submission, wait=False)
        except Exception:  # noqa: BLE001 - current() starts one again and reports what fails
            _sandbox = None


def isolation_level() -> str:
    return isolation.choose().describe()


def begin_test(seconds: float | None) -> None:
    """Called by the plugin when a test starts: its worker is made on first use, with this deadline."""
    global _deadline
    _deadline = None if seconds is None else time.monotonic() + seconds


def current() -> Connection:
    """The running test's worker (forked from the suite's sandbox on first use)."""
    global _sandbox, _current
    if _current is not None:
        return _current
    if _submission is None:
        raise RuntimeError("autograder.remote.client.configure() was not called")
    if _sandbox is not None and not _sandbox.alive():
        _sandbox.close()
        _sandbox = None
    started = time.monotonic()
    if _sandbox is None:
        _sandbox = Sandbox(_submission)
    _current = _sandbox.fork()
    # starting the sandbox (seconds: python, torch, triton) is the grader's time, not the test's
    _current.deadline = None if _deadline is None else _deadline + (time.monotonic() - started)
    return _current


def more_workers(n: int) -> list[Connection]:
    """n more workers for the running test, forked from the suite's sandbox, so that they share
    its loopback network, /dev/shm and GPUs (ZeRO's ranks talk to each other through them)."""
    current()
    started = time.monotonic()
    conns = [_sandbox.fork() for _ in range(n)]
    for c in conns:
        c.deadline = None if _deadline is None else _deadline + (time.monotonic() - started)
    _more.extend(conns)
    return conns


def sandbox() -> Sandbox:
    """The running test's sandbox (for the meters that look at its processes from outside)."""
    current()
    return _sandbox


def end_test() -> str | None:
    """Close the test's worker and clear the sandbox of what it left. A worker that died or hung
    takes the sandbox with it (the next test starts a fresh one). Returns why, if it had to."""
    global _current, _sandbox
    why = None
    for c in _more:
        c.close()
    _more.clear()
    if _current is not None:
        why = _current.dead if _current.dead not in (None, "closed") else None
        _current.close()
        _current = None
    _WRITABLE.clear()
    free_device_tensors()
    if _sandbox is not None:
        if why:
            _sandbox.close()
            _sandbox = None
        else:
            _sandbox.clean()
    return why


def shutdown() -> None:
    global _sandbox
    end_test()
    if _sandbox is not None:
        _sandbox.close()
        _sandbox = None


class fresh_worker:
    """A worker in a sandbox of its own, started for one purpose (a new process, new hash seed):
    `with fresh_worker() as w: w.import_module("block_manager.hashing").hash_block_tokens(...)`."""

    def __enter__(self) -> "Connection":
        if _submission is None:
            raise RuntimeError("autograder.remote.client.configure() was not called")
        self.box = Sandbox(_submission, mode="serve")
        self.conn = self.box.serve_connection()
        self.conn.deadline = _deadline
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()
        self.box.close()


def call_each(obj, name: str, argslist: list[tuple]) -> list:
    """`[obj.name(*args) for args in argslist]` on a submission object, in one round trip."""
    argslist = [tuple(a) for a in argslist]
    if not isinstance(obj, Remote):  # in-process mode: a plain object
        return [getattr(obj, name)(*a) for a in argslist]
    if not argslist:
        return []
    out = obj._r("calls", f"{obj._label()}.{name}(...) x{len(argslist)}", name=name, argslist=argslist)
    if type(out) is not list or len(out) != len(argslist):
        raise TypeError("call_each: the worker answered with something else than one value per call")
    return out


def method_handle(obj, name: str):
    """`obj.name` as a value: the worker's bound method as a handle, which `timing.worker_loop` can
    call in the worker (in-process mode: the plain bound method). Plain `obj.name` on a proxy gives
    a deferred call instead, one request per `obj.name(...)`, and no handle."""
    if not isinstance(obj, Remote):
        return getattr(obj, name)
    return obj._r("getattr", f"{obj._label()}.{name}", name=name)


def gather(objs, name: str) -> list:
    """`[getattr(o, name) for o in objs]` for objects of the submission, in one round trip (a
    property test reads every block's ref_cnt after every step: one request, not one per block)."""
    objs = list(objs)
    if not objs:
        return []
    conn = object.__getattribute__(objs[0], "_r_conn") if isinstance(objs[0], Remote) else None
    if conn is None:  # in-process mode: plain objects
        return [getattr(o, name) for o in objs]
    out = conn.request("gather", f"reading .{name} of {len(objs)} objects", name=name, objs=objs)
    if type(out) is not list or len(out) != len(objs):
        raise TypeError("gather: the worker answered with something else than one value per object")
    return out


