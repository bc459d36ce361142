"""Services: each entry of procslice_services normalised, with every default filled in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from procslice.data import checks
from procslice_controller.addresses import _parse_listen, _parse_publish, _parse_unix_listen
from procslice_controller.errors import (
    ProcsliceDataError,
    _Errors,
    _positive_int,
    _show,
    _wrong_model,
)
from procslice_controller.gunicorn import _gunicorn_settings
from procslice_controller.health import _health
from procslice_controller.podman import _podman_settings, _podman_unit_directives
from procslice_controller.resources import _resources
from procslice_controller.slices import _check_name, _check_state, _entries, _first
from procslice_controller.supervisor import _metrics_settings, _supervisor_settings
from procslice_controller.vocabulary import (
    ENV_NAME_RE,
    INTERFACES,
    MODELS,
    PACKAGE_KINDS,
    SERVICE_KEYS,
    SERVICE_LIMITS_KEYS,
    SOCKET_DEFAULTS,
)


def _env(value: Any, path: str, errors: _Errors) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"{_show(value)} is not a mapping; write {{LOG_LEVEL: info}}")
        return {}
    env: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(str(key)):
            errors.add(
                f"{path}.{key}",
                f"{_show(key)} is not an environment variable name; use letters, digits and _, "
                "not starting with a digit (e.g. LOG_LEVEL)",
            )
            continue
        if isinstance(item, (Mapping, list)):
            errors.add(f"{path}.{key}", f"{_show(item)} is not a scalar; write a string")
            continue
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif item is None:
            text = ""
        else:
            text = str(item)
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            errors.add(
                f"{path}.{key}",
                "contains a control character (newline, tab, NUL...); write a single-line "
                "value of printable characters",
            )
            continue
        env[str(key)] = text
    return env


def _service(entry: Mapping[str, Any], path: str, errors: _Errors) -> dict[str, Any] | None:
    """Normalise one service; per-service checks only (cross-checks come later)."""
    errors.unknown_keys(path, entry, SERVICE_KEYS)
    name = _check_name(entry, path, errors)
    state = _check_state(entry, path, errors)
    present = state == "present"

    model = entry.get("model")
    if model not in MODELS:
        if model is None:
            errors.add(f"{path}.model", f"missing; set one of: {', '.join(MODELS)}")
        else:
            errors.add(
                f"{path}.model",
                f"{_show(model)} is not a model; use one of: {', '.join(MODELS)}",
            )
        model = None
    else:
        _wrong_model(entry, path, errors, model)

    # slice
    slice_name = entry.get("slice")
    if slice_name is not None and not isinstance(slice_name, str):
        errors.add(f"{path}.slice", f"{_show(slice_name)} is not a slice name")
        slice_name = None

    # interface
    interface = entry.get("interface")
    if interface is not None and interface not in INTERFACES:
        errors.add(
            f"{path}.interface",
            f"{_show(interface)} is not an interface; use one of: {', '.join(INTERFACES)}",
        )
        interface = None
    if interface is None and "interface" not in entry:
        interface = {"gunicorn": "wsgi", "aio": "asgi", "swoole": "asgi"}.get(model or "")
    if model == "gunicorn" and interface == "raw":
        errors.add(
            f"{path}.interface",
            "gunicorn serves wsgi or asgi apps; a raw asyncio protocol needs model aio or swoole",
        )
    if model in ("aio", "swoole") and interface == "wsgi":
        errors.add(
            f"{path}.interface",
            f"procslice {model} serves asgi apps and raw asyncio protocols, not wsgi; "
            "use model gunicorn for a wsgi app, or set interface: asgi for an ASGI app",
        )

    # package, app, image
    package = entry.get("package")
    if present and model in ("gunicorn", "aio", "swoole"):
        _check_package(package, f"{path}.package", errors)
        app = entry.get("app")
        if not app:
            errors.add(
                f"{path}.app",
                f"missing; model {model} needs the app to load as module:attribute "
                '(e.g. app: "api.main:app")',
            )
        else:
            try:
                checks.app(app)
            except ValueError as exc:
                errors.add(f"{path}.app", f"{_show(app)} {exc}")
    elif package is not None and present:
        _check_package(package, f"{path}.package", errors)
    if present and model == "podman":
        image = entry.get("image")
        if not image or not isinstance(image, str):
            errors.add(
                f"{path}.image",
                "missing; model podman runs an image: set image (e.g. "
                "image: docker.io/library/nginx:1.27, plus image_archive to load it from a file)",
            )

    # listen / ports
    listen_raw = entry.get("listen", [])
    if isinstance(listen_raw, str):
        listen_raw = [listen_raw]
    if not isinstance(listen_raw, list):
        errors.add(f"{path}.listen", f'{_show(listen_raw)} is not a list; write ["0.0.0.0:8000"]')
        listen_raw = []
    listen: list[str] = []
    ports: list[int] = []
    binds: list[tuple[str, int, str, str]] = []  # (host, port, proto, key path)
    # unix sockets in listen: (path, key path), checked across services in _cross_checks
    unix_binds: list[tuple[str, str]] = []
    for index, item in enumerate(listen_raw):
        if isinstance(item, str) and item.strip().startswith("unix:"):
            if model == "podman":
                errors.add(
                    f"{path}.listen[{index}]",
                    f"{_show(item)}: a podman service cannot listen on a unix socket (its "
                    "ports are published by podman); publish a port with ports (e.g. "
                    '"127.0.0.1:8080:80") or run the app under gunicorn, aio or swoole',
                )
                continue
            try:
                socket_path = _parse_unix_listen(item.strip())
            except ProcsliceDataError as exc:
                errors.add(f"{path}.listen[{index}]", str(exc))
                continue
            if f"unix:{socket_path}" in listen:
                errors.add(f"{path}.listen[{index}]", f"{item} is listed twice; remove one")
                continue
            listen.append(f"unix:{socket_path}")
            unix_binds.append((socket_path, f"{path}.listen[{index}]"))
            continue
        try:
            host, port = _parse_listen(item)
        except ProcsliceDataError as exc:
            errors.add(f"{path}.listen[{index}]", str(exc))
            continue
        listen.append(f"{host}:{port}")
        ports.append(port)
        binds.append((host, port, "tcp", f"{path}.listen"))
    if "ports" in entry and model == "podman":
        publish = entry["ports"]
        if not isinstance(publish, list):
            errors.add(f"{path}.ports", f'{_show(publish)} is not a list; write ["8080:80"]')
            publish = []
        for index, item in enumerate(publish):
            try:
                parsed = _parse_publish(item)
            except ProcsliceDataError as exc:
                errors.add(f"{path}.ports[{index}]", str(exc))
                continue
            if parsed:
                host, port, proto = parsed
                binds.append((host, port, proto, f"{path}.ports"))
                if proto == "tcp" and f"{host}:{port}" not in listen:
                    listen.append(f"{host}:{port}")
                    ports.append(port)

    # workers
    workers: Any = entry.get("workers", "auto")
    if workers != "auto":
        number = _positive_int(workers)
        if number is None:
            errors.add(
                f"{path}.workers",
                f"{_show(workers)} is not a worker count; write auto or a positive integer",
            )
            workers = "auto"
        else:
            workers = number

    # gunicorn settings (accepted and ignored on other models)
    worker_class, threads, settings = _gunicorn_settings(entry, path, errors, model, interface)

    # limits
    limits_raw = entry.get("limits") or {}
    if not isinstance(limits_raw, Mapping):
        errors.add(
            f"{path}.limits", f"{_show(limits_raw)} is not a mapping; write {{memory_max: 1G}}"
        )
        limits_raw = {}
    errors.unknown_keys(f"{path}.limits", limits_raw, SERVICE_LIMITS_KEYS)
    directives, limits, limit_paths = _resources(limits_raw, f"{path}.limits", errors, service=True)

    # health
    health = _health(entry.get("health"), f"{path}.health", errors, model, interface, listen)

    # the aio and swoole supervisors' settings (refused on the models that ignore them)
    supervisor = _supervisor_settings(entry, path, errors, model)
    metrics = _metrics_settings(entry, path, errors, model, name)
    # podman: the image, its source and the run flags derived from `limits`
    podman = _podman_settings(entry, path, errors, model, directives, limits, limit_paths)
    if model == "podman":
        directives = _podman_unit_directives(directives, limits)

    env = _env(entry.get("env"), f"{path}.env", errors)
    directories = _directories(entry.get("directories"), f"{path}.directories", errors, model, name)
    purge = entry.get("purge", False)
    if not isinstance(purge, bool):
        errors.add(f"{path}.purge", f"{_show(purge)} is not true or false")
        purge = False
    sockets = _socket_settings(entry, path, errors, model)
    if name is None:
        return None
    sockets["socket_user"] = sockets["socket_user"] or f"procslice-{name}"
    sockets["socket_group"] = sockets["socket_group"] or f"procslice-{name}"
    service: dict[str, Any] = {
        "name": name,
        "model": model,
        "unit": f"procslice-{name}",
        "user": f"procslice-{name}",
        "slice": slice_name,
        "slice_unit": f"procslice-{slice_name}.slice" if slice_name else "procslice.slice",
        "state": state,
        "package": package,
        "app": entry.get("app"),
        "interface": interface,
        "listen": listen,
        "workers": workers,
        "worker_class": worker_class,
        "threads": threads,
        **settings,
        "health": health,
        "env": env,
        "directories": directories,
        "purge": purge,
        "directives": directives,
        "limits": limits,
        # the host ports the service answers on (podman: its published tcp ports; the
        # publish list itself is `publish`)
        "ports": ports,
        "_binds": binds,
        "_unix_binds": unix_binds,
        # the unix socket paths of listen (for the .socket unit's SocketUser= and co.)
        "unix_listen": [socket_path for socket_path, _ in unix_binds],
        "_paths": limit_paths,
        **sockets,
        **supervisor,
        **metrics,
        **podman,
    }
    # every other key (model-specific settings for the later roles) passes through unchanged
    for key, value in entry.items():
        service.setdefault(key, value)
    return service


# directories: KIND -> (systemd's directive, the root of /PATH/procslice/NAME)
DIRECTORY_KINDS = {
    "state": ("StateDirectory", "/var/lib"),
    "cache": ("CacheDirectory", "/var/cache"),
    "logs": ("LogsDirectory", "/var/log"),
}
_SUBDIR_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


# procslice's own files in those roots: a service of that name gets no directories
RESERVED_DIRECTORY_NAMES = frozenset(
    {"applied", "base", "drained", "front", "images", "wheelhouse"}
)


def _directories(
    value: Any, path: str, errors: _Errors, model: str | None, name: str | None = None
) -> dict[str, list[str]]:
    """directories: {state: true | [subdir, ...], cache: ..., logs: ...} -> kind ->
    the subdirectories to create ([] for the directory alone); kinds not asked for are
    left out. systemd creates /var/lib/procslice/NAME etc. for the service's user and
    keeps them across releases, restarts and rollbacks."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"{_show(value)} is not a mapping; write {{state: [uploads]}}")
        return {}
    if model == "podman":
        errors.add(
            path,
            "a podman service keeps its data in volumes; write volumes: "
            '["/var/lib/procslice/NAME:/data"] or a named volume instead',
        )
        return {}
    errors.unknown_keys(path, value, tuple(DIRECTORY_KINDS))
    if name in RESERVED_DIRECTORY_NAMES:
        errors.add(
            path,
            f"procslice keeps its own files in /var/lib/procslice/{name} or "
            f"/var/cache/procslice/{name}; rename the service to give it directories",
        )
        return {}
    result: dict[str, list[str]] = {}
    for kind in DIRECTORY_KINDS:
        if kind not in value or value[kind] is False:
            continue
        wanted = value[kind]
        if wanted is True:
            result[kind] = []
            continue
        if not isinstance(wanted, list) or not all(isinstance(sub, str) for sub in wanted):
            errors.add(
                f"{path}.{kind}",
                f"{_show(wanted)} is not true or a list of subdirectories; write "
                f"{kind}: true, or {kind}: [uploads, tmp]",
            )
            continue
        for sub in wanted:
            if not _SUBDIR_RE.match(sub) or ".." in sub.split("/"):
                errors.add(
                    f"{path}.{kind}",
                    f"{_show(sub)} is not a relative subdirectory; write a path below the "
                    f"service's directory, e.g. uploads or media/thumbs",
                )
        result[kind] = sorted(set(wanted))
    return result


def _check_package(package: Any, path: str, errors: _Errors) -> None:
    fix = (
        "set exactly one of source (a directory with a pyproject.toml), wheel (a .whl file) "
        "or requirements (a requirements.txt)"
    )
    if package is None:
        errors.add(path, f"missing; {fix}")
        return
    if not isinstance(package, Mapping):
        errors.add(path, f"{_show(package)} is not a mapping; {fix}")
        return
    errors.unknown_keys(path, package, PACKAGE_KINDS)
    given = [kind for kind in PACKAGE_KINDS if package.get(kind)]
    if len(given) != 1:
        if not given:
            what = "none of them is set"
        elif len(given) == 2:
            what = f"both {given[0]} and {given[1]} are set"
        else:
            what = "source, wheel and requirements are all set"
        errors.add(path, f"{what}; {fix}")
        return
    if not isinstance(package[given[0]], str):
        errors.add(f"{path}.{given[0]}", f"{_show(package[given[0]])} is not a path")


def _socket_settings(
    entry: Mapping[str, Any], path: str, errors: _Errors, model: str | None
) -> dict[str, Any]:
    """socket_user, socket_group and socket_mode: the unix sockets' owner and mode."""
    settings = dict(SOCKET_DEFAULTS)
    for key in ("socket_user", "socket_group"):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]*[$]?", value):
            errors.add(
                f"{path}.{key}",
                f"{_show(value)} is not a user or group name; write e.g. www-data, or leave it "
                "out for the service's own",
            )
            continue
        settings[key] = value
    mode = entry.get("socket_mode", SOCKET_DEFAULTS["socket_mode"])
    if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
        errors.add(
            f"{path}.socket_mode",
            f'{_show(mode)} is not an octal mode; write it quoted, e.g. "0660"',
        )
    else:
        settings["socket_mode"] = mode.zfill(4)
    if model == "podman":
        for key in SOCKET_DEFAULTS:
            if key in entry:
                errors.add(
                    f"{path}.{key}",
                    "a podman service has no unix socket in listen; remove it",
                )
    return settings


def _services(services: Any, errors: _Errors) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, path, entry in _entries(
        services, "procslice_services", "name: api, model: ... ", errors
    ):
        service = _service(entry, path, errors)
        if service is None or not _first(service["name"], index, seen, path, "service", errors):
            continue
        service["_path"] = path
        result.append(service)
    return result
