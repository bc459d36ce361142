"""Build fake /proc and /sys/fs/cgroup trees under a temporary directory.

A :class:`FakeSys` writes ``proc/self/cgroup``, ``proc/self/mountinfo``,
``sys/devices/system/cpu/online`` and cgroup limit files beneath ``root`` so that
``procslice.limits.read_budget(root=str(fs.root))`` sees a chosen layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# v1 hierarchies as a systemd host mounts them: "cpu,cpuacct" is one hierarchy.
V1_HIERARCHIES: tuple[str, ...] = ("cpu,cpuacct", "cpuset", "memory", "pids")

_BASE_MOUNTS = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
    "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
    "24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
)


@dataclass
class FakeSys:
    root: Path
    cgroup_lines: list[str] = field(default_factory=list)
    mount_lines: list[str] = field(default_factory=lambda: list(_BASE_MOUNTS))

    def write(self, relative: str, text: str) -> Path:
        """Write ``text`` to ``root/relative`` (creating parent directories)."""
        path = self.root / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def online_cpus(self, cpu_list: str) -> None:
        """Set ``/sys/devices/system/cpu/online`` (e.g. "0-3")."""
        self.write("sys/devices/system/cpu/online", cpu_list + "\n")

    def flush(self) -> None:
        """Write /proc/self/cgroup and /proc/self/mountinfo from the lines collected so far."""
        self.write("proc/self/cgroup", "".join(line + "\n" for line in self.cgroup_lines))
        self.write("proc/self/mountinfo", "".join(line + "\n" for line in self.mount_lines))

    # -- layouts ----------------------------------------------------------------------

    def v1(
        self,
        path: str = "/",
        *,
        paths: Mapping[str, str] | None = None,
        mount_root: str = "/",
        unified: bool = True,
        hierarchies: tuple[str, ...] = V1_HIERARCHIES,
    ) -> FakeSys:
        """A v1 (hybrid when ``unified``) host: each hierarchy at /sys/fs/cgroup/<name>.

        ``path`` is the process's cgroup in every hierarchy unless ``paths`` overrides it
        per hierarchy; ``mount_root`` is mountinfo's 4th field (a sub-path in containers).
        """
        paths = paths or {}
        self.mount_lines.append(
            "30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755"
        )
        for number, name in enumerate(hierarchies, start=2):
            self.cgroup_lines.append(f"{number}:{name}:{paths.get(name, path)}")
            self.mount_lines.append(
                f"{30 + number} 30 0:{30 + number} {mount_root} /sys/fs/cgroup/{name} "
                f"rw,nosuid,nodev,noexec,relatime shared:{number + 10} - cgroup cgroup rw,{name}"
            )
            (self.root / "sys/fs/cgroup" / name).mkdir(parents=True, exist_ok=True)
        self.cgroup_lines.append(f"1:name=systemd:{path}")
        self.mount_lines.append(
            f"31 30 0:31 {mount_root} /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup "
            "rw,xattr,name=systemd"
        )
        if unified:
            self.cgroup_lines.append(f"0::{path}")
            self.mount_lines.append(
                f"29 30 0:29 {mount_root} /sys/fs/cgroup/unified rw,nosuid,nodev,noexec "
                "shared:9 - cgroup2 cgroup2 rw,nsdelegate"
            )
            self.write("sys/fs/cgroup/unified/cgroup.controllers", "\n")
        self.flush()
        return self

    def v2(self, path: str = "/", *, mount_root: str = "/") -> FakeSys:
        """A pure cgroup v2 host: the unified hierarchy at /sys/fs/cgroup."""
        self.cgroup_lines.append(f"0::{path}")
        self.mount_lines.append(
            f"30 24 0:26 {mount_root} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime "
            "shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot"
        )
        self.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
        self.flush()
        return self

    # -- limit files --------------------------------------------------------------------

    def cg(self, mount: str, path: str, files: Mapping[str, str]) -> Path:
        """Write ``files`` into the cgroup directory ``/sys/fs/cgroup/<mount>/<path>``.

        ``mount`` is the hierarchy's directory ("cpu,cpuacct", "memory", ...) or "" for
        the v2 mount at /sys/fs/cgroup; ``path`` is relative to the mount point.
        """
        directory = self.root / "sys/fs/cgroup" / mount / path.strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text + "\n")
        return directory


def fake_sys(root: Path, online: str = "0-1") -> FakeSys:
    """A FakeSys at ``root`` with ``online`` CPUs and no cgroup layout yet."""
    fs = FakeSys(root)
    fs.online_cpus(online)
    return fs
