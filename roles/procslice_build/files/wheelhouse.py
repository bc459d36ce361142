#!/usr/bin/env python3
"""Build one wheelhouse per service on the controller, so targets need no index.

Input (JSON on stdin): {"services": [normalized service, ...], "base_dir": str,
"runtime_source": str, "constraints": str, "cache_dir": str, "refresh": bool,
"check": bool, "host_runtime": bool}.
Output (JSON on stdout): {"changed": bool, "wheelhouses": {build_key: {"hash", "dir",
"archive", "install": [requirement, ...], "lock": {name: version} or null}},
"runtime": {"hash", "dir", "archive", "install"} or null} (build_key: the service's,
else its name; one service name built from two packages for two hosts has two).

With host_runtime, also the host runtime's wheelhouse: procslice and its dependencies
under the constraints, built once per content of the runtime and the constraints, which
every host installs once into /usr/local/lib/procslice/runtime (`procslice status` and
the exporter run from it).

A requirements file is resolved once into a lock beside it (requirements.txt ->
requirements.lock: exact versions and sha256 hashes, by `uv pip compile
--generate-hashes` under the constraints). An existing lock is used as is; it is
resolved anew with refresh (every package to its newest allowed version), or when the
requirements file changed since (its sha256 is in the lock's header; uv keeps the
lock's versions where they still fit). In check mode the lock is not written.

The release hash is a digest of the inputs (the package's files, the runtime's
files, the model's requirements and the constraints; for a requirements file, its
lock's pins and hashes), not of the built wheels:
wheel builds are not byte-reproducible, and the same inputs must give the same
release so that a re-deploy changes nothing. A wheelhouse already built for a
hash is reused; a half-built one (no .complete marker) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

SKIP_DIRS = {"__pycache__", ".git", "build", "dist", ".venv", ".pytest_cache", ".mypy_cache"}
# The runtime's own package: its project file and its sources, nothing else of the repo
# (src/procslice_controller is the controller's alone: neither in the wheel nor in the
# release hash, so a change there rebuilds no release).
RUNTIME_FILES = ("pyproject.toml", "src/procslice")


def clean_copy(src: Path, dst: Path, only: tuple[str, ...] = ()) -> Path:
    """A copy of a source tree without build products (build/, *.egg-info, caches).

    pip builds a source directory in place, and setuptools reuses a build/ left there
    by an earlier build: a release could carry code its source no longer has. The copy
    holds exactly what the release hash covers (tree_digest skips the same)."""
    ignore = shutil.ignore_patterns(*SKIP_DIRS, "*.egg-info", "*.pyc", "*.pyo")
    if only:
        dst.mkdir(parents=True)
        for name in only:
            if (src / name).is_dir():
                shutil.copytree(src / name, dst / name, ignore=ignore)
            elif (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        return dst
    shutil.copytree(src, dst, ignore=ignore)
    return dst


def tree_digest(path: Path, digest: Any) -> None:
    if path.is_file():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = Path(root, name)
            digest.update(str(full.relative_to(path)).encode())
            digest.update(full.read_bytes())


def model_requirements(service: dict[str, Any]) -> list[str]:
    model = service["model"]
    if model == "gunicorn":
        reqs = ["gunicorn"]
        if service.get("worker_class") == "uvicorn":
            reqs.append("uvicorn-worker")
        return reqs
    return []


def package_inputs(service: dict[str, Any], base: Path) -> tuple[list[str], list[Path]]:
    """The pip arguments for the service's own package, and the files they read."""
    package = service.get("package") or {}
    if "source" in package:
        src = (base / package["source"]).resolve()
        if not (src / "pyproject.toml").is_file() and not (src / "setup.py").is_file():
            raise SystemExit(
                f"procslice_services[{service['name']}].package.source: {src} has no "
                "pyproject.toml or setup.py; point it at a Python project directory"
            )
        return [str(src)], [src]
    if "wheel" in package:
        whl = (base / package["wheel"]).resolve()
        if not whl.is_file():
            raise SystemExit(
                f"procslice_services[{service['name']}].package.wheel: {whl} does not exist"
            )
        return [str(whl)], [whl]
    if "requirements" in package:
        req = (base / package["requirements"]).resolve()
        if not req.is_file():
            raise SystemExit(
                f"procslice_services[{service['name']}].package.requirements: {req} does not exist"
            )
        return ["-r", str(req)], [req]
    raise SystemExit(f"procslice_services[{service['name']}].package: nothing to build")


LOCK_SUFFIX = ".lock"
# The lock's own header line: the requirements file it was resolved from.
LOCK_SOURCE = "# procslice: resolved from {name} sha256:{sha}"
HASH_OPTION = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)\s*(?:;\s*(.*?))?\s*$")


def lock_path(req: Path) -> Path:
    """Where a requirements file's lock lives: beside it, requirements.txt -> .lock."""
    return (
        req.with_suffix(LOCK_SUFFIX)
        if req.suffix != LOCK_SUFFIX
        else req.with_name(req.name + LOCK_SUFFIX)
    )


def parse_lock(text: str) -> dict[str, dict[str, Any]]:
    """A lock's pins by normalised name: {"line": pin (with its marker), "version",
    "hashes"}. Raises ValueError naming the first line that is not an exact pin with
    sha256 hashes."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        current += " " + line.removesuffix("\\")
        if not line.endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())
    pins: dict[str, dict[str, Any]] = {}
    for line in logical:
        hashes = HASH_OPTION.findall(line)
        rest = HASH_OPTION.sub("", line).strip()
        match = PIN.match(rest)
        if not match or not hashes:
            raise ValueError(
                f"{line[:120]!r} is not an exact pin with sha256 hashes (name==version "
                "--hash=sha256:...)"
            )
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        pin = f"{match.group(1)}{match.group(2) or ''}=={match.group(3)}"
        if match.group(4):
            pin += f" ; {match.group(4)}"
        pins[name] = {"line": pin, "version": match.group(3), "hashes": sorted(hashes)}
    if not pins:
        raise ValueError("it pins nothing")
    return pins


def find_uv() -> str | None:
    """The controller's uv: beside the play's Python (requirements/controller.txt), else
    on PATH."""
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def lock_failure(name: str, message: str, fix: str) -> str:
    return f"procslice_services[{name}].package.requirements: {message}\n\nFix: {fix}"


def resolve_lock(
    service: dict[str, Any],
    req: Path,
    constraints: Path,
    spec: dict[str, Any],
    done: dict[str, tuple[str, dict[str, dict[str, Any]]]],
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The lock's text and pins: the file as is, or resolved anew (missing lock,
    refresh, requirements changed since). `done`: locks resolved in this run already."""
    name = service["name"]
    lock = lock_path(req)
    if str(lock) in done:
        return done[str(lock)]
    req_sha = hashlib.sha256(req.read_bytes()).hexdigest()
    source = LOCK_SOURCE.format(name=req.name, sha=req_sha)
    refresh = bool(spec.get("refresh"))
    old = None
    if lock.exists() and not refresh:
        try:
            old = lock.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(
                lock_failure(
                    name,
                    f"the lock {lock} cannot be read: {exc}",
                    "make it readable (restore it from version control), or resolve "
                    f"{req.name} anew with -e procslice_refresh=true",
                )
            ) from None
    if old is not None and source in old.splitlines():
        try:
            return old, parse_lock(old)
        except ValueError as exc:
            raise SystemExit(
                lock_failure(
                    name,
                    f"the lock {lock} is malformed: {exc}",
                    "restore it from version control, or resolve it anew with -e "
                    "procslice_refresh=true (or remove it)",
                )
            ) from None
    uv = find_uv()
    if uv is None:
        raise SystemExit(
            lock_failure(
                name,
                f"no uv on the controller to resolve {req.name} into {lock.name}",
                "install the controller's tools (requirements/controller.txt pins uv) into "
                "the Python that runs ansible-playbook",
            )
        )
    with tempfile.TemporaryDirectory(prefix="procslice-lock.") as tmp:
        out = Path(tmp, lock.name)
        if old is not None:
            # uv keeps the versions of an existing output file where they still fit
            out.write_text(old)
        argv = [uv, "pip", "compile", "--quiet", "--generate-hashes", "--no-header"]
        argv += ["--annotation-style", "line", "--python", sys.executable]
        argv += ["-c", os.path.relpath(constraints, req.parent), "-o", str(out), req.name]
        run = subprocess.run(argv, capture_output=True, text=True, cwd=req.parent)
        if run.returncode != 0:
            errors = [ln for ln in run.stderr.splitlines() if ln.strip()]
            head = "\n".join(errors[:12]) or "uv pip compile failed"
            raise SystemExit(
                f"procslice_services[{name}].package.requirements: {head}\n\n"
                f"resolving {req} into {lock.name} failed. Fix: correct the requirements "
                f"(a name or range no index has, or one that conflicts with "
                f"{constraints.name}), or make the index reachable"
            )
        body = out.read_text()
    text = (
        f"# The exact versions and hashes of {req.name}, resolved by procslice's build\n"
        "# (uv pip compile --generate-hashes). Every build uses them as they are; resolve\n"
        "# anew with: ansible-playbook ... -e procslice_refresh=true\n"
        f"{source}\n{body}"
    )
    try:
        pins = parse_lock(text)
    except ValueError as exc:
        raise SystemExit(
            lock_failure(
                name,
                f"the lock resolved from {req.name} cannot be used: {exc}",
                "pin every requirement by name and version range (no directories or "
                "URLs without hashes)",
            )
        ) from None
    done[str(lock)] = (text, pins)
    if not spec.get("check") and text != old:
        part = lock.with_name(f".{lock.name}.{os.getpid()}")
        part.write_text(text)
        part.replace(lock)
    return text, pins


def publish(tmp: Path, out: Path, marker: str) -> None:
    """Mark a finished build complete (``marker`` in its .complete) and move it from its
    temporary directory to ``out``; when another run on this controller built the same
    meanwhile, keep that one."""
    (tmp / ".complete").write_text(marker + "\n")
    try:
        tmp.rename(out)
    except OSError:
        if not (out / ".complete").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def runtime_wheel(runtime: Path, cache_dir: Path, name: str) -> Path:
    """The runtime's wheel, built once per content of its RUNTIME_FILES and kept in
    <cache_dir>/.runtime/<hash>/: each wheelhouse takes it as it is, instead of pip
    building the runtime from its sources again for every service (in an isolated
    build environment: about 2 s of CPU each). `name`: the service, for the message."""
    digest = hashlib.sha256()
    for sub in RUNTIME_FILES:
        tree_digest(runtime / sub, digest)
    out = cache_dir / ".runtime" / digest.hexdigest()[:12]
    if (out / ".complete").is_file():
        return out / (out / ".complete").read_text().strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    with tempfile.TemporaryDirectory(prefix="procslice-runtime.") as sources:
        copy = clean_copy(runtime, Path(sources, "runtime"), only=RUNTIME_FILES)
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir"]
        run = subprocess.run([*argv, str(tmp), str(copy)], capture_output=True, text=True)
    wheels = sorted(tmp.glob("*.whl"))
    if run.returncode != 0 or len(wheels) != 1:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(build_failure(name, run.stdout, run.stderr))
    publish(tmp, out, wheels[0].name)
    return out / (out / ".complete").read_text().strip()


def build_failure(name: str, stdout: str, stderr: str) -> str:
    """pip's own verdict first (its ERROR: lines), then the rest of what it printed."""
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    rest = (stdout[-2000:] + stderr[-4000:]).strip()
    head = "\n".join(errors) if errors else "pip wheel failed"
    return f"procslice_services[{name}]: building the wheelhouse failed: {head}\n\n{rest}"


def build(
    service: dict[str, Any],
    spec: dict[str, Any],
    locks: dict[str, tuple[str, dict[str, dict[str, Any]]]] | None = None,
) -> tuple[dict[str, Any], bool]:
    base = Path(spec["base_dir"])
    runtime = Path(spec["runtime_source"]).resolve()
    constraints = Path(spec["constraints"]).resolve()
    pkg_args, pkg_files = package_inputs(service, base)
    extra = model_requirements(service)
    lock: tuple[str, dict[str, dict[str, Any]]] | None = None
    pins = ""  # the lock's exact versions without hashes: what the host installs
    if "requirements" in service["package"]:
        lock = resolve_lock(
            service, pkg_files[0], constraints, spec, {} if locks is None else locks
        )
        pins = "".join(pin["line"] + "\n" for pin in lock[1].values())

    digest = hashlib.sha256()
    if lock is not None:
        # the lock's pins and hashes, not its comments nor the requirements' text
        digest.update(json.dumps(lock[1], sort_keys=True).encode())
    else:
        for path in pkg_files:
            tree_digest(path, digest)
    for sub in RUNTIME_FILES:
        tree_digest(runtime / sub, digest)
    tree_digest(constraints, digest)
    digest.update(json.dumps(extra).encode())
    release_hash = digest.hexdigest()[:12]

    out = Path(spec["cache_dir"]) / service["name"] / release_hash
    result = {
        "hash": release_hash,
        "dir": str(out),
        "archive": str(out / "wheelhouse.tar"),
        "install": [*extra, "procslice", *app_requirement(service, pkg_files[0])],
        # name -> version, for the plan's "lock:" reason (the host keeps the whole lock)
        "lock": {name: pin["version"] for name, pin in sorted(lock[1].items())} if lock else None,
    }
    if (out / ".complete").is_file():
        return result, False

    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{release_hash}.", dir=out.parent))
    runtime_whl = str(runtime_wheel(runtime, Path(spec["cache_dir"]), service["name"]))
    with tempfile.TemporaryDirectory(prefix="procslice-sources.") as sources:
        args = [
            str(clean_copy(Path(arg), Path(sources, f"package-{index}")))
            if Path(arg).is_dir()
            else arg
            for index, arg in enumerate(pkg_args)
        ]
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp)]
        runs = [[*pip, "-c", str(constraints), runtime_whl, *extra, *args]]
        if lock is not None:
            # The lock's wheels, each checked against its hashes; then the runtime and
            # the server under the lock's versions too (one set for the host to install).
            Path(sources, "procslice.lock").write_text(lock[0])
            Path(sources, "pins.txt").write_text(pins)
            runs = [
                [*pip, "--require-hashes", "-r", str(Path(sources, "procslice.lock"))],
                [
                    *pip,
                    "-c",
                    str(constraints),
                    "-c",
                    str(Path(sources, "pins.txt")),
                    runtime_whl,
                    *extra,
                ],
            ]
        for argv in runs:
            run = subprocess.run(argv, capture_output=True, text=True)
            if run.returncode != 0:
                break
    if run.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(build_failure(service["name"], run.stdout, run.stderr))
    if lock is not None:
        # the host installs the exact versions (no hashes: a wheel built here from an
        # sdist has none in the lock) and keeps the lock in the release
        (tmp / "requirements.txt").write_text(pins)
        (tmp / "procslice.lock").write_text(lock[0])
    # One archive per wheelhouse: a single transfer to each host.
    with tarfile.open(tmp / "wheelhouse.tar", "w") as tar:
        for item in sorted(tmp.iterdir()):
            if item.name != "wheelhouse.tar":
                tar.add(item, arcname=item.name)
    publish(tmp, out, release_hash)
    return result, True


def host_runtime(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The host runtime's wheelhouse (the output's "runtime") and whether it was built
    now: <cache_dir>/.host-runtime/<hash>/wheelhouse.tar, the hash a digest of the
    runtime's files and the constraints, as a release's is."""
    runtime = Path(spec["runtime_source"]).resolve()
    constraints = Path(spec["constraints"]).resolve()
    digest = hashlib.sha256(b"host-runtime\0")
    for sub in RUNTIME_FILES:
        tree_digest(runtime / sub, digest)
    tree_digest(constraints, digest)
    runtime_hash = digest.hexdigest()[:12]
    out = Path(spec["cache_dir"]) / ".host-runtime" / runtime_hash
    result = {
        "hash": runtime_hash,
        "dir": str(out),
        "archive": str(out / "wheelhouse.tar"),
        "install": ["procslice"],
    }
    if (out / ".complete").is_file():
        return result, False
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{runtime_hash}.", dir=out.parent))
    # (the name in a failure message: the host runtime is no service of the operator's)
    whl = str(runtime_wheel(runtime, Path(spec["cache_dir"]), "host runtime"))
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp)]
    run = subprocess.run([*pip, "-c", str(constraints), whl], capture_output=True, text=True)
    if run.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(build_failure("host runtime", run.stdout, run.stderr))
    with tarfile.open(tmp / "wheelhouse.tar", "w") as tar:
        for item in sorted(tmp.iterdir()):
            if item.name != "wheelhouse.tar":
                tar.add(item, arcname=item.name)
    publish(tmp, out, runtime_hash)
    return result, True


def app_requirement(service: dict[str, Any], path: Path) -> list[str]:
    """What the host installs from the wheelhouse for the service's own package."""
    package = service["package"]
    if "requirements" in package:
        return ["-r", "requirements.txt"]
    if "wheel" in package:
        return [path.name.split("-")[0]]
    import tomllib

    pyproject = path / "pyproject.toml"
    name = (
        tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
        if pyproject.is_file()
        else None
    )
    if not isinstance(name, str):
        raise SystemExit(
            f"procslice_services[{service['name']}].package.source: {path}/pyproject.toml has no "
            "[project] name; add one"
        )
    return [name]


def archive_image_id(path: Path, cache: dict[str, Any]) -> str | None:
    """The image id a podman save archive's manifest.json names (None: not readable).

    Read here once per run, not by every host's render (the plan phase), and kept in
    the cache while the archive's size and mtime stay the same."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    known = cache.get(str(path))
    if known and known.get("key") == key:
        return str(known["id"])
    run = subprocess.run(
        ["tar", "-xOf", str(path), "manifest.json"], capture_output=True, check=False
    )
    if run.returncode != 0:
        return None
    try:
        config = str(json.loads(run.stdout)[0]["Config"])
    except (ValueError, LookupError, TypeError):
        return None
    found = config.removesuffix(".json").removeprefix("sha256:")
    cache[str(path)] = {"key": key, "id": found}
    return found


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Build (or find) every service's wheelhouse: the output documented above.

    A service that cannot be built raises SystemExit with the message for the operator
    (plugins/action/procslice_build.py runs this in the controller's own process)."""
    changed = False
    wheelhouses: dict[str, Any] = {}
    image_ids: dict[str, str] = {}  # by the archive's path
    locks: dict[str, Any] = {}  # by the lock's path: each resolved once per run
    id_cache_file = Path(spec["cache_dir"]) / "image-ids.json"
    try:
        id_cache: dict[str, Any] = json.loads(id_cache_file.read_text())
    except (OSError, ValueError):
        id_cache = {}
    for service in spec["services"]:
        if service.get("state", "present") != "present":
            continue
        if service["model"] == "podman":
            if service.get("image_archive"):
                archive = os.path.join(spec["base_dir"], service["image_archive"])
                found = archive_image_id(Path(archive), id_cache)
                if found:
                    image_ids[archive] = found
            continue
        result, built = build(service, spec, locks)
        wheelhouses[service.get("build_key", service["name"])] = result
        changed = changed or built
    if image_ids:
        id_cache_file.parent.mkdir(parents=True, exist_ok=True)
        id_cache_file.write_text(json.dumps(id_cache))
    runtime: dict[str, Any] | None = None
    if spec.get("host_runtime"):
        runtime, built = host_runtime(spec)
        changed = changed or built
    return {
        "changed": changed,
        "wheelhouses": wheelhouses,
        "image_ids": image_ids,
        "runtime": runtime,
    }


def main() -> int:
    json.dump(run(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
