"""The deploy section: how long deploy.yml takes on 1, 3 and 6 hosts, against a floor.

The section deploys a snapshot of the working tree taken when it starts
(fleet.snapshot), so an edit made during its many minutes is not timed as a change.
For each fleet size N, a fresh bench fleet (bench/fleet.py: destroyed, started again
with an empty fact cache and no SSH control sockets), then, with the project's
ansible.cfg and ``-i /var/tmp/procslice-bfleet/hosts.yml -i bench/inventory`` (one
slice, two small gunicorn services), one operation after another on that fleet, each
run just after a floor::

    bench/playbooks/warm-build.yml   the wheelhouses built beforehand (not timed)
    first deploy      deploy.yml on hosts that never saw procslice
    no-op re-deploy   deploy.yml again: the plan finds nothing to do, no host is visited
    plan only         deploy.yml --check --diff: stops after the plan
    limit change      deploy.yml -e @limits-vars.json: the web slice's memory_max
                      lowered (448M), applied live on every host
    limits.yml        playbooks/limits.yml: the same slice lowered again (416M)
    code change       deploy.yml -e @code-change-vars.json: a new release of the first
                      service of bench/inventory (its package source copied to
                      /var/tmp/procslice-bfleet/code-change with its version bumped;
                      the new wheelhouse built beforehand, not timed; the slice data
                      as limits.yml left it, so only the code changes), while a load
                      generator (tests/molecule_support/loadgen.py: 2 keep-alive
                      connections, 25 requests/s each) sends requests to that service
                      on every host, through the ports the fleet publishes on 127.0.0.1

floor is bench/playbooks/floor.yml: one task, become, no facts.  Each time is the
wall-clock time of its ansible-playbook process.  Reported per N: the seconds, the
ratio to the floor (the median of that fleet's floor runs), the seconds per host, the
changed tasks, and the slowest tasks (profile_tasks); for the code change, the
requests answered, failed and retried under load; and, over the sizes, what each
added host costs (the least-squares slope of seconds against N).  deploy.yml visits
only the hosts its plan gives something to do, in batches (procslice_serial by
default [1, 100%]: one canary host, then the rest together; from 11 changed hosts on
[1, 25%, 100%]), so its time grows with the batches as well as with the hosts.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fleet
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
INVENTORY_DIR = BENCH / "inventory"
SIZES = (1, 3, 6)
# deploy.yml's default procslice_serial, by the number of hosts its plan changes.
SERIAL_SMALL: list[int | str] = [1, "100%"]
SERIAL_LARGE: list[int | str] = [1, "25%", "100%"]
SERIAL_LARGE_FROM = 11  # changed hosts from which deploy.yml rolls out in SERIAL_LARGE
LIMIT_SLICE = "web"
LIMIT_MEMORY_MAX = "448M"  # the limit change through deploy.yml
LIMITS_PLAYBOOK_MEMORY_MAX = "416M"  # then through playbooks/limits.yml
FLOOR_PLAYBOOK = "bench/playbooks/floor.yml"
LOADGEN = ROOT / "tests" / "molecule_support" / "loadgen.py"
LOAD_HOST = "127.0.0.1"
LOAD_CONNECTIONS = 2  # per target, as molecule/fleet/tests/test_operations.py
LOAD_RATE = 25  # requests a second per connection
LOAD_SETTLE = 3.0  # seconds of load before and after the timed run
# playbooks/fleet.yml publishes ports 8000-8019 of host i on 127.0.0.1 from
# fleet.HTTP_BASE + 100 * i on.
PUBLISHED_FIRST = 8000
PUBLISHED_COUNT = 20
WILDCARDS = {"", "0.0.0.0", "*", "[::]", "::"}

NAMES = [f"deploy-{size}" for size in SIZES]


@dataclass(frozen=True)
class Op:
    """One timed operation: its row name, label and playbook arguments.

    ``visits``: deploy.yml's plan gives every host something to do, so the rolling
    play visits them all in batches (False: no host is visited after the plan).
    """

    key: str
    label: str
    playbook: str
    extra: tuple[str, ...] = ()
    visits: bool = True


FLOOR = Op("floor", "floor: one task (`command: true`, become, no facts)", FLOOR_PLAYBOOK)
OPS = [
    Op("first-deploy", "first deploy (deploy.yml)", "deploy.yml"),
    Op("noop-deploy", "no-op re-deploy (deploy.yml)", "deploy.yml", visits=False),
    Op(
        "check-diff",
        "plan only (deploy.yml --check --diff)",
        "deploy.yml",
        ("--check", "--diff"),
        visits=False,
    ),
    Op(
        "limit-change",
        f"live limit change (deploy.yml: {LIMIT_SLICE} slice memory_max → {LIMIT_MEMORY_MAX})",
        "deploy.yml",
    ),
    Op(
        "limits-playbook",
        f"live limit change (playbooks/limits.yml: {LIMIT_SLICE} slice memory_max "
        f"→ {LIMITS_PLAYBOOK_MEMORY_MAX})",
        "playbooks/limits.yml",
    ),
    Op(
        "code-change",
        "code change (deploy.yml: a new release of one service, under load)",
        "deploy.yml",
    ),
]
LIMIT_OPS = {"limit-change": LIMIT_MEMORY_MAX, "limits-playbook": LIMITS_PLAYBOOK_MEMORY_MAX}
INCLUDED = (
    "Included in every time: ansible-playbook's start-up, the inventory, SSH "
    "(control masters left open for 60 s by the run before: the floor, run just before "
    "each timed playbook, opened them), become. deploy.yml also: preflight on the "
    "controller, the build step (every wheelhouse, the code change's too, already "
    "built by bench/playbooks/warm-build.yml, so it only hashes the inputs), the plan "
    "(every host's files rendered on the controller, then one read-only procslice_plan "
    "call per host, and the plan table); no fact gathering. Only the hosts the plan "
    "gives something to do are visited (none on the no-op re-deploy; `--check --diff` "
    "stops after the plan), in batches of [1, 100%] hosts ([1, 25%, 100%] from 11 "
    "changed hosts on), and each does only what its plan lists, under the deploy lock: "
    "first deploy: the host's tools (apt: python3-venv is already in the base image), "
    "per service the wheelhouse copied, the release virtualenv built and the units "
    "started with their health gates; limit change: the slice file, applied live; code "
    "change: the one service's new release and its reload and health gate. "
    "playbooks/limits.yml: preflight, the deploy lock and the slice file on every host "
    "at once. Not included: starting the fleet (its time is listed) and building the "
    "wheelhouses."
)


def default_serial(changed: int) -> list[int | str]:
    """deploy.yml's default procslice_serial when its plan changes ``changed`` hosts."""
    return SERIAL_SMALL if changed < SERIAL_LARGE_FROM else SERIAL_LARGE


def batches(size: int, serial: list[int | str] | None = None) -> list[int]:
    """The batch sizes ansible's ``serial`` list gives for ``size`` hosts.

    Without ``serial``: deploy.yml's default for ``size`` changed hosts.
    """
    if serial is None:
        serial = default_serial(size)
    out: list[int] = []
    left = size
    index = 0
    while left > 0:
        item = serial[min(index, len(serial) - 1)]
        if isinstance(item, str) and item.endswith("%"):
            count = int(size * float(item[:-1]) / 100) or 1
        else:
            count = int(item)
        count = min(max(count, 1), left)
        out.append(count)
        left -= count
        index += 1
    return out


def op_batches(op: Op, size: int) -> list[int]:
    """The batches ``op`` runs in on ``size`` hosts (other playbooks: all at once)."""
    if op.playbook != "deploy.yml":
        return [size]
    return batches(size) if op.visits else []


def top_tasks(log: Path, count: int = 5) -> list[list[Any]]:
    """The slowest tasks from profile_tasks' summary at the end of a log."""
    text = log.read_text(errors="replace")
    tail = text.rpartition("PLAY RECAP")[2]
    found = []
    for match in re.finditer(r"^(.+?) -{2,} (\d+\.\d+)s$", tail, re.MULTILINE):
        found.append([match.group(1).strip(), float(match.group(2))])
    return sorted(found, key=lambda item: -item[1])[:count]


def bench_data() -> dict[str, Any]:
    """The bench's procslice data (bench/inventory/group_vars/procslice.yml)."""
    return yaml.safe_load((INVENTORY_DIR / "group_vars" / "procslice.yml").read_text())


def lowered_slices(data: dict[str, Any], memory_max: str) -> list[dict[str, Any]]:
    """The bench's slices with the web slice's memory_max set to ``memory_max``."""
    slices = data["procslice_slices"]
    for item in slices:
        if item["name"] == LIMIT_SLICE:
            item["memory_max"] = memory_max
    return slices


def limits_vars(memory_max: str = LIMIT_MEMORY_MAX, name: str = "limits-vars.json") -> Path:
    """An extra-vars file: the bench's slices with the web slice's memory_max lowered."""
    path = fleet.STATE / name
    path.write_text(json.dumps({"procslice_slices": lowered_slices(bench_data(), memory_max)}))
    return path


def bumped(version: str) -> str:
    """The next version: the last number plus one (1.0.0 -> 1.0.1), else a .post1."""
    match = re.search(r"(\d+)$", version)
    if match is None:
        return f"{version}.post1"
    return f"{version[: match.start()]}{int(match.group(1)) + 1}"


def code_change_vars(tree: Path, memory_max: str) -> tuple[Path, dict[str, Any]]:
    """An extra-vars file for the code change, and what it changes.

    The first service's package source (read from ``tree``) copied to
    fleet.STATE/code-change with its pyproject version bumped, so its wheelhouse hash
    changes; procslice_services with that service pointing at the copy (the others as
    they are), and procslice_slices with the web slice at ``memory_max`` (what the
    fleet has), so that only the code changes.
    """
    data = bench_data()
    services = data["procslice_services"]
    service = services[0]
    package = dict(service.get("package") or {})
    if "source" not in package:
        raise ValueError(f"{service['name']}: its package has no source directory to copy")
    origin = (tree / package["source"]).resolve()
    copy = fleet.STATE / "code-change" / origin.name
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(
        origin, copy, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    )
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text() if pyproject.is_file() else ""
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ValueError(f'{origin}/pyproject.toml has no static version = "..." to bump')
    old, new = match.group(1), bumped(match.group(1))
    pyproject.write_text(text[: match.start(1)] + new + text[match.end(1) :])
    package["source"] = str(copy)
    service["package"] = package
    path = fleet.STATE / "code-change-vars.json"
    path.write_text(
        json.dumps(
            {
                "procslice_slices": lowered_slices(data, memory_max),
                "procslice_services": services,
            }
        )
    )
    info = {
        "service": service["name"],
        "version_from": old,
        "version_to": new,
        "source": str(copy),
        "slice_memory_max_in_vars": memory_max,
        "vars": str(path),
    }
    return path, info


def load_targets(size: int, service: dict[str, Any]) -> tuple[list[str], str | None]:
    """loadgen.py targets for ``service`` on every host of the fleet, or why there are none.

    A host's service port P is published on 127.0.0.1 at
    fleet.HTTP_BASE + 100 * i + (P - 8000) (playbooks/fleet.yml), for P in 8000-8019
    and a service listening on every address of the host.
    """
    listen = service.get("listen") or []
    if not listen:
        return [], f"{service['name']} has no listen address"
    match = re.fullmatch(r"(.*):(\d+)", str(listen[0]))
    if match is None:
        return [], f"{service['name']} listens on {listen[0]!r}, not on a TCP port"
    address, port = match.group(1), int(match.group(2))
    if address not in WILDCARDS:
        return [], (
            f"{service['name']} listens on {listen[0]}: not on every address of the host, "
            "so not on the port the fleet publishes"
        )
    if not PUBLISHED_FIRST <= port < PUBLISHED_FIRST + PUBLISHED_COUNT:
        return [], (
            f"{service['name']} listens on port {port}; the fleet publishes only "
            f"{PUBLISHED_FIRST}-{PUBLISHED_FIRST + PUBLISHED_COUNT - 1}"
        )
    health = service.get("health") or {}
    path = health.get("http") if isinstance(health.get("http"), str) else "/"
    if not path.startswith("/"):
        path = "/"
    targets = [
        f"{host}={LOAD_HOST}:{fleet.HTTP_BASE + 100 * index + port - PUBLISHED_FIRST}{path}"
        for index, host in enumerate(fleet.hosts(size), 1)
    ]
    return targets, None


def target_url(target: str, path: str | None = None) -> str:
    """http://127.0.0.1:PORT/PATH of a loadgen.py target (another ``path`` if given)."""
    address = target.partition("=")[2]
    hostport, slash, rest = address.partition("/")
    return f"http://{hostport}{path if path is not None else slash + rest}"


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """GET ``url`` (127.0.0.1 only, no proxy): the status and the body."""
    if not url.startswith(f"http://{LOAD_HOST}:"):
        raise ValueError(f"{url}: the bench only sends requests to {LOAD_HOST}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as answer:
        return answer.status, answer.read().decode(errors="replace").strip()


def unanswered(targets: list[str]) -> str | None:
    """Why some target does not answer 200 now, or None when every one does."""
    for target in targets:
        url = target_url(target)
        try:
            status, _ = http_get(url)
        except (OSError, ValueError) as exc:
            return f"{url} did not answer before the change ({exc})"
        if status != 200:
            return f"{url} answered {status} before the change"
    return None


def slice_memory_max(host: str) -> str:
    """MemoryMax (or v1's MemoryLimit) of procslice-web.slice on ``host``, as systemd says."""
    out = fleet.exec_(
        host,
        [
            "systemctl",
            "show",
            f"procslice-{LIMIT_SLICE}.slice",
            "--property=MemoryMax",
            "--property=MemoryLimit",
        ],
        check=False,
    )
    return " ".join(out.split())


def timed(op: Op, size: int, args: list[str], tree: Path, suffix: str = "") -> dict[str, Any]:
    """Run one playbook on the fleet from ``tree``; its figures."""
    played = fleet.playbook(
        [op.playbook, *args, *op.extra],
        f"deploy-{size}-{op.key}{suffix}",
        {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"},
        root=tree,
    )
    result: dict[str, Any] = {
        "seconds": played.seconds,
        "returncode": played.returncode,
        "changed": played.changed,
        "recap": played.recap,
        "top_tasks": top_tasks(played.log),
        "log": str(played.log.relative_to(ROOT)),
        "command": played.command,
    }
    if not played.ok:
        result["error"] = f"{op.playbook} failed (rc {played.returncode}): see {result['log']}"
    return result


def not_measured(result: dict[str, Any], reason: str) -> dict[str, Any]:
    """``result`` with the load recorded as not measured, and why."""
    result.update(
        requests_ok=None, requests_failed=None, requests_retried=None, load_not_measured=reason
    )
    return result


def under_load(
    op: Op, size: int, args: list[str], tree: Path, targets: list[str]
) -> dict[str, Any]:
    """``timed`` while loadgen.py sends requests to ``targets``; the figures and tallies.

    The load starts LOAD_SETTLE seconds before the playbook and ends LOAD_SETTLE
    seconds after it (SIGINT: loadgen.py prints one tally per target).
    """
    load = subprocess.Popen(
        [
            sys.executable,
            str(LOADGEN),
            "--connections",
            str(LOAD_CONNECTIONS),
            "--rate",
            str(LOAD_RATE),
            "--seconds",
            "86400",  # until SIGINT
            *targets,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(LOAD_SETTLE)
        result = timed(op, size, args, tree)
        time.sleep(LOAD_SETTLE)
    finally:
        if load.poll() is None:
            load.send_signal(signal.SIGINT)
        try:
            out, err = load.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            load.kill()
            out, err = load.communicate()
    try:
        tallies: dict[str, dict[str, Any]] = json.loads(out)
    except ValueError:
        return not_measured(
            result,
            f"the load generator printed no tally (exit {load.returncode}): "
            f"{(err or out).strip()[-300:]}",
        )
    result["requests_ok"] = sum(tally["ok"] for tally in tallies.values())
    result["requests_failed"] = sum(tally["failed"] for tally in tallies.values())
    result["requests_retried"] = sum(tally["retried"] for tally in tallies.values())
    result["load"] = {
        "targets": targets,
        "connections": LOAD_CONNECTIONS,
        "rate_per_connection": LOAD_RATE,
        "settle_s": LOAD_SETTLE,
        "tallies": tallies,
    }
    return result


def served_versions(targets: list[str]) -> dict[str, str]:
    """What each target's /version answers (the bench's hello apps: "<env> <version>")."""
    answers = {}
    for target in targets:
        try:
            status, body = http_get(target_url(target, "/version"))
            answers[target.partition("=")[0]] = body if status == 200 else f"status {status}"
        except (OSError, ValueError) as exc:
            answers[target.partition("=")[0]] = f"no answer: {exc}"
    return answers


def measure_size(size: int, tree: Path) -> dict[str, dict[str, Any]]:
    """A fresh fleet of ``size`` hosts and every operation timed on it, deployed from ``tree``."""
    started = fleet.up(size, fresh=True)
    inventory = ["-i", str(fleet.INVENTORY), "-i", "bench/inventory"]
    warm = fleet.playbook(
        ["bench/playbooks/warm-build.yml", *inventory], f"deploy-{size}-warm", root=tree
    )
    if not warm.ok:
        raise RuntimeError(f"building the wheelhouses failed: see {warm.log.relative_to(ROOT)}")
    floors: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    # What the fleet's web slice has: the code change's data must keep it.
    memory_max = next(
        item["memory_max"]
        for item in bench_data()["procslice_slices"]
        if item["name"] == LIMIT_SLICE
    )
    for op in OPS:
        args = list(inventory)
        notes: dict[str, Any] = {}
        targets: list[str] = []
        if op.key in LIMIT_OPS:
            name = "limits-vars.json" if op.key == "limit-change" else f"{op.key}-vars.json"
            args += ["-e", f"@{limits_vars(LIMIT_OPS[op.key], name)}"]
        elif op.key == "code-change":
            try:
                path, notes = code_change_vars(tree, memory_max)
                built = fleet.playbook(
                    ["bench/playbooks/warm-build.yml", *inventory, "-e", f"@{path}"],
                    f"deploy-{size}-warm-{op.key}",
                    root=tree,
                )
                notes["warm_build_s"] = built.seconds
                if not built.ok:
                    raise RuntimeError(
                        f"building the new wheelhouse failed: see {built.log.relative_to(ROOT)}"
                    )
            except (RuntimeError, OSError, ValueError) as exc:
                results[op.key] = {"error": f"not run: {exc}", **notes}
                print(f"    {op.key}: FAILED: {exc}", flush=True)
                continue
            targets, reason = load_targets(size, bench_data()["procslice_services"][0])
            reason = reason or unanswered(targets)
            if reason:
                notes["load_not_measured"] = reason
                targets = []
            args += ["-e", f"@{path}"]
        floors.append(timed(FLOOR, size, inventory, tree, f"-before-{op.key}"))
        print(f"    floor: {floors[-1]['seconds']:.1f} s", flush=True)
        if targets:
            done = under_load(op, size, args, tree, targets)
        else:
            done = timed(op, size, args, tree)
            if op.key == "code-change":
                not_measured(done, notes.pop("load_not_measured"))
        done.update(notes)
        results[op.key] = done
        if op.key in LIMIT_OPS:
            done["slice_after"] = slice_memory_max(fleet.hosts(size)[0])
            if "error" not in done:
                memory_max = LIMIT_OPS[op.key]
        if op.key == "code-change":
            done["slice_after"] = slice_memory_max(fleet.hosts(size)[0])
            if targets:
                done["version_after"] = served_versions(targets)
        failed = f" FAILED: {done['error']}" if "error" in done else ""
        load = ""
        if done.get("requests_failed") is not None:
            load = (
                f", under load {done['requests_ok']} answered, "
                f"{done['requests_failed']} failed, {done['requests_retried']} retried"
            )
        elif "load_not_measured" in done:
            load = f", load not measured: {done['load_not_measured']}"
        print(
            f"    {op.key}: {done['seconds']:.1f} s, changed {done['changed']}{load}{failed}",
            flush=True,
        )
        if op.key == "first-deploy" and "error" in done:
            break  # nothing to re-deploy or to change
    good = [floor["seconds"] for floor in floors if "error" not in floor]
    results["floor"] = {
        "seconds": statistics.median(good) if good else None,
        "runs": floors,
        "changed": 0,
        "fleet_start_s": started.seconds,
        "warm_build_s": warm.seconds,
    }
    return results


def select(only: set[str]) -> list[int]:
    """The fleet sizes named (all for ``deploy``)."""
    if not only or "deploy" in only:
        return list(SIZES)
    return [size for size in SIZES if f"deploy-{size}" in only]


def run(sizes: list[int]) -> list[dict[str, Any]]:
    """Every size in turn; the rows (the bench fleet is left as the last size made it).

    Every size deploys the same snapshot of the working tree (fleet.snapshot).
    """
    rows: list[dict[str, Any]] = []
    tree, described = fleet.snapshot()
    print(f"deploy: a snapshot of the working tree ({described}) in {tree}", flush=True)
    for index, size in enumerate(sizes, 1):
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"[deploy {index}/{len(sizes)}] {size} host(s), batches {batches(size)}: "
            "a fresh fleet ...",
            flush=True,
        )
        try:
            results = measure_size(size, tree)
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"    FAILED: {exc}", flush=True)
            results = {op.key: {"error": str(exc)} for op in [FLOOR, *OPS]}
        floor = results.get("floor", {}).get("seconds")
        for op in [FLOOR, *OPS]:
            raw = dict(results.get(op.key) or {"error": "not run (the first deploy failed)"})
            raw["hosts"] = size
            raw["tree"] = described
            raw["batches"] = op_batches(op, size)
            ratio = None
            if "error" not in raw and floor:
                raw["per_host_s"] = round(raw["seconds"] / size, 2)
                raw["floor_s"] = floor
                ratio = round(raw["seconds"] / floor, 3)
            rows.append(
                {
                    "bench": "deploy",
                    "subject": f"{op.key}-{size}",
                    "label": op.label,
                    "baseline": f"floor-{size}",
                    "ratio": ratio,
                    "date": date,
                    "raw": raw,
                }
            )
    return rows


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares seconds per added host, or None with fewer than two sizes."""
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = statistics.fmean(n for n, _ in points)
    mean_s = statistics.fmean(s for _, s in points)
    num = sum((n - mean_n) * (s - mean_s) for n, s in points)
    den = sum((n - mean_n) ** 2 for n, _ in points)
    return num / den


def load_lines(by_key: dict[tuple[str, int], dict[str, Any]], sizes: list[int]) -> list[str]:
    """The paragraph on the requests sent during the code change, per size."""
    parts = []
    for size in sizes:
        row = by_key.get(("code-change", size))
        if row is None or "error" in row["raw"]:
            continue
        raw = row["raw"]
        hosts = f"{size} host{'s' if size > 1 else ''}"
        if raw.get("requests_failed") is None:
            reason = raw.get("load_not_measured", "no tally recorded")
            parts.append(f"{hosts}: not measured ({reason})")
            continue
        total = raw["requests_ok"] + raw["requests_failed"]
        parts.append(
            f"{hosts}: {raw['requests_failed']} failed of {total:,} "
            f"({raw['requests_retried']} retried on a kept-alive connection closed under them)"
        )
    if not parts:
        return []
    service = next(
        (
            by_key[("code-change", n)]["raw"]["service"]
            for n in sizes
            if "service" in by_key.get(("code-change", n), {}).get("raw", {})
        ),
        "the changed service",
    )
    return [
        f"Requests to {service} during the code change ({LOAD_CONNECTIONS} keep-alive "
        f"connections per host, {LOAD_RATE} requests/s each, from {LOAD_SETTLE:g} s before "
        f"the run to {LOAD_SETTLE:g} s after it, to the port each host publishes on "
        f"{LOAD_HOST}): " + "; ".join(parts) + ".",
        "",
    ]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The section's lines in latest.md."""
    if not rows:
        return []
    sizes = sorted({row["raw"]["hosts"] for row in rows})
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = row["subject"].rsplit("-", 1)[0]
        by_key[(key, row["raw"]["hosts"])] = row
    dates = sorted({row.get("date", "") for row in rows} - {""})
    tree = next((row["raw"]["tree"] for row in rows if "tree" in row["raw"]), "unrecorded")
    machine = meta.get("machine", {})
    load = machine.get("load_average_start"), machine.get("load_average_end")
    load_text = f"{load[0][0]} at start, {load[1][0]} at end" if all(load) else "unknown"
    head = "| operation | " + " | ".join(f"{n} host{'s' if n > 1 else ''}" for n in sizes)
    head += " | per added host |"
    lines = [
        "## Deploy times",
        "",
        f"Measured {' to '.join([dates[0], dates[-1]] if len(dates) > 1 else dates)}; load "
        f"average {load_text}. A fresh bench fleet for each size (systemd host containers "
        "on this machine, reached over SSH on loopback), the project's ansible.cfg "
        "(forks 10, pipelining), `-i /var/tmp/procslice-bfleet/hosts.yml -i bench/inventory` "
        "(one slice, two gunicorn services); the operations in the table's order on one "
        "fleet, each right after a floor. Each cell: wall-clock seconds of the "
        "ansible-playbook run, its ratio to the floor of the same fleet, seconds per host. "
        "Per added host: the least-squares slope of seconds against hosts. Deployed from a "
        f"snapshot of the working tree taken when the section started ({tree}), so edits "
        "made meanwhile do not show up as changes.",
        "",
        head,
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for op in [FLOOR, *OPS]:
        cells = []
        points: list[tuple[int, float]] = []
        for size in sizes:
            row = by_key.get((op.key, size))
            if row is None:
                cells.append("—")
                continue
            raw = row["raw"]
            if "error" in raw:
                cells.append("failed")
                continue
            if op is FLOOR:
                cells.append(f"{raw['seconds']:.1f} s ({raw['per_host_s']:.1f} s/host)")
            else:
                changed = f", {raw['changed']} changed" if op.key != "first-deploy" else ""
                cells.append(
                    f"{raw['seconds']:.1f} s ({row['ratio']:.1f}x, "
                    f"{raw['per_host_s']:.1f} s/host{changed})"
                )
            points.append((size, raw["seconds"]))
        per_host = slope(points)
        lines.append(
            f"| {op.label} | "
            + " | ".join(cells)
            + f" | {'—' if per_host is None else f'{per_host:+.1f} s'} |"
        )
    batches_text = "; ".join(f"{n} host{'s' if n > 1 else ''}: {batches(n)}" for n in sizes)
    starts = [
        f"{n}: {by_key[('floor', n)]['raw'].get('fleet_start_s', 0):.0f} s"
        for n in sizes
        if ("floor", n) in by_key and "error" not in by_key[("floor", n)]["raw"]
    ]
    per_batch = []
    for op in OPS:
        if op.playbook != "deploy.yml" or not op.visits:
            continue
        cells = []
        for size in sizes:
            row = by_key.get((op.key, size))
            if row is not None and "error" not in row["raw"]:
                cells.append(f"{row['raw']['seconds'] / len(batches(size)):.0f}")
        if cells:
            per_batch.append(f"{op.label.split(' (')[0]} {' / '.join(cells)} s")
    unvisited = [
        op.label.split(" (")[0] for op in OPS if op.playbook == "deploy.yml" and not op.visits
    ]
    lines += [
        "",
        f"deploy.yml batches (procslice_serial by default {SERIAL_SMALL}, from "
        f"{SERIAL_LARGE_FROM} changed hosts on {SERIAL_LARGE}; {' and '.join(unvisited)}: "
        f"no host visited after the plan): {batches_text}; seconds per batch on "
        f"{' / '.join(map(str, sizes))} hosts: {'; '.join(per_batch)}. Starting each fleet "
        f"(playbooks/fleet.yml, not in the table) took {', '.join(starts)}.",
        "",
        *load_lines(by_key, sizes),
        INCLUDED,
        "",
    ]
    slowest = [
        (size, by_key[("first-deploy", size)]["raw"].get("top_tasks", []))
        for size in sizes
        if ("first-deploy", size) in by_key
    ]
    if slowest and slowest[-1][1]:
        size, tasks = slowest[-1]
        lines += [
            f"Slowest tasks of the first deploy on {size} host{'s' if size > 1 else ''} "
            "(profile_tasks, each summed over the batches): "
            + "; ".join(f"{name} {seconds:.1f} s" for name, seconds in tasks[:5])
            + ".",
            "",
        ]
    return lines
