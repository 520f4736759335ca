"""The machine a benchmark ran on, recorded next to its numbers."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    """CPU model and cores, torch version and threads, Python, the device (with the GPU's name on CUDA) and
    the 1-minute load average when this is called (the machine may be shared)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": "cuda" if cuda else "cpu"}
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info
