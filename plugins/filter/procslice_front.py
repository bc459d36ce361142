"""procslice front filters: the haproxy frontends and backends a fleet's data gives.

procslice_front_frontends(services) -> list[dict]
    one frontend per present service with an HTTP health check and a port:
    name, bind 0.0.0.0:<port>, port, health (the check's path).
procslice_front_backends(hosts, hostvars) -> list[dict]
    one server per fleet host: name (inventory name), address (procslice_address,
    else ansible_host, else the name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def procslice_front_frontends(services: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    frontends = []
    for service in services:
        health = service.get("health") or {}
        ports = service.get("ports") or []
        if service.get("state", "present") != "present" or not health.get("http") or not ports:
            continue
        port = int(ports[0])
        frontends.append(
            {
                "name": service["name"],
                "bind": f"0.0.0.0:{port}",
                "port": port,
                "health": health["http"],
            }
        )
    return frontends


def procslice_front_backends(
    hosts: Iterable[str], hostvars: Mapping[str, Any]
) -> list[dict[str, str]]:
    backends = []
    for host in hosts:
        values = hostvars[host]
        address = values.get("procslice_address") or values.get("ansible_host") or host
        backends.append({"name": host, "address": str(address)})
    return backends


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "procslice_front_frontends": procslice_front_frontends,
            "procslice_front_backends": procslice_front_backends,
        }
