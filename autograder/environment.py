"""What every grade and every speed figure is recorded with: machine, GPU, driver, versions."""
from __future__ import annotations

import functools
import importlib.metadata as md
import platform
import subprocess


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@functools.cache
def describe() -> dict:
    env = {"python": platform.python_version(), "machine": platform.machine(), "gpu": None, "driver": None,
           "cuda": None}
    for dist in ("torch", "triton", "transformers", "vllm", "deepspeed", "numpy"):
        env[dist] = _version(dist)
    try:
        import torch

        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = props.name
            env["gpu_count"] = torch.cuda.device_count()
            env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            env["cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    if env["gpu"]:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except Exception:  # noqa: BLE001
            pass
    return env


def one_line(env: dict | None = None) -> str:
    env = env or describe()
    gpu = f"{env['gpu']} (driver {env['driver']}, CUDA {env['cuda']})" if env.get("gpu") else "no GPU"
    libs = ", ".join(f"{k} {env[k]}" for k in ("torch", "triton", "transformers", "vllm", "deepspeed") if env.get(k))
    return f"{gpu}; {libs}; Python {env['python']}"
