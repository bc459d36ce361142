"""procslice runtime: cgroup-aware sizing, sd_notify and the aio and swoole supervisors."""

__version__ = "0.1.0"
