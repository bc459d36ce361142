"""procslice_warm (plugins/callback): ansible-playbook's main process loads the Jinja
plugins (the collection's filters, which the roles name in full, included) and installs
the compile cache before any task's worker is forked, so the workers inherit both; and
it loads with every run of the project's ansible.cfg."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# In a process of its own: what a worker forked after the callback's start inherits.
PROBE = """
import importlib.util, os, sys
from ansible.plugins.loader import filter_loader, init_plugin_loader, test_loader
init_plugin_loader()  # the collections path of the project's ansible.cfg, as a run has
from ansible._internal._templating._jinja_bits import AnsibleEnvironment
before = (
    len(filter_loader._cached_non_collection_wrappers),
    hasattr(AnsibleEnvironment.compile, "procslice_cache"),
)
spec = importlib.util.spec_from_file_location("warm", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.CallbackModule()
pid = os.fork()
if pid == 0:
    names = filter_loader._cached_non_collection_wrappers
    ok = ("procslice_plan_table" in names and "ansible.builtin.to_json" in names
          and "match" in test_loader._cached_non_collection_wrappers
          and "ansible_collections.procslice.procslice.plugins.filter.procslice_plan" in sys.modules
          and AnsibleEnvironment.compile.procslice_cache
              == module._render_module().cache_directory()
          and hasattr(AnsibleEnvironment.compile_expression, "procslice_cache"))
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(before, os.waitstatus_to_exitcode(status))
"""


def test_a_worker_forked_after_the_callback_starts_warm(tmp_path: Path) -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), XDG_CACHE_HOME=str(tmp_path))
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "plugins/callback/procslice_warm.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # cold before the callback, warm in the forked child after it
    assert run.stdout.split() == ["(0,", "False)", "0"], run.stdout + run.stderr


def test_the_project_config_loads_it_with_every_run() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "ansible.cfg")
    assert config["defaults"]["callback_plugins"] == "plugins/callback"
    source = (REPO / "plugins/callback/procslice_warm.py").read_text()
    assert "CALLBACK_NEEDS_ENABLED = False" in source


def test_a_run_of_the_project_starts_it(tmp_path: Path) -> None:
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n        msg: \"{{ ['a'] | procslice_plan_table({}) }}\"\n"
        "      when: \"'x' is match('x')\"\n"
    )
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
    )
    ansible = Path(sys.executable).parent / "ansible-playbook"
    run = subprocess.run(
        [str(ansible), str(playbook), "-i", "localhost,", "-c", "local", "-vvvv"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "procslice_warm" in run.stdout
    # the compiled task conditions and arguments were kept for the next run
    assert any((tmp_path / "cache" / "procslice" / "jinja").iterdir())
