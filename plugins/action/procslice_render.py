"""procslice_render: render every file of a set of services on the controller, in one task.

The shared part of the model roles (procslice_unit): each role names its templates
(src, dest with @UNIT@/@NAME@/@USER@/@MODEL@, owner, group, mode, and the class that
says what a change needs: restart, reload or limits); this action renders them for
every service with the task's variables (the including role's own), and returns

- rendered: every file with its content, and
- specs: one plan spec per service (the files by class, exactly the lists
  procslice-activate fingerprints),

for the plan (procslice_plan) and the apply (procslice_files, procslice-activate); the
roles register the result as __procslice_unit_render (the slices: __procslice_slices_render).
With loop_var (procslice_slices: slice) the items are named otherwise in the templates.
With sets (the plan phase: procslice_plan) it renders several such sets in one task,
each named (service, gunicorn, ..., slices: {services, templates, loop_var, root}), and returns
sets: name -> {rendered, specs}: a host's every file in one worker process instead of a
task per role.
Registered, not returned as facts: facts of an action go to the fact cache, which
ansible-playbook then reads back (and decodes) at every task of every host.
One task instead of a lookup per file: a template lookup copies every variable of the
host for each file, which made rendering most of a no-op deploy's time.
Each template's compiled code is kept in ~/.cache/procslice/jinja (compile_cache): every
task runs in a new worker process, which compiled every template again for every host.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
from ansible import __version__ as _ANSIBLE_VERSION
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template
from jinja2.environment import TemplateExpression

try:  # the engine's options: what the template lookup uses (ansible-core 2.19)
    from ansible._internal._templating import _template_vars
    from ansible._internal._templating._engine import TemplateOptions, TemplateOverrides
    from ansible._internal._templating._jinja_bits import (
        AnsibleEnvironment,
        _TemplateCompileContext,
    )
except ImportError as exc:  # pragma: no cover - older ansible-core
    raise AnsibleActionFail(f"procslice_render needs ansible-core 2.19 or later: {exc}") from exc

_FILTERS = Path(__file__).resolve().parent.parent / "filter" / "procslice_plan.py"
_spec = importlib.util.spec_from_file_location("procslice_plan_filters_for_render", _FILTERS)
assert _spec and _spec.loader
_plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_plan)
_DATA = Path(__file__).resolve().parent.parent / "filter" / "procslice.py"
_spec = importlib.util.spec_from_file_location("procslice_filters_for_render", _DATA)
assert _spec and _spec.loader
_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data)


# Every task runs in a fresh worker process, so Jinja compiled each template again for
# every host and role: parsing and generating Python made most of a no-op plan's
# controller time (2.5 s of CPU on 6 hosts). The compiled code is kept on disk instead,
# as Jinja's own bytecode cache does, keyed by everything the compilation reads: the
# template's source, the environment's syntax settings, the compile context, and the
# versions of Python, Jinja and ansible-core. Where: $XDG_CACHE_HOME/procslice/jinja
# (~/.cache/procslice/jinja), one small file per template source and Jinja setting.
_ENV_SETTINGS = (
    "block_start_string",
    "block_end_string",
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
    "line_statement_prefix",
    "line_comment_prefix",
    "trim_blocks",
    "lstrip_blocks",
    "newline_sequence",
    "keep_trailing_newline",
    "optimized",
    "is_async",
)


def _compile_key(env: Any, source: str, name: Any, filename: Any, defer_init: bool) -> str:
    context = _TemplateCompileContext.current(optional=True)
    parts = [
        sys.version,
        jinja2.__version__,
        _ANSIBLE_VERSION,
        type(env).__module__ + "." + type(env).__qualname__,
        env.code_generator_class.__qualname__,
        repr([getattr(env, setting, None) for setting in _ENV_SETTINGS]),
        repr((name, filename, defer_init, getattr(context, "escape_backslashes", None))),
        str(source),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_directory() -> Path:
    """$XDG_CACHE_HOME/procslice/jinja (~/.cache/procslice/jinja)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "procslice" / "jinja"


def _load(path: Path) -> types.CodeType | None:
    with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
        code = marshal.loads(path.read_bytes())
        if isinstance(code, types.CodeType):
            return code
    return None


def _store(path: Path, code: types.CodeType) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(marshal.dumps(code))
        os.replace(tmp, path)


# compile_expression compiles a parsed tree, not a string: the code it produced, caught
# by the compile below for the expression's own cache entry
_captured = threading.local()


def _cached(original: Any, directory: Path) -> Any:
    """AnsibleEnvironment.compile through the files in ``directory``."""

    def cached(
        env: Any,
        source: Any,
        name: Any = None,
        filename: Any = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        if raw or not isinstance(source, str):
            code = original(env, source, name, filename, raw, defer_init)
            codes = getattr(_captured, "codes", None)
            if codes is not None and isinstance(code, types.CodeType):
                codes.append(code)
            return code
        path = directory / _compile_key(env, source, name, filename, defer_init)
        code = _load(path)
        if code is None:
            code = original(env, source, name, filename, raw, defer_init)
            _store(path, code)
        return code

    cached.procslice_cache = directory  # type: ignore[attr-defined]
    return cached


def _cached_expression(original: Any, directory: Path) -> Any:
    """AnsibleEnvironment.compile_expression (a task's conditions) through ``directory``."""

    def compile_expression(env: Any, source: Any, undefined_to_none: bool = True) -> Any:
        if not isinstance(source, str) or getattr(env, "_debuggable_template_source", False):
            return original(env, source, undefined_to_none)
        path = directory / _compile_key(env, "expression\0" + source, None, None, False)
        code = _load(path)
        if code is not None:
            template = env.template_class.from_code(env, code, env.make_globals(None), None)
            return TemplateExpression(template, undefined_to_none)
        _captured.codes = []
        try:
            expression = original(env, source, undefined_to_none)
            codes = _captured.codes
        finally:
            _captured.codes = None
        if len(codes) == 1:
            _store(path, codes[0])
        return expression

    compile_expression.procslice_cache = directory  # type: ignore[attr-defined]
    return compile_expression


def install_compile_cache(directory: Path | None = None) -> None:
    """From now on, in this process and the workers it forks, compile through the cache.

    The procslice_warm callback calls it in ansible-playbook's main process, so every
    task's conditions and arguments are compiled once, not once per worker.
    """
    directory = directory or cache_directory()
    if getattr(AnsibleEnvironment.compile, "procslice_cache", None) != directory:
        AnsibleEnvironment.compile = _cached(AnsibleEnvironment.compile, directory)  # type: ignore[method-assign]
        AnsibleEnvironment.compile_expression = _cached_expression(  # type: ignore[method-assign]
            AnsibleEnvironment.compile_expression, directory
        )


@contextlib.contextmanager
def compile_cache(directory: Path) -> Iterator[None]:
    """Within the block, AnsibleEnvironment.compile and compile_expression read and write
    ``directory``."""
    compile_, expression = AnsibleEnvironment.compile, AnsibleEnvironment.compile_expression
    if getattr(compile_, "procslice_cache", None) == directory:  # installed for the process
        yield
        return
    AnsibleEnvironment.compile = _cached(compile_, directory)  # type: ignore[method-assign]
    AnsibleEnvironment.compile_expression = _cached_expression(expression, directory)  # type: ignore[method-assign]
    try:
        yield
    finally:
        AnsibleEnvironment.compile = compile_  # type: ignore[method-assign]
        AnsibleEnvironment.compile_expression = expression  # type: ignore[method-assign]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        root = args.get("root")
        wheelhouses = args.get("wheelhouses") or {}
        cache: dict[Any, Any] = {}
        sets = args.get("sets")
        if sets is not None:
            if not isinstance(sets, dict):
                raise AnsibleActionFail(
                    "procslice_render: sets must map a name to {services, templates, loop_var}"
                )
            out = {}
            for name, one in sets.items():
                # a set's own root (podman: none, no releases) over the task's
                mine = one.get("root", root)
                rendered, specs = self._render_set(one, mine, wheelhouses, task_vars, cache)
                out[name] = {"rendered": rendered, "specs": specs}
            result.update(changed=False, sets=out)
            return result
        rendered, specs = self._render_set(args, root, wheelhouses, task_vars, cache)
        result.update(changed=False, rendered=rendered, specs=specs)
        return result

    def _render_set(
        self,
        args: Any,
        root: Any,
        wheelhouses: Any,
        task_vars: dict[str, Any],
        cache: dict[Any, Any],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        services = args.get("services") or []
        templates = args.get("templates") or []
        loop_var = args.get("loop_var") or "service"
        rendered = []
        for item in _plan.procslice_unit_sources(services, templates):
            content = None
            if item["src"]:
                content = self._render(item["src"], {loop_var: item["service"]}, task_vars, cache)
            entry = {key: item[key] for key in ("name", "path", "owner", "group", "mode", "class")}
            rendered.append(entry | {"unit": item["service"].get("unit"), "content": content})
        # the build's wheelhouses are keyed by build (name, package, model): this host's
        mine = _data.procslice_build_pick(wheelhouses, services)
        return rendered, _plan.procslice_unit_specs(services, rendered, root, mine)

    def _render(
        self, src: str, own: dict[str, Any], task_vars: dict[str, Any], cache: dict[Any, Any]
    ) -> str:
        if src not in cache:
            if not os.path.isfile(src):
                raise AnsibleActionFail(f"procslice_render: template {src} not found")
            text = trust_as_template(Path(src).read_text())
            extra = _template_vars.generate_ansible_template_vars(
                path=src, fullpath=src, include_ansible_managed="ansible_managed" not in task_vars
            )
            cache[src] = (text, extra)
        text, extra = cache[src]
        variables = {**task_vars, **extra, **own}
        # one templar (one Jinja environment) per template directory for the whole task:
        # an environment looks each filter up once, and a new one per file looked the
        # same filters up again (Jinja's own through every collection's routing)
        directory = os.path.dirname(src)
        templar = cache.get(("templar", directory))
        if templar is None:
            templar = self._templar.copy_with_new_env(searchpath=[directory])
            cache[("templar", directory)] = templar
        templar.available_variables = variables
        options = TemplateOptions(
            escape_backslashes=False, overrides=TemplateOverrides.from_kwargs({"trim_blocks": True})
        )
        with compile_cache(cache_directory()):
            out = templar._engine.template(text, options=options)
        return str(out)
