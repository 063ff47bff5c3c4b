"""The first line every benchmark prints: the date and the machine its figures come from.

Figures quoted in the docs name the benchmark that printed them and this line (date, CPU model,
usable cores, GPU, torch version): timings differ several-fold between machines and with other
work on the same one.
"""

from __future__ import annotations

import datetime
import os
import platform


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """``benchmark machine: <date>, <cpu>, <n> usable cores, <gpu or no GPU>, torch <v>``."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"benchmark machine: {datetime.date.today().isoformat()}, {cpu_model()}, {cores} usable "
        f"cores{load}, {gpu}, torch {torch.__version__}"
    )
