"""What every benchmark reports about the machine it ran on."""

from __future__ import annotations


def cpu_model(default: str = "unknown") -> str:
    """The `model name` of /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), default
            )
    except OSError:
        return default
