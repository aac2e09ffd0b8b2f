
# ---- attack: network_and_writes (appended to the stubs' kv_cache/kv_cache.py) ---------------
# Reach the network (TCP and UDP to public addresses, DNS, a service on the host's loopback, an
# abstract unix socket of the host) and write outside the worker's /tmp: the submission itself,
# the repository, the Python environment, /root, /etc, /usr, /dev/shm, the grader's protocol,
# and the host folders the test appends as EXTRA_PATHS (the grader's --out folder, the test's
# tmp_path). The report lists what succeeded: only /tmp may.
import os as _os
import socket as _socket

EXTRA_PATHS: list = []


def _network() -> list:
    ok = []
    tries = [("tcp 1.1.1.1:443", lambda: _socket.create_connection(("1.1.1.1", 443), timeout=2)),
             ("tcp 127.0.0.1:22", lambda: _socket.create_connection(("127.0.0.1", 22), timeout=2)),
             ("dns pypi.org", lambda: _socket.getaddrinfo("pypi.org", 443)),
             ("abstract unix socket", lambda: _socket.socket(_socket.AF_UNIX).connect("\0/tmp/.X11-unix/X0"))]
    for name, attempt in tries:
        try:
            attempt()
            ok.append(name)
        except OSError:
            pass
    try:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04pypi\x03org\x00\x00\x01\x00\x01", ("8.8.8.8", 53))
        s.recvfrom(512)
        ok.append("udp 8.8.8.8:53")
    except OSError:
        pass
    return ok


def _writes() -> list:
    with open("/proc/1/cmdline", "rb") as f:
        bound = [a.decode() for a in f.read().split(b"\0") if a.startswith(b"/")]
    targets = [__file__, _os.path.join(_os.path.dirname(__file__), "planted.py"), "/tmp/scratch.txt",
               "/planted", "/root/planted", "/etc/planted", "/usr/planted", "/dev/shm/planted", "/var/tmp/planted",
               "/grader/protocol.py", "/work/main/planted", "/work/main/solutions/kv_cache/attention.py"]
    targets += [_os.path.join(p, "planted") for p in bound if _os.path.isdir(p)]
    targets += list(EXTRA_PATHS)
    ok = []
    for t in targets:
        try:
            with open(t, "a") as f:
                f.write("planted by the submission\n")
            ok.append(t)
        except OSError:
            pass
    return sorted(set(ok))


class KVCache:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"attack report: network={_network()} wrote={_writes()}")
