"""roles/procslice_service/files/procslice-release.py: one host's releases in one call,
run as the role runs it (python3 -I -c SCRIPT VENV_SCRIPT, the jobs on stdin) on real
directories, with a venv script that only marks the release complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "roles/procslice_service/files/procslice-release.py"
# what the role's venv script leaves: the release directory, complete; "fail" in the
# install arguments makes it fail as a broken wheelhouse would
VENV = (
    'set -eu; release="$1"; archive="$2"; shift 2; test -f "$archive"; '
    'case "$*" in *fail*) echo "no matching distribution" >&2; exit 3;; esac; '
    'mkdir -p "$release/venv"; touch "$release/.complete"'
)


def run(jobs: list[dict[str, Any]]) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT.read_text(), VENV],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def job(root: Path, name: str, digest: str, keep: int = 2, install: str = "app") -> dict[str, Any]:
    base = root / name
    for sub in ("releases", "wheelhouse"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "wheelhouse" / f"{digest}.tar").write_bytes(b"")
    return {
        "name": name,
        "unit": f"procslice-test-{name}-no-such-unit",
        "dir": str(base),
        "hash": digest,
        "install": [install],
        "keep": keep,
    }


def test_a_first_release_is_built_and_made_current(tmp_path: Path) -> None:
    rc, out, _ = run([job(tmp_path, "api", "a" * 12), job(tmp_path, "web", "b" * 12)])
    assert rc == 0 and out["changed"]
    for name, digest in (("api", "a"), ("web", "b")):
        release = out["releases"][name]
        assert release.endswith("-" + digest * 12)
        assert (tmp_path / name / "current").readlink() == Path("releases") / release
        assert (tmp_path / name / "releases" / release / ".complete").is_file()
    assert [r["stage"] for r in out["results"]] == ["switched", "switched"]


def test_the_same_wheelhouse_again_changes_nothing(tmp_path: Path) -> None:
    run([job(tmp_path, "api", "a" * 12)])
    rc, out, _ = run([job(tmp_path, "api", "a" * 12)])
    assert rc == 0 and out["changed"] is False
    assert out["results"][0] == {
        "name": "api",
        "release": out["releases"]["api"],
        "built": False,
        "stage": "unchanged",
        "expired": [],
    }


def test_releases_beyond_keep_go_with_their_wheelhouses(tmp_path: Path) -> None:
    # names are <UTC second>-<hash>: within one second they sort by hash, 1 oldest
    for digest in ("1", "2", "3"):
        rc, out, _ = run([job(tmp_path, "api", digest * 12)])
        assert rc == 0
    assert [name[-12:] for name in out["results"][0]["expired"]] == ["1" * 12]
    releases = sorted(p.name for p in (tmp_path / "api" / "releases").iterdir())
    assert [name[-12:] for name in releases] == ["2" * 12, "3" * 12]
    assert not (tmp_path / "api" / "wheelhouse" / f"{'1' * 12}.tar").exists()
    assert (tmp_path / "api" / "wheelhouse" / f"{'2' * 12}.tar").exists()


def test_a_failing_build_names_the_service_and_the_others_are_done(tmp_path: Path) -> None:
    rc, out, err = run(
        [job(tmp_path, "api", "a" * 12, install="fail"), job(tmp_path, "web", "b" * 12)]
    )
    assert rc == 1
    assert "api: building release" in err and "no matching distribution" in err
    assert "api" not in out["releases"] and "web" in out["releases"]
    assert not (tmp_path / "api" / "current").exists()
    assert (tmp_path / "web" / "current").is_symlink()
