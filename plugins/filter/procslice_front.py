"""procslice front filters: the haproxy frontends and backends a fleet's data gives.

procslice_front_frontends(services) -> list[dict]
    one frontend per present service with an HTTP health check and a port:
    name, bind 0.0.0.0:<port>, port, health (the check's path). A service that listens
    only on unix sockets has no port another host can reach: it is left out.
procslice_front_left_out(services) -> list[str]
    a note for each present service with an HTTP health check that the front leaves
    out because it listens only on unix sockets.
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


def procslice_front_left_out(services: Iterable[Mapping[str, Any]]) -> list[str]:
    notes = []
    for service in services:
        health = service.get("health") or {}
        if service.get("state", "present") != "present" or not health.get("http"):
            continue
        if service.get("unix_listen") and not service.get("ports"):
            notes.append(
                f"procslice_services[{service['name']}] listens only on unix sockets "
                f"({', '.join(service['unix_listen'])}), which the front host cannot reach: "
                "it is left out of the front; add an IP:port to its listen to put it in"
            )
    return notes


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
            "procslice_front_left_out": procslice_front_left_out,
        }
