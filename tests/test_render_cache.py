"""procslice_render's compile cache: a template compiled once on the controller is not
compiled again by the next task's worker, and the cache never changes what renders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from filter_plugin import load_file

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "action" / "procslice_render.py"

# One worker's render: the template through ansible's own Templar, inside the cache.
RENDER = """
import importlib.util, sys
from pathlib import Path
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
spec = importlib.util.spec_from_file_location("render", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from jinja2 import Environment
compiled = []
original = Environment._generate
def counting(self, *args, **kwargs):
    compiled.append(1)
    return original(self, *args, **kwargs)
Environment._generate = counting
templar = Templar(loader=DataLoader(), variables={"name": sys.argv[4]})
with module.compile_cache(Path(sys.argv[2])):
    out = templar.template(trust_as_template(Path(sys.argv[3]).read_text()))
print(f"{len(compiled)}|{out}")
"""


def _plugin() -> ModuleType:
    return load_file("procslice_render_action", PLUGIN)


def render(cache: Path, template: Path, name: str) -> tuple[int, str]:
    """Render in a process of its own, as each task's worker does: (compilations, output)."""
    run = subprocess.run(
        [sys.executable, "-c", RENDER, str(PLUGIN), str(cache), str(template), name],
        capture_output=True,
        text=True,
        check=True,
    )
    count, _, out = run.stdout.rstrip("\n").partition("|")
    return int(count), out


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "unit.j2"
    path.write_text("[Service]\n{% for i in range(2) %}Env={{ name }}-{{ i }}\n{% endfor %}")
    return path


def test_a_second_worker_renders_from_the_cache_without_compiling(tmp_path, template):
    cache = tmp_path / "jinja"
    first = render(cache, template, "api")
    assert first == (1, "[Service]\nEnv=api-0\nEnv=api-1")
    assert len(list(cache.iterdir())) == 1
    # another host's values, the same template: no compilation, its own output
    assert render(cache, template, "web") == (0, "[Service]\nEnv=web-0\nEnv=web-1")


def test_a_changed_template_is_compiled_again(tmp_path, template):
    cache = tmp_path / "jinja"
    render(cache, template, "api")
    template.write_text("[Service]\nUser={{ name }}\n")
    assert render(cache, template, "api") == (1, "[Service]\nUser=api")
    assert len(list(cache.iterdir())) == 2


def test_an_unreadable_cache_entry_is_compiled_and_replaced(tmp_path, template):
    cache = tmp_path / "jinja"
    render(cache, template, "api")
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not marshal data")
    assert render(cache, template, "api") == (1, "[Service]\nEnv=api-0\nEnv=api-1")
    assert render(cache, template, "api")[0] == 0


def test_the_cache_key_covers_the_environment_settings():
    plugin = _plugin()
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    env = AnsibleEnvironment(ansible_basedir=".")
    trimmed = env.overlay(trim_blocks=not env.trim_blocks)
    source = "{% if x %}\nA\n{% endif %}"
    keys = {
        plugin._compile_key(env, source, None, None, False),
        plugin._compile_key(trimmed, source, None, None, False),
        plugin._compile_key(env, source + " ", None, None, False),
        plugin._compile_key(env, source, "name", None, False),
    }
    assert len(keys) == 4


# One worker's conditions: `when` expressions through ansible's Templar, inside the cache.
CONDITION = """
import importlib.util, sys
from pathlib import Path
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
spec = importlib.util.spec_from_file_location("render", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from jinja2 import Environment
compiled = []
original = Environment._generate
def counting(self, *args, **kwargs):
    compiled.append(1)
    return original(self, *args, **kwargs)
Environment._generate = counting
templar = Templar(loader=DataLoader(), variables={"hosts": sys.argv[4].split(",")})
with module.compile_cache(Path(sys.argv[2])):
    out = [templar.evaluate_conditional(trust_as_template(sys.argv[3])) for _ in range(2)]
print(f"{len(compiled)}|{out}")
"""


def condition(cache: Path, expression: str, hosts: str) -> tuple[int, str]:
    """Evaluate ``expression`` twice in a process of its own: (compilations, results)."""
    run = subprocess.run(
        [sys.executable, "-c", CONDITION, str(PLUGIN), str(cache), expression, hosts],
        capture_output=True,
        text=True,
        check=True,
    )
    count, _, out = run.stdout.rstrip("\n").partition("|")
    return int(count), out


def test_a_condition_compiled_by_one_worker_is_not_compiled_by_the_next(tmp_path):
    cache = tmp_path / "jinja"
    expression = "hosts | select('match', 'web') | list | length > 1"
    # ansible keeps a compiled expression for its own process: one compilation, two answers
    assert condition(cache, expression, "web1,web2,db") == (1, "[True, True]")
    assert len(list(cache.iterdir())) == 1
    # the next worker: other values, no compilation, its own answer
    assert condition(cache, expression, "web1,db") == (0, "[False, False]")
    # another expression is compiled and kept beside it
    assert condition(cache, "hosts | length == 3", "a,b,c") == (1, "[True, True]")
    assert len(list(cache.iterdir())) == 2
