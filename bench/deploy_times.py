"""The deploy section: how long deploy.yml takes on 1, 3 and 6 hosts, against a floor.

The section deploys a snapshot of the working tree taken when it starts
(fleet.snapshot), so an edit made during its many minutes is not timed as a change.
For each fleet size N, a fresh bench fleet (bench/fleet.py: destroyed, started again
with an empty fact cache and no SSH control sockets), then, with the project's
ansible.cfg and ``-i /var/tmp/procslice-bfleet/hosts.yml -i bench/inventory`` (one
slice, two small gunicorn services)::

    bench/playbooks/warm-build.yml   the wheelhouses built beforehand (not timed)
    floor                            bench/playbooks/floor.yml: one task, become, no facts
    first deploy                     deploy.yml on hosts that never saw procslice
    floor
    no-op re-deploy                  deploy.yml again: nothing should change
    floor
    live limit change                playbooks/limits.yml, the web slice's memory_max lowered

Each is the wall-clock time of its ansible-playbook process.  Reported per N: the
seconds, the ratio to the floor (the median of the three floor runs of that fleet),
the seconds per host, the changed tasks, and the slowest tasks (profile_tasks); and,
over the sizes, what each added host costs (the least-squares slope of seconds
against N).  deploy.yml rolls out in batches (procslice_serial [1, 25%, 100%]: one
canary host, then 25%, then the rest), so its time grows with the batches as well as
with the hosts.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fleet
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
INVENTORY_DIR = BENCH / "inventory"
SIZES = (1, 3, 6)
SERIAL: list[int | str] = [1, "25%", "100%"]  # deploy.yml's default procslice_serial
LIMIT_SLICE = "web"
LIMIT_MEMORY_MAX = "448M"
FLOOR_PLAYBOOK = "bench/playbooks/floor.yml"

NAMES = [f"deploy-{size}" for size in SIZES]


@dataclass(frozen=True)
class Op:
    """One timed operation: its row name, label and playbook arguments."""

    key: str
    label: str
    playbook: str
    extra: tuple[str, ...] = ()


FLOOR = Op("floor", "floor: one task (`command: true`, become, no facts)", FLOOR_PLAYBOOK)
OPS = [
    Op("first-deploy", "first deploy (deploy.yml)", "deploy.yml"),
    Op("noop-deploy", "no-op re-deploy (deploy.yml)", "deploy.yml"),
    Op(
        "limit-change",
        f"live limit change (playbooks/limits.yml: {LIMIT_SLICE} slice memory_max "
        f"→ {LIMIT_MEMORY_MAX})",
        "playbooks/limits.yml",
    ),
]
INCLUDED = (
    "Included in every time: ansible-playbook's start-up, the inventory, SSH "
    "(control masters left open for 60 s by the run before: the floor, run just before "
    "each timed playbook, opened them), become. deploy.yml also: preflight on the "
    "controller, the build step (wheelhouses already built by "
    "bench/playbooks/warm-build.yml, so it only hashes the inputs), fact gathering "
    "(first deploy: an empty fact cache; re-deploy: cached facts, `gathering = smart`), "
    "the deploy lock, apt (python3-venv is already in the base image), per service: "
    "the wheelhouse copied and a venv made with `pip install --no-index`, the units "
    "started and their health gates, in batches of [1, 25%, 100%] hosts. Not included: "
    "starting the fleet (its time is listed) and building the wheelhouses."
)


def batches(size: int, serial: list[int | str] = SERIAL) -> list[int]:
    """The batch sizes ansible's ``serial`` list gives for ``size`` hosts."""
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


def top_tasks(log: Path, count: int = 5) -> list[list[Any]]:
    """The slowest tasks from profile_tasks' summary at the end of a log."""
    text = log.read_text(errors="replace")
    tail = text.rpartition("PLAY RECAP")[2]
    found = []
    for match in re.finditer(r"^(.+?) -{2,} (\d+\.\d+)s$", tail, re.MULTILINE):
        found.append([match.group(1).strip(), float(match.group(2))])
    return sorted(found, key=lambda item: -item[1])[:count]


def limits_vars() -> Path:
    """An extra-vars file: the bench's slices with the web slice's memory_max lowered."""
    data = yaml.safe_load((INVENTORY_DIR / "group_vars" / "procslice.yml").read_text())
    slices = data["procslice_slices"]
    for item in slices:
        if item["name"] == LIMIT_SLICE:
            item["memory_max"] = LIMIT_MEMORY_MAX
    path = fleet.STATE / "limits-vars.json"
    path.write_text(json.dumps({"procslice_slices": slices}))
    return path


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
    for op in OPS:
        floors.append(timed(FLOOR, size, inventory, tree, f"-before-{op.key}"))
        print(f"    floor: {floors[-1]['seconds']:.1f} s", flush=True)
        args = list(inventory)
        if op.key == "limit-change":
            args += ["-e", f"@{limits_vars()}"]
        done = results[op.key] = timed(op, size, args, tree)
        failed = f" FAILED: {done['error']}" if "error" in done else ""
        print(
            f"    {op.key}: {done['seconds']:.1f} s, changed {done['changed']}{failed}", flush=True
        )
        if op.key == "first-deploy" and "error" in done:
            break  # nothing to re-deploy or to change
    if "limit-change" in results:
        results["limit-change"]["slice_after"] = slice_memory_max(fleet.hosts(size)[0])
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
            raw["batches"] = batches(size) if op.playbook == "deploy.yml" else [size]
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
        "(one slice, two gunicorn services). Each cell: wall-clock seconds of the "
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
        if op.playbook != "deploy.yml":
            continue
        cells = []
        for size in sizes:
            row = by_key.get((op.key, size))
            if row is not None and "error" not in row["raw"]:
                cells.append(f"{row['raw']['seconds'] / len(batches(size)):.0f}")
        if cells:
            per_batch.append(f"{op.label.split(' (')[0]} {' / '.join(cells)} s")
    lines += [
        "",
        f"deploy.yml batches (procslice_serial {SERIAL}): {batches_text}; seconds per "
        f"batch on {' / '.join(map(str, sizes))} hosts: {'; '.join(per_batch)}. "
        f"Starting each fleet (playbooks/fleet.yml, not in the table) took {', '.join(starts)}.",
        "",
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
