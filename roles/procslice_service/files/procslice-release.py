"""Install the releases of a host's services in one call (roles/procslice_service).

Run by the role as ``python3 -c <this file> VENV_SCRIPT`` with the jobs as JSON on
stdin, one per service whose release the plan listed:

    {"name": "api", "dir": "/srv/procslice/api", "hash": "0123456789ab",
     "unit": "procslice-api", "keep": 5, "install": ["api==1.4", ...]}

For each, in order: the release of this wheelhouse hash (the newest directory
``releases/*-<hash>``, else a new ``<UTC time>-<hash>``), built from
``wheelhouse/<hash>.tar`` by VENV_SCRIPT unless it is complete (``.complete``); staged
as ``current.next`` (the unit switches to it when it starts or reloads) or, for a
service without a unit yet, made ``current`` at once; then the releases beyond
``keep`` (newest first; the chosen one never) removed with their wheelhouses.

Prints one JSON object: ``{"releases": {name: release}, "results": [{"name",
"release", "built", "stage", "expired", "error"}], "changed": bool}``, and exits 1
naming each service that failed on stderr (the others are still done); ``stage`` is
unchanged, staged, switched or unstaged. Python's standard library only: it runs
with the host's python3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any


def _link(target: str, path: str) -> None:
    """``path`` -> ``target``, replaced atomically."""
    tmp = path + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _stage(job: dict[str, Any], release: str) -> str:
    base = job["dir"]
    target = f"releases/{release}"
    current, staged = f"{base}/current", f"{base}/current.next"
    if _readlink(current) == target:
        if os.path.lexists(staged):
            os.unlink(staged)
            return "unstaged"
        return "unchanged"
    if os.path.exists(f"/etc/systemd/system/{job['unit']}.service"):
        if _readlink(staged) == target:
            return "unchanged"
        _link(target, staged)
        return "staged"
    _link(target, current)
    return "switched"


def _expire(job: dict[str, Any], release: str) -> list[str]:
    releases = f"{job['dir']}/releases"
    names = sorted(os.listdir(releases), reverse=True)
    expired = [n for n in names[int(job["keep"]) :] if n != release]
    for name in expired:
        shutil.rmtree(f"{releases}/{name}", ignore_errors=True)
        archive = f"{job['dir']}/wheelhouse/{name.partition('-')[2]}.tar"
        if os.path.lexists(archive):
            os.unlink(archive)
    return expired


def release_one(job: dict[str, Any], venv_script: str) -> dict[str, Any]:
    releases = f"{job['dir']}/releases"
    suffix = f"-{job['hash']}"
    existing = sorted(
        n for n in os.listdir(releases) if n.endswith(suffix) and os.path.isdir(f"{releases}/{n}")
    )
    release = existing[-1] if existing else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + suffix
    result: dict[str, Any] = {"name": job["name"], "release": release, "built": False}
    if not os.path.exists(f"{releases}/{release}/.complete"):
        archive = f"{job['dir']}/wheelhouse/{job['hash']}.tar"
        argv = ["/bin/sh", "-c", venv_script, "procslice-venv", f"{releases}/{release}", archive]
        done = subprocess.run([*argv, *job["install"]], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            result["error"] = (
                f"building release {release} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
            return result
        result["built"] = True
    result["stage"] = _stage(job, release)
    result["expired"] = _expire(job, release)
    return result


def main() -> int:
    venv_script = sys.argv[1]
    jobs = json.load(sys.stdin)
    results = []
    for job in jobs:
        try:
            results.append(release_one(job, venv_script))
        except OSError as exc:
            results.append({"name": job["name"], "error": f"{exc.strerror}: {exc.filename}"})
    releases = {r["name"]: r["release"] for r in results if "release" in r and "error" not in r}
    changed = any(
        r.get("built") or r.get("stage", "unchanged") != "unchanged" or r.get("expired")
        for r in results
    )
    print(json.dumps({"releases": releases, "results": results, "changed": changed}))
    failed = [r for r in results if "error" in r]
    for result in failed:
        print(f"{result['name']}: {result['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
