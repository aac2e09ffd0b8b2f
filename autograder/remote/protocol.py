"""The wire between the grader's test process (trusted) and the worker that runs submission code.

This file is shared by both sides and imports nothing of the grader: the sandbox binds it alone
into the worker, where it runs as a script (see `serve` and `zygote` at the bottom). Everything
the worker sends is decoded into plain values of exact built-in types, fresh `torch.Tensor`s,
or handles to objects that stay in the worker; nothing is unpickled, no class of the worker's
is ever instantiated on the trusted side.

A frame is `!II` (header length, blob length), a JSON header, then the blobs its tensors and
bytes point into. File descriptors of shared memory ride beside a frame (SCM_RIGHTS).

Values (JSON, tagged when not a scalar):

    null, true, 1, 1.5, "s"           None, bool, int, float, str (exactly those types)
    {"L": [...]} {"T": [...]}         list, tuple
    {"S": [...]} {"D": [[k, v], ...]} set, dict
    {"B": i}                          bytes: blob i
    {"X": {...}}                      tensor: by value (dtype, shape, device, blob i), or a view
                                      into shared memory the trusted side owns (mirror, offset,
                                      shape, stride)
    {"dt": "float32"} {"dev": "cpu"}  torch.dtype, torch.device
    {"G": {...}}                      torch.Generator (its state: the worker gets a copy)
    {"sl": [a, b, c]}                 slice
    {"P": "/a/b"}                     a pathlib.Path
    {"H": id, ...}                    a handle: an object that lives on the other side

Requests (trusted -> worker): {"op": "import" | "getattr" | "setattr" | "call" | "getitem" |
"setitem" | "len" | "bool" | "iter" | "repr" | "release" | "bye", ...}; each is answered by
{"ok": value} or {"err": {...}} with the exception's class (a handle) and message.
"""
from __future__ import annotations

import ctypes
import json
import mmap
from pathlib import Path as _Path, PurePath as _PurePath
import os
import socket
import struct
import sys
import time
import traceback

MAX_HEADER = 64 << 20        # bytes of JSON in one frame
MAX_BLOBS = 8 << 30          # bytes of tensor data in one frame
MAX_FDS = 256
_FRAME = struct.Struct("!II")
_QUAD = struct.Struct("!Q")

try:
    import torch

    _DTYPES = {str(d).removeprefix("torch."): d for d in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}
except ImportError:  # pragma: no cover - both sides have torch
    torch = None
    _DTYPES = {}


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed frame or value."""


# ----------------------------------------------------------------------------- frames

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("the other side closed the connection")
        got += k
    return bytes(buf)


def send_frame(sock: socket.socket, header: dict, blobs: list, fds: list[int] = ()) -> None:
    body = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    total = sum(len(b) for b in blobs)
    first = _FRAME.pack(len(body), 0) + _QUAD.pack(total)
    if fds:
        socket.send_fds(sock, [first], list(fds))
    else:
        sock.sendall(first)
    sock.sendall(body)
    for b in blobs:
        sock.sendall(b)


def recv_frame(sock: socket.socket, *, max_header: int = MAX_HEADER, max_blobs: int = MAX_BLOBS):
    """(header, blobs as one bytes object, fds). Bounds are checked before anything is read."""
    msg, fds, _flags, _ = socket.recv_fds(sock, _FRAME.size + _QUAD.size, MAX_FDS)
    if not msg:
        raise EOFError("the other side closed the connection")
    if len(msg) < _FRAME.size + _QUAD.size:
        msg += _recv_exact(sock, _FRAME.size + _QUAD.size - len(msg))
    hlen, _ = _FRAME.unpack_from(msg)
    (blen,) = _QUAD.unpack_from(msg, _FRAME.size)
    if hlen > max_header or blen > max_blobs:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"frame too large: {hlen} bytes of header, {blen} of data "
                            f"(limits {max_header}, {max_blobs})")
    try:
        header = json.loads(_recv_exact(sock, hlen))
    except ValueError as e:
        raise ProtocolError(f"malformed header: {e}") from None
    blob = _recv_exact(sock, blen) if blen else b""
    if type(header) is not dict:
        raise ProtocolError("a frame's header must be an object")
    return header, blob, list(fds)


# ----------------------------------------------------------------------------- shared memory

class SharedBuffer:
    """An anonymous shared-memory file (memfd) mapped into this process, as a uint8 tensor."""

    def __init__(self, nbytes: int, fd: int | None = None):
        self.nbytes = nbytes
        if fd is None:
            fd = os.memfd_create("autograder-tensor", os.MFD_CLOEXEC)
            os.ftruncate(fd, max(nbytes, 1))
        elif os.fstat(fd).st_size < nbytes:
            os.close(fd)
            raise ProtocolError("shared buffer smaller than announced")
        self.fd = fd
        self.map = mmap.mmap(fd, max(nbytes, 1))
        self.bytes = (torch.frombuffer(self.map, dtype=torch.uint8, count=nbytes) if nbytes
                      else torch.empty(0, dtype=torch.uint8))

    def view(self, dtype, offset: int, shape, stride):
        return strided_view(self.bytes, dtype, offset, shape, stride)


def strided_view(u8, dtype, offset, shape, stride):
    """A tensor of `dtype` over the bytes of `u8` (offset and strides in elements), bounds checked:
    a view the other side describes can never reach outside the buffer it names."""
    if not (type(offset) is int and type(shape) is list and type(stride) is list and len(shape) == len(stride)
            and all(type(x) is int for x in shape + stride)):
        raise ProtocolError("bad tensor view")
    item = torch.empty((), dtype=dtype).element_size()
    nbytes = u8.numel()
    if nbytes % item:
        raise ProtocolError("shared buffer size is not a multiple of the element size")
    empty = any(s == 0 for s in shape)
    extent = 0 if empty else offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1
    if offset < 0 or any(s < 0 for s in shape) or any(st < 0 for st in stride) or extent * item > nbytes:
        raise ProtocolError("tensor view outside its shared buffer")
    storage = u8.view(dtype) if nbytes else torch.empty(0, dtype=dtype)
    return storage.as_strided(shape, stride, offset if not empty else 0)


def mirror_view(spec: dict, u8_of, share_u8_of=None) -> "torch.Tensor":
    """The tensor a view spec {"m" | "v", "dt", "o", "s", "st"} describes: over the bytes
    `u8_of(m)` gives for mirror m, or `share_u8_of(v)` for device share v (None: no such buffer),
    bounds checked. Both sides decode views this way."""
    if "v" in spec:
        u8 = share_u8_of(spec.get("v")) if share_u8_of is not None else None
    else:
        u8 = u8_of(spec.get("m"))
    if u8 is None:
        raise ProtocolError(f"unknown shared buffer {spec.get('m', spec.get('v'))!r}")
    if spec.get("dt") not in _DTYPES:
        raise ProtocolError("unknown dtype")
    return strided_view(u8, _DTYPES[spec["dt"]], spec.get("o"), spec.get("s"), spec.get("st"))


# ----------------------------------------------------------------------------- GPU memory both sides map

class _MemLocation(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]


class _AllocProp(ctypes.Structure):  # CUmemAllocationProp
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int), ("location", _MemLocation),
                ("win32HandleMetaData", ctypes.c_void_p), ("allocFlags", _AllocFlags)]


class _AccessDesc(ctypes.Structure):  # CUmemAccessDesc
    _fields_ = [("location", _MemLocation), ("flags", ctypes.c_int)]


_PINNED, _POSIX_FD, _ON_DEVICE, _READ_WRITE = 1, 1, 1, 3  # CUDA driver API enum values
_driver = None


def _cu(name: str, *args) -> None:
    global _driver
    if _driver is None:
        _driver = ctypes.CDLL("libcuda.so.1")
    rc = getattr(_driver, name)(*args)
    if rc != 0:
        text = ctypes.c_char_p()
        _driver.cuGetErrorName(rc, ctypes.byref(text))
        raise RuntimeError(f"CUDA driver {name}: {(text.value or b'?').decode()} ({rc})")


class _CudaArray:
    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 2}


class DeviceShare:
    """GPU memory the trusted side allocates and a worker maps: the CUDA driver's virtual-memory
    API with a POSIX file descriptor as the shareable handle. Legacy CUDA IPC handles do not cross
    PID namespaces (the sandbox has its own); a descriptor rides SCM_RIGHTS like the mirrors do.
    The speed harness keeps a timed loop's inputs and outputs here, so that the trusted process
    writes the inputs and copies the outputs out itself, with no code of the worker in between.

    `bytes` is a uint8 CUDA tensor over the whole allocation; views of it are made by
    `strided_view`. Created with fd=None (the owner) or from a received fd and the owner's size."""

    def __init__(self, nbytes: int, device: int, fd: int | None = None, size: int | None = None):
        if not (type(nbytes) is int and nbytes > 0 and type(device) is int and device >= 0):
            raise ProtocolError("bad device share")
        torch.empty(1, device=f"cuda:{device}")  # torch's primary context, current on this thread
        prop = _AllocProp(type=_PINNED, requestedHandleTypes=_POSIX_FD, location=_MemLocation(_ON_DEVICE, device))
        gran = ctypes.c_size_t()
        _cu("cuMemGetAllocationGranularity", ctypes.byref(gran), ctypes.byref(prop), 0)
        g = max(int(gran.value), 1)
        want = -(-nbytes // g) * g
        if size is not None and (type(size) is not int or size != want):
            raise ProtocolError("device share size does not match its byte count")
        self.nbytes, self.size, self.device = nbytes, want, device
        handle, ptr = ctypes.c_ulonglong(), ctypes.c_ulonglong()
        if fd is None:
            _cu("cuMemCreate", ctypes.byref(handle), ctypes.c_size_t(want), ctypes.byref(prop), ctypes.c_ulonglong(0))
        else:
            _cu("cuMemImportFromShareableHandle", ctypes.byref(handle), ctypes.c_void_p(fd), _POSIX_FD)
            os.close(fd)
        self.handle = handle
        _cu("cuMemAddressReserve", ctypes.byref(ptr), ctypes.c_size_t(want), ctypes.c_size_t(g), ctypes.c_ulonglong(0),
            ctypes.c_ulonglong(0))
        _cu("cuMemMap", ptr, ctypes.c_size_t(want), ctypes.c_size_t(0), handle, ctypes.c_ulonglong(0))
        access = _AccessDesc(_MemLocation(_ON_DEVICE, device), _READ_WRITE)
        _cu("cuMemSetAccess", ptr, ctypes.c_size_t(want), ctypes.byref(access), ctypes.c_size_t(1))
        self.ptr = ptr.value
        self.fd = None
        if fd is None:
            out = ctypes.c_int(-1)
            _cu("cuMemExportToShareableHandle", ctypes.byref(out), handle, _POSIX_FD, ctypes.c_ulonglong(0))
            self.fd = out.value
        self.bytes = torch.as_tensor(_CudaArray(self.ptr, nbytes), device=f"cuda:{device}")

    def close(self) -> None:
        """Unmap and release (the caller synchronised, and no tensor over `bytes` is used again)."""
        if self.ptr:
            self.bytes = None
            _cu("cuMemUnmap", ctypes.c_ulonglong(self.ptr), ctypes.c_size_t(self.size))
            _cu("cuMemAddressFree", ctypes.c_ulonglong(self.ptr), ctypes.c_size_t(self.size))
            _cu("cuMemRelease", self.handle)
            self.ptr = 0
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------- values

_SCALARS = (type(None), bool, int, float, str)


def dtype_name(d) -> str:
    return str(d).removeprefix("torch.")


def tensor_bytes(t) -> bytes:
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensor_from_bytes(data: bytes, dtype: str, shape: list[int]):
    if dtype not in _DTYPES:
        raise ProtocolError(f"unknown dtype {dtype!r}")
    d = _DTYPES[dtype]
    n = 1
    for s in shape:
        if type(s) is not int or s < 0:
            raise ProtocolError("bad tensor shape")
        n *= s
    item = torch.empty((), dtype=d).element_size()
    if len(data) != n * item:
        raise ProtocolError(f"tensor data of {len(data)} bytes for shape {shape} {dtype}")
    if n == 0:
        return torch.empty(shape, dtype=d)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(d).reshape(shape)


class Codec:
    """Turns values into JSON + blobs and back. `handle_of(obj)` and `from_handle(msg)` decide
    what crosses as a handle; `share(t)` / `shared(spec)` map tensors to shared memory."""

    def __init__(self, handle_of, from_handle, share=None, shared=None, on_tensor=None):
        self.handle_of, self.from_handle = handle_of, from_handle
        self.share, self.shared, self.on_tensor = share, shared, on_tensor
        self.pin = None

    def encode(self, value, blobs: list, depth: int = 0):
        if depth > 64:
            raise ValueError("value nested more than 64 deep")
        t = type(value)
        if t in _SCALARS:
            return value
        if t is list or t is tuple or (isinstance(value, tuple) and torch is not None
                                       and isinstance(value, torch.Size)):
            items = [self.encode(v, blobs, depth + 1) for v in value]
            return {"L": items} if t is list else {"T": items}
        if t is dict:
            return {"D": [[self.encode(k, blobs, depth + 1), self.encode(v, blobs, depth + 1)]
                          for k, v in value.items()]}
        if t is set or t is frozenset:
            return {"S": [self.encode(v, blobs, depth + 1) for v in value]}
        if t is bytes or t is bytearray:
            blobs.append(bytes(value))
            return {"B": len(blobs) - 1, "n": len(value)}
        if isinstance(value, _PurePath):
            return {"P": str(value)}
        if t is slice:
            return {"sl": [self.encode(value.start, blobs), self.encode(value.stop, blobs),
                           self.encode(value.step, blobs)]}
        if torch is not None:
            if isinstance(value, torch.Tensor):
                spec = self.share(value) if self.share is not None else None
                if spec is None:
                    data = tensor_bytes(value)
                    blobs.append(data)
                    spec = {"dt": dtype_name(value.dtype), "s": list(value.shape), "b": len(blobs) - 1,
                            "n": len(data), "dev": str(value.device), "wp": _storage_ptr(value)}
                    if self.pin is not None:  # kept alive while the copy is: its address stays its own
                        spec["wh"] = self.pin(value)
                return {"X": spec}
            if t is torch.dtype:
                return {"dt": dtype_name(value)}
            if t is torch.device:
                return {"dev": str(value)}
            if t is torch.Generator:
                state = value.get_state()
                blobs.append(tensor_bytes(state))
                return {"G": {"b": len(blobs) - 1, "n": state.numel(), "dev": str(value.device)}}
        return self.handle_of(value)

    def decode(self, value, blob: bytes, fds=None, depth: int = 0):
        if depth > 64:
            raise ProtocolError("value nested more than 64 deep")
        t = type(value)
        if t in _SCALARS:
            return value
        if t is not dict or len(value) == 0:
            raise ProtocolError(f"not a value: {str(value)[:80]}")
        if "L" in value or "T" in value:
            items = value.get("L", value.get("T"))
            if type(items) is not list:
                raise ProtocolError("bad sequence")
            out = [self.decode(v, blob, fds, depth + 1) for v in items]
            return out if "L" in value else tuple(out)
        if "D" in value:
            return {self.decode(k, blob, fds, depth + 1): self.decode(v, blob, fds, depth + 1) for k, v in value["D"]}
        if "S" in value:
            return {self.decode(v, blob, fds, depth + 1) for v in value["S"]}
        if "B" in value:
            return self._blob(value, blob)
        if "X" in value:
            spec = value["X"]
            if "m" in spec or "v" in spec:  # a view of shared memory: a mirror, or a device share
                return self.shared(spec)
            t = tensor_from_bytes(self._blob(spec, blob), spec.get("dt"), spec.get("s"))
            dev = spec.get("dev", "cpu")
            t = t.to(dev) if dev != "cpu" and _device_ok(dev) else t
            if self.on_tensor is not None:
                self.on_tensor(t, spec)
            return t
        if "dt" in value:
            if value["dt"] not in _DTYPES:
                raise ProtocolError(f"unknown dtype {value['dt']!r}")
            return _DTYPES[value["dt"]]
        if "dev" in value:
            return torch.device(str(value["dev"]))
        if "G" in value:
            g = value["G"]
            dev = g.get("dev", "cpu")
            gen = torch.Generator(device=dev if _device_ok(dev) else "cpu")
            gen.set_state(tensor_from_bytes(self._blob(g, blob), "uint8", [g["n"]]))
            return gen
        if "P" in value:
            return _Path(str(value["P"]))
        if "sl" in value:
            a, b, c = (self.decode(v, blob, fds, depth + 1) for v in value["sl"])
            return slice(a, b, c)
        if "H" in value:
            return self.from_handle(value)
        raise ProtocolError(f"unknown value tag {sorted(value)[:3]}")

    @staticmethod
    def _blob(spec: dict, blob: bytes) -> bytes:
        # blobs are laid out in order: the offset of blob i is found by the caller's index
        start, n = spec.get("_o"), spec.get("n")
        if type(start) is not int or type(n) is not int or start < 0 or n < 0 or start + n > len(blob):
            raise ProtocolError("blob reference out of range")
        return blob[start:start + n]


def _storage_ptr(t) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except Exception:  # noqa: BLE001
        return 0


def _device_ok(dev: str) -> bool:
    return not str(dev).startswith("cuda") or (torch is not None and torch.cuda.is_available())


def place_blobs(header, blobs: list) -> None:
    """Write each blob's byte offset into the specs that point at it (`_o`), before sending."""
    offsets, acc = [], 0
    for b in blobs:
        offsets.append(acc)
        acc += len(b)

    def walk(v):
        if type(v) is dict:
            if "b" in v and "n" in v and type(v["b"]) is int:
                v["_o"] = offsets[v.pop("b")]
            elif "B" in v and type(v["B"]) is int:
                v["_o"] = offsets[v.pop("B")]
                v["B"] = True
            for x in v.values():
                walk(x)
        elif type(v) is list:
            for x in v:
                walk(x)
    walk(header)


# ----------------------------------------------------------------------------- the worker

class _Worker:
    """Serves one connection: the objects the trusted side holds handles to live in `objects`."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}          # id(obj) -> handle, so one object keeps one handle
        self.next_id = 1
        self.mirrors: dict[int, SharedBuffer] = {}
        self.on_device: dict[int, object] = {}  # mirror id -> its copy on the GPU (a mirror of a CUDA tensor)
        self.mirror_of: dict[tuple[str, int], int] = {}  # (device, data_ptr of a mirror's storage) -> mirror id
        self.classes_sent: dict[int, type] = {}  # classes whose method names the trusted side has
        self.device_shares: dict[int, DeviceShare] = {}  # GPU memory the trusted side owns, mapped here
        self.share_of: dict[int, int] = {}  # base address -> device share id
        self.benches: dict[int, tuple] = {}  # timed loops made by "bench": id -> (run, what keeps it alive)
        self.codec = Codec(self._handle_of, self._from_handle, self._share, self._shared)
        self.codec.pin = self._pin

    def _pin(self, t) -> int:
        h = self.next_id
        self.next_id += 1
        self.objects[h] = t  # released like a handle, when the trusted side drops its copy
        return h

    # handles
    def _handle_of(self, obj) -> dict:
        h = self.ids.get(id(obj))
        if h is None or self.objects.get(h) is not obj:
            h = self.next_id
            self.next_id += 1
            self.objects[h], self.ids[id(obj)] = obj, h
        kind = ("exc_class" if isinstance(obj, type) and issubclass(obj, BaseException) else
                "class" if isinstance(obj, type) else "module" if type(obj) is type(sys) else
                "callable" if callable(obj) else "object")
        own = getattr(obj, "__qualname__", None) if kind in ("callable", "class", "exc_class") else None
        out = {"H": h, "k": kind, "n": (own if isinstance(own, str) else _name_of(obj))[:200]}
        if kind == "object":  # its class's methods, once per class: a method call is then one request
            t = type(obj)
            out["tc"] = key = id(t)
            if key not in self.classes_sent:
                self.classes_sent[key] = t
                out["methods"] = _method_names(t)
        if kind == "exc_class" and obj.__module__ == "builtins":
            out["builtin"] = obj.__name__
        elif kind == "exc_class":
            out["mro"] = [self._exc_link(c) for c in obj.__mro__[1:] if issubclass(c, BaseException)][:16]
        return out

    def _exc_link(self, cls) -> dict:
        if cls.__module__ == "builtins":
            return {"builtin": cls.__name__}
        return {"H": self._handle_of(cls)["H"], "n": _name_of(cls)[:200]}

    def _from_handle(self, msg: dict):
        h = msg.get("H")
        if h not in self.objects:
            raise ProtocolError(f"unknown handle {h!r}")
        return self.objects[h]

    # shared tensors: a tensor over a mirror's memory goes back as a view of it
    def _share(self, t):
        try:
            key = (str(t.device), t.untyped_storage().data_ptr())
        except Exception:  # noqa: BLE001
            return None
        v = self.share_of.get(key[1]) if key[0].startswith("cuda") else None
        if v is not None:
            return {"v": v, "dt": dtype_name(t.dtype), "o": t.storage_offset(), "s": list(t.shape),
                    "st": list(t.stride())}
        m = self.mirror_of.get(key)
        if m is None:
            return None
        return {"m": m, "dt": dtype_name(t.dtype), "o": t.storage_offset(), "s": list(t.shape), "st": list(t.stride())}

    def _shared(self, spec: dict):
        return mirror_view(spec, lambda m: self.on_device.get(m, self.mirrors[m].bytes) if m in self.mirrors else None,
                           lambda v: self.device_shares[v].bytes if v in self.device_shares else None)

    def _add_device_share(self, spec: dict, fd: int) -> None:
        if type(spec.get("id")) is not int or spec["id"] in self.device_shares:
            os.close(fd)
            raise ProtocolError("bad device share id")
        d = DeviceShare(spec.get("n"), spec.get("dev"), fd=fd, size=spec.get("size"))
        self.device_shares[spec["id"]] = d
        self.share_of[d.ptr] = spec["id"]

    def _add_mirror(self, m: dict, fd: int) -> None:
        buf = SharedBuffer(m["n"], fd)
        self.mirrors[m["id"]] = buf
        dev = str(m.get("dev", "cpu"))
        if dev != "cpu" and m["n"]:
            self.on_device[m["id"]] = d = torch.empty(m["n"], dtype=torch.uint8, device=dev)
            self.mirror_of[(str(d.device), d.data_ptr())] = m["id"]
        elif m["n"]:
            self.mirror_of[("cpu", buf.bytes.data_ptr())] = m["id"]

    def _sync_device_mirrors(self, to_device: bool) -> None:
        for mid, d in self.on_device.items():
            (d.copy_(self.mirrors[mid].bytes) if to_device else self.mirrors[mid].bytes.copy_(d))

    def _reply(self, header: dict, blobs: list) -> None:
        place_blobs(header, blobs)
        send_frame(self.sock, header, blobs)

    def serve(self) -> None:
        while True:
            try:
                req, blob, fds = recv_frame(self.sock)
            except EOFError:
                return
            mirrors, shares = req.get("new_mirrors", []), req.get("new_shares", [])
            for m, fd in zip(mirrors, fds):
                self._add_mirror(m, fd)
            share_error = None
            for spec, fd in zip(shares, fds[len(mirrors):]):
                try:
                    self._add_device_share(spec, fd)
                except BaseException as e:  # noqa: BLE001 - no GPU, a driver error: the request fails with it
                    share_error = share_error or e
            for h in req.get("release", ()):
                o = self.objects.pop(h, None)
                if o is not None and self.ids.get(id(o)) == h:
                    del self.ids[id(o)]
            if req.get("op") == "bye":
                return
            blobs: list = []
            try:
                if share_error is not None:
                    raise share_error
                self._sync_device_mirrors(to_device=True)
                with torch.set_grad_enabled(bool(req.get("grad", True))):
                    value = self.handle(req, blob)
                out = {"ok": self.codec.encode(value, blobs)}
            except BaseException as e:  # noqa: BLE001 - everything the submission raises goes back as data
                blobs = []
                out = {"err": self._error(e)}
            try:
                self._sync_device_mirrors(to_device=False)
            except BaseException as e:  # noqa: BLE001 - a broken CUDA context, say
                blobs, out = [], {"err": self._error(e)}
            self._reply(out, blobs)

    def _bench(self, fn, calls, graph: bool) -> dict:
        """Prepare a timed loop (untimed): two warm-up calls (compilation, autotuning, allocation) on
        a side stream, then every call captured into one CUDA graph, so that a run is one launch and
        its time is the GPU's. A call that cannot be captured (it synchronises with the host, say)
        runs as a Python loop instead, paying its launch overhead; the reply says which, and why."""
        if type(calls) is not list or not all(type(c) in (list, tuple) and len(c) == 2 for c in calls):
            raise ProtocolError("bench: calls must be [args, kwargs] pairs")
        calls = [(list(a), {str(k): v for k, v in dict(kw).items()}) for a, kw in calls]
        keep: object = calls
        run, why = None, ""
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for args, kwargs in calls[:2]:
                    fn(*args, **kwargs)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            if graph and calls:
                g = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(g):
                        for args, kwargs in calls:
                            fn(*args, **kwargs)
                    run, keep = g.replay, (g, calls)
                except Exception as e:  # noqa: BLE001 - not capturable: the loop below
                    why = f"{type(e).__name__}: {str(e)[:300]}"
                    torch.cuda.synchronize()
        else:
            for args, kwargs in calls[:2]:
                fn(*args, **kwargs)
        if run is None:
            run = _bench_loop(fn, calls)
        bid = self.next_id
        self.next_id += 1
        self.benches[bid] = (run, keep)
        return {"id": bid, "graph": cuda and graph and bool(calls) and why == "", "why": why}

    @staticmethod
    def _script(obj, methods, steps, pluck):
        """Run `steps` on obj: step [m, a] calls obj.<methods[m]>(a), where a is an int, or
        {"r": j} / {"r": j, "rev": 1} for step j's result (reversed). The answer is the transcript:
        for every element of every result of a method named in `pluck` (method -> attribute), that
        attribute as an int, packed as int64 bytes, so that the trusted side can check every call
        without a round trip per call."""
        import array

        if type(methods) is not list or type(steps) is not list or type(pluck) is not dict:
            raise ProtocolError("script: methods, steps and pluck")
        bound = [getattr(obj, str(m)) for m in methods]
        attrs = [pluck.get(m) for m in methods]
        results: list = [None] * len(steps)
        out = array.array("q")
        for i, (m, a) in enumerate(steps):
            if type(a) is dict:
                r = results[a["r"]]
                results[a["r"]] = None  # each result is taken once
                a = r[::-1] if a.get("rev") else r
            r = results[i] = bound[m](a)
            if attrs[m] is not None:
                out.extend(int(getattr(x, attrs[m])) for x in r)
        return out.tobytes()

    def _error(self, e: BaseException) -> dict:
        try:
            msg = str(e)
        except BaseException:  # noqa: BLE001
            msg = "<the exception's __str__ raised>"
        tb = [[f.filename, f.lineno, f.name] for f in traceback.extract_tb(e.__traceback__)][-12:]
        if isinstance(e, SyntaxError) and e.filename:
            tb.append([e.filename, e.lineno or 0, "<syntax>"])
        try:
            cls = self._handle_of(type(e))
        except BaseException:  # noqa: BLE001
            cls = None
        return {"cls": cls, "name": _name_of(type(e))[:200], "msg": msg[:4000], "tb": tb}

    def handle(self, req: dict, blob: bytes):
        op = req.get("op")
        dec = lambda v: self.codec.decode(v, blob)  # noqa: E731
        if op == "gather":  # one attribute of many objects in one round trip
            return [getattr(o, str(req["name"])) for o in dec(req["objs"])]
        if op == "import":
            import importlib

            return importlib.import_module(str(req["name"]))
        obj = self._from_handle(req) if "H" in req else None
        if op == "calls":  # one method called with many argument lists in one round trip
            method = getattr(obj, str(req["name"]))
            return [method(*args) for args in dec(req["argslist"])]
        if op == "script":  # many method calls on one object in one round trip (a timed workload)
            return self._script(obj, req.get("methods"), req.get("steps"), req.get("pluck"))
        if op == "bench":  # a timed loop: obj(*args, **kwargs) for each call, in one CUDA graph where it can be
            return self._bench(obj, dec(req["calls"]), bool(req.get("graph", True)))
        if op == "bench_run":  # run it once, and return when the GPU has finished it
            run = self.benches[int(req["bench"])][0]
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return None
        if op == "getattr":
            return getattr(obj, str(req["name"]))
        if op == "setattr":
            return setattr(obj, str(req["name"]), dec(req["value"]))
        if op == "callmethod":
            obj = getattr(obj, str(req["name"]))
            op = "call"
        if op == "call":
            args = dec(req.get("args", {"L": []}))
            kwargs = dec(req.get("kwargs", {"D": []}))
            return obj(*args, **{str(k): v for k, v in kwargs.items()})
        if op == "getitem":
            return obj[dec(req["key"])]
        if op == "setitem":
            obj[dec(req["key"])] = dec(req["value"])
            return None
        if op == "len":
            return len(obj)
        if op == "bool":
            return bool(obj)
        if op == "iter":
            return list(obj)
        if op == "contains":
            return dec(req["value"]) in obj
        if op == "repr":
            return repr(obj)[:2000]
        if op == "ping":
            return os.getpid()
        raise ProtocolError(f"unknown request {op!r}")


def _bench_loop(fn, calls):
    def run():
        for args, kwargs in calls:
            fn(*args, **kwargs)
    return run


def _method_names(t: type) -> list[str]:
    import types

    names = set()
    for klass in t.__mro__[:-1]:
        for n, v in vars(klass).items():
            if isinstance(v, (types.FunctionType, staticmethod, classmethod)) and not n.startswith("__"):
                names.add(n)
    return sorted(names)[:500]


def _name_of(obj) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', t.__name__)}" if t is not type(sys) \
        else f"module {getattr(obj, '__name__', '?')}"


# What a submission may not import in the worker: the baselines it is compared against, and the
# model and generation code of transformers (a model of the tests' own). Not a wall (the files are
# readable): it turns "use the library" into an error that names the rule.
_BLOCKED = ("vllm", "deepspeed", "flash_attn", "transformers.generation", "transformers.pipelines",
            "transformers.integrations")


class _BlockBaselines:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in _BLOCKED) or (
                name.startswith("transformers.models.") and ".modeling_" in name):
            raise ImportError(f"the submission may not import {name}: it is what the grader compares against. "
                              "Write the code yourself (remove this import).", name=name)
        return None


def _reseed() -> None:
    """Forked workers would all start from the zygote's generator states: draw new ones from the
    OS's entropy, so what student code draws without a seed cannot be predicted."""
    import random

    random.seed(os.urandom(16))
    torch.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)


def serve(fd: int, submission: str | None = None, library: str | None = None, trusted: bool = False) -> None:
    """Run a worker on an inherited socket: the submission's folder goes first on sys.path, then
    the folder holding the course library (llmsys). A trusted worker (the speed tests' baselines,
    in a process of their own: `import vllm` changes settings of the process that imports it)
    runs no submission code and may import the baselines."""
    import faulthandler

    faulthandler.enable()  # a segfault leaves its traceback in the log the grader reads
    if not trusted:
        sys.meta_path.insert(0, _BlockBaselines())
    if library and library not in sys.path:
        sys.path.insert(0, library)
    if submission:
        sys.path.insert(0, submission)
    sock = socket.socket(fileno=fd)
    _Worker(sock).serve()


def zygote(fd: int, submission: str | None, library: str | None = None) -> None:
    """Import the heavy libraries once, then fork one fresh worker per test: each request on the
    control socket carries a new socket (SCM_RIGHTS); the reply is the child's pid."""
    import torch  # noqa: F401 - what every worker needs, loaded before the fork
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        pass
    import select

    ctl = socket.socket(fileno=fd)
    send_frame(ctl, {"ready": os.getpid()}, [])
    ended: dict[int, int] = {}  # pid -> exit code, or -signal (kept for the grader's question)

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ended[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            if len(ended) > 4096:
                ended.pop(next(iter(ended)))

    while True:
        reap()
        if not select.select([ctl], [], [], 0.5)[0]:
            continue
        try:
            req, _, fds = recv_frame(ctl)
        except EOFError:
            return
        if req.get("op") == "status":
            pid, deadline = req.get("pid"), time.monotonic() + 2.0
            while pid not in ended and time.monotonic() < deadline:
                reap()
                time.sleep(0.02)
            send_frame(ctl, {"status": ended.get(pid)}, [])
            continue
        if req.get("op") != "fork" or len(fds) != 1:
            for f in fds:
                os.close(f)
            continue
        pid = os.fork()
        if pid == 0:
            ctl.close()
            os.setpgid(0, 0)
            _reseed()
            try:
                serve(fds[0], submission, library)
            finally:
                os._exit(0)
        os.close(fds[0])
        send_frame(ctl, {"pid": pid}, [])


if __name__ == "__main__":
    # python protocol.py zygote|serve|trusted FD [SUBMISSION [LIBRARY]]
    mode, fd = sys.argv[1], int(sys.argv[2])
    sub = (sys.argv[3] or None) if len(sys.argv) > 3 else None
    lib = sys.argv[4] if len(sys.argv) > 4 else None
    if mode == "zygote":
        zygote(fd, sub, lib)
    else:
        serve(fd, sub, lib, trusted=mode == "trusted")
