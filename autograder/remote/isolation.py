"""How the worker that runs submission code is walled off from everything else.

The strongest mechanism this machine offers is used (`choose()`), and grade.json records which:

* `bubblewrap` (bwrap, from the system's packages): new user, PID, mount, network, IPC and UTS
  namespaces; the worker runs as an unprivileged uid and sees only what is bound into it read-only
  (the system's /usr, /etc, the Python environment, the submission at /submission, the course
  library and model data, this folder's protocol.py at /grader) and a size-capped /tmp. It does not
  see the repository (so neither solutions/ nor the suites), other submissions, the grader's output
  folder or the result channel; it has no network but loopback; everything it starts lives in its
  PID namespace and dies with it. The baselines' packages (vLLM, FlashAttention, DeepSpeed) are
  hidden under empty tmpfs mounts: their kernels cannot be loaded by path.
* `namespaces` (util-linux `unshare` + `setpriv`, when the grader is root and bwrap is missing):
  the same namespaces and unprivileged uid, but the file system is the host's with the repository,
  the other submissions and /tmp hidden under empty tmpfs mounts: a deny list, weaker than bwrap's
  allow list (a readable file elsewhere on the host stays readable).
* `process` (neither is available): a separate process only. The grade is still decided in the
  trusted process, but the worker can read whatever the grading user can, and talk to the network.

Limits that apply at every level: a cap on processes (RLIMIT_NPROC, per uid), the runner's
watch on the resident memory of the whole process tree, the per-test and per-call deadlines.
"""
from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .. import DATA_DIR, REPO_ROOT

PROTOCOL = Path(__file__).with_name("protocol.py")
SUBMISSION_MOUNT = "/submission"
GRADER_MOUNT = "/grader"
UID_ENV = "AUTOGRADER_SANDBOX_UID"   # grade-all gives each job its own uid
LEVEL_ENV = "AUTOGRADER_ISOLATION"   # force a level (tests, or an instructor who knows better)
EXTRA_RO_ENV = "AUTOGRADER_SANDBOX_RO"  # more paths the sandbox may read, os.pathsep-separated
DEFAULT_UID = 65534                  # nobody
NPROC = 512                          # tasks (threads count) per sandbox uid
TMP_BYTES = 1 << 30                  # the worker's /tmp
SHM_BYTES = 1 << 30                  # its /dev/shm (both are memory: the runner counts what they hold)


@dataclass
class Isolation:
    level: str        # bubblewrap | namespaces | process
    why: str          # why not a stronger one (empty at the strongest)

    def describe(self) -> str:
        return self.level + (f" ({self.why})" if self.why else "")


def _works(cmd: list[str]) -> bool:
    """Whether this prefix starts this Python (as the sandbox's uid, with its view of the files)."""
    try:
        return subprocess.run(cmd + [sys.executable, "-I", "-c", "import torch"], capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=1)
def choose() -> Isolation:
    forced = os.environ.get(LEVEL_ENV)
    if forced:
        return Isolation(forced, f"set by {LEVEL_ENV}")
    bwrap, is_root = shutil.which("bwrap"), os.geteuid() == 0
    why = []
    if bwrap and _works(_joined(*_bwrap_prefix(bwrap, ro=_python_roots(), tmp_bytes=1 << 20))):
        return Isolation("bubblewrap", "")
    why.append("bubblewrap is not installed (apt-get install bubblewrap)" if not bwrap
               else "bubblewrap cannot create namespaces here")
    if is_root and shutil.which("unshare") and shutil.which("setpriv") and _works(_unshare_prefix([], keep_tmp=True)):
        return Isolation("namespaces", why[0])
    why.append("unshare/setpriv need root and namespace support" if not is_root else
               f"unshare failed, or the sandbox uid {_uid()} cannot run {sys.executable}")
    return Isolation("process", "; ".join(why))


def _joined(cmd: list[str], inside: list[str]) -> list[str]:
    return cmd + ["--"] + inside


def _uid() -> int:
    return int(os.environ.get(UID_ENV, DEFAULT_UID))


def sandbox_gid() -> int | None:
    """The group the staged submission is given to (root only): only this job's sandbox reads it."""
    return _uid() if os.geteuid() == 0 else None


def _python_roots() -> list[str]:
    """Folders the worker's Python needs: the interpreter's prefix, the environment, site-packages."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    paths |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= set(site.getsitepackages())
    out = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}
                 | {p for p in paths if p and os.path.isdir(p)})
    return [p for p in out if p not in ("/", "/usr") and not any(p != q and p.startswith(q + os.sep) for q in out)]


def readable_paths(extra: list[Path] = ()) -> list[str]:
    """What the worker may read besides the system: Python, the course library, model data."""
    from llmsys.models import cache_dir

    paths = _python_roots() + [str(REPO_ROOT / "llmsys"), str(DATA_DIR)]
    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)  # bound now, so checkpoints built later are seen too
    os.chmod(models, 0o755)
    paths.append(str(models))
    # an instructor's extra read-only paths (a library installed outside the Python environment)
    paths += [p for p in os.environ.get(EXTRA_RO_ENV, "").split(os.pathsep) if p and os.path.exists(p)]
    return paths + [str(p) for p in extra]


def _bwrap_prefix(bwrap: str, ro: list[str], tmp_bytes: int = TMP_BYTES) -> tuple[list[str], list[str]]:
    """(bwrap and its options, what runs inside before the command). As root, bwrap makes the
    namespaces and setpriv inside drops to the sandbox uid with no capabilities; otherwise a user
    namespace keeps the caller's own uid."""
    root = os.geteuid() == 0
    cmd = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--proc", "/proc", "--dev", "/dev",
           "--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
           "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
           "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"]
    cmd += ["--cap-add", "CAP_SETUID,CAP_SETGID"] if root else ["--unshare-user", "--disable-userns"]
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/sys", "/opt"):
        cmd += ["--ro-bind-try", d, d]
    for dev in _gpu_devices():
        cmd += ["--dev-bind", dev, dev]
    made: set[str] = {"/"}
    for p in ro:
        for parent in reversed(Path(p).parents):  # mount points' parents, traversable by the sandbox uid
            if str(parent) not in made and str(parent) not in ("/usr", "/etc", "/sys", "/tmp"):
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", p, p]
        made.add(p)
    inside = (["setpriv", f"--reuid={_uid()}", f"--regid={_uid()}", "--clear-groups", "--no-new-privs",
               "--inh-caps=-all", "--bounding-set=-all"] if root else [])
    return cmd, inside


def _gpu_devices() -> list[str]:
    try:
        return sorted(f"/dev/{n}" for n in os.listdir("/dev") if n.startswith("nvidia") or n == "dri")
    except OSError:
        return []


def _unshare_prefix(hide: list[str], keep_tmp: bool = False, limit: list[str] = ()) -> list[str]:
    """Root: new namespaces, empty tmpfs over what must stay hidden, then an unprivileged uid."""
    mounts = [f"mount -t tmpfs -o size=1m,mode=000 none '{p}'" for p in hide if os.path.isdir(p)]
    if not keep_tmp:
        mounts.append(f"mount -t tmpfs -o size={TMP_BYTES},mode=1777 none /tmp")
    drop = (f"exec {' '.join(limit)} setpriv --reuid={_uid()} --regid={_uid()} --clear-groups --no-new-privs "
            "--inh-caps=-all --bounding-set=-all")
    script = " && ".join(mounts + [f'{drop} "$@"'])
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net", "--ipc", "--uts",
            "--propagation", "private", "sh", "-c", script, "sandbox"]


@functools.lru_cache(maxsize=1)
def _protocol_copy() -> Path:
    """protocol.py outside the repository, which the namespaces level hides."""
    import tempfile

    import atexit

    d = Path(tempfile.mkdtemp(prefix="autograder-worker-"))
    atexit.register(shutil.rmtree, d, True)
    os.chmod(d, 0o755)
    shutil.copy(PROTOCOL, d / "protocol.py")
    os.chmod(d / "protocol.py", 0o644)
    (d / "lib").mkdir(mode=0o755)
    shutil.copytree(REPO_ROOT / "llmsys", d / "lib" / "llmsys", ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _dirs, files in os.walk(d / "lib"):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return d / "protocol.py"


# What the submission is compared against: its files are hidden from the worker (bubblewrap and
# namespaces levels), so that it can neither import them nor load their compiled kernels by path.
BASELINE_PACKAGES = ("vllm", "vllm_flash_attn", "flash_attn", "flash_attn_interface", "deepspeed")


def baseline_dirs() -> list[str]:
    """The install folders of the baseline packages (found without importing them)."""
    import importlib.util

    out = []
    for name in BASELINE_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for d in (spec.submodule_search_locations or []) if spec else []:
            if os.path.isdir(d):
                out.append(os.path.realpath(d))
    return sorted(set(out))


@functools.lru_cache(maxsize=1)
def _empty_file() -> Path:
    """An empty, world-readable file to mount over what the worker must not read (a device node
    such as /dev/null cannot be opened on the sandbox's nodev mounts)."""
    import atexit
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="autograder-empty-"))
    atexit.register(shutil.rmtree, d, True)
    os.chmod(d, 0o755)
    f = d / "empty"
    f.write_bytes(b"")
    os.chmod(f, 0o444)
    return f


@functools.lru_cache(maxsize=1)
def baseline_files() -> tuple[str, ...]:
    """transformers' model implementations (`models/*/modeling_*.py`, `modular_*.py` and their
    cached bytecode): what the kv_cache and engine tests compare against. The worker's import
    finder refuses them, but the finder lives in the submission's process, which can remove it;
    under bubblewrap each of these files reads as empty instead. The rest of transformers (configs,
    tokenizers) stays: a submission may tokenize."""
    import glob
    import importlib.util

    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return ()
    out: list[str] = []
    for root in (spec.submodule_search_locations or []) if spec else []:
        for pattern in ("modeling_*.py", "modular_*.py", "__pycache__/modeling_*.pyc", "__pycache__/modular_*.pyc"):
            out += glob.glob(os.path.join(root, "models", "*", pattern))
    return tuple(sorted(os.path.realpath(f) for f in out))


def command(mode: str, submission: Path, fd: int, *, extra_ro: list[Path] = ()) -> tuple[list[str], Isolation]:
    """The command line that starts protocol.py (`zygote` or `serve`) on socket `fd` for a submission."""
    iso = choose()
    py = [sys.executable, "-I", "-B"]
    limit = ["prlimit", f"--nproc={NPROC}:{NPROC}", "--"]  # set before the uid changes (inherited)
    if iso.level == "bubblewrap":
        ro = readable_paths(list(extra_ro))
        cmd, inside = _bwrap_prefix(shutil.which("bwrap"), ro)
        cmd += ["--ro-bind", str(submission), SUBMISSION_MOUNT, "--perms", "0755", "--dir", GRADER_MOUNT,
                "--ro-bind", str(PROTOCOL), f"{GRADER_MOUNT}/protocol.py",
                "--perms", "0755", "--dir", f"{GRADER_MOUNT}/lib",
                "--ro-bind", str(REPO_ROOT / "llmsys"), f"{GRADER_MOUNT}/lib/llmsys"]
        for d in baseline_dirs():
            cmd += ["--tmpfs", d]
        for f in baseline_files():
            cmd += ["--ro-bind", str(_empty_file()), f]
        cmd += ["--chdir", "/tmp"]
        return cmd + ["--", *limit, *inside, *py, f"{GRADER_MOUNT}/protocol.py", mode, str(fd), SUBMISSION_MOUNT,
                      f"{GRADER_MOUNT}/lib"], iso
    if iso.level == "namespaces":
        hide = [str(REPO_ROOT / n) for n in ("solutions", "autograder", ".git")] + ["/home", "/root/.ssh"]
        hide += baseline_dirs() + [p for p in os.environ.get("AUTOGRADER_HIDE", "").split(os.pathsep) if p]
        return _unshare_prefix(hide, keep_tmp=True, limit=limit) + [*py, str(_protocol_copy()), mode, str(fd),
                                                                    str(submission),
                                                                    str(_protocol_copy().parent / "lib")], iso
    # as root, still an unprivileged uid (needs only CAP_SETUID: works in a container without namespaces)
    drop = ([shutil.which("setpriv"), f"--reuid={_uid()}", f"--regid={_uid()}", "--clear-groups", "--no-new-privs"]
            if os.geteuid() == 0 and shutil.which("setpriv") else [])
    return [*limit, *drop, *py, str(_protocol_copy()), mode, str(fd), str(submission),
            str(_protocol_copy().parent / "lib")], iso


def suite_command(cmd: list[str], workdir: Path, submission: Path,
                  writable: dict[str, str] = {}) -> tuple[list[str], Isolation]:
    """A legacy in-process pass (its pytest process runs submission code) in the same isolation as
    the worker: it sees the repository read-only without solutions/ and .git, its own work folder
    (the result channel) and `writable` (host folder -> path inside) read-write, the staged
    submission read-only; not the grader's output, other submissions or the network. Its records
    are still not trusted beyond its own tiers (runner.py): this only keeps it off everything else."""
    iso = choose()
    hide = [str(REPO_ROOT / n) for n in ("solutions", ".git")]
    os.chmod(workdir, 0o777)
    if iso.level == "bubblewrap":
        ro = readable_paths() + [str(REPO_ROOT)] + _pythonpath()
        pre, inside = _bwrap_prefix(shutil.which("bwrap"), sorted(set(ro)))
        for h in hide:
            if os.path.isdir(h):
                pre += ["--tmpfs", h]
        pre += ["--ro-bind", str(submission), SUBMISSION_MOUNT, "--bind", str(workdir), str(workdir),
                "--setenv", "AUTOGRADER_IMPL", SUBMISSION_MOUNT,
                "--chdir", str(workdir), "--setenv", "AUTOGRADER_ISOLATION_LEVEL", iso.level]
        for src, dst in writable.items():
            pre += ["--bind", src, dst]
        return pre + ["--", *inside, *cmd], iso
    if iso.level == "namespaces":
        extra = [p for p in os.environ.get("AUTOGRADER_HIDE", "").split(os.pathsep) if p]
        return _unshare_prefix(hide + extra, keep_tmp=True) + cmd, iso
    return cmd, iso


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isdir(p)]
