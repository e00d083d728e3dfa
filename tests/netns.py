"""Separate network namespaces for ``scripts/cluster``: each vmimport process alone in one, as
on a machine of its own, linked by a veth pair to a private bridge in this namespace, where
PostgreSQL and SeaweedFS listen on the bridge's address (the "storage machine"). A process can
then reach the others only by the addresses it is given: nothing it finds on 127.0.0.1 is
another's. Needs root (CAP_NET_ADMIN) and ``ip``; ``Network.create`` returns None where the
machine does not allow it, and the cluster then runs on loopback.

Names carry a random id, so that clusters side by side do not meet; ``destroy`` removes the
namespaces (their veth ends go with them) and the bridge.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no interface here has an address in."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for _ in range(100):
        third = secrets.randbelow(256)
        if f" 10.213.{third}." not in used:
            return ipaddress.ip_network(f"10.213.{third}.0/24")
    raise RuntimeError("no free 10.213.x.0/24 for the cluster's bridge")


@dataclass
class Network:
    id: str
    subnet: str
    namespaces: dict[str, str] = field(default_factory=dict)  # process name -> its address

    @property
    def bridge(self) -> str:
        return f"vmib{self.id}"

    @property
    def gateway(self) -> str:
        """The bridge's address: where this namespace's servers listen for the others."""
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    def namespace(self, name: str) -> str:
        return f"vmi{self.id}-{name}"

    @classmethod
    def create(cls) -> "Network | None":
        """A bridge with an address in a free /24, or None if the machine does not allow it."""
        if shutil.which("ip") is None:
            return None
        net = cls(secrets.token_hex(3), str(_free_subnet()))
        try:
            _ip("link", "add", net.bridge, "type", "bridge")
            _ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
            _ip("link", "set", net.bridge, "up")
        except (subprocess.CalledProcessError, OSError):
            net.destroy()
            return None
        return net

    def add(self, name: str) -> str:
        """A namespace for process ``name``, linked to the bridge; its address."""
        address = str(ipaddress.ip_network(self.subnet).network_address
                      + 2 + len(self.namespaces))
        ns, host_end = self.namespace(name), f"vh{self.id}{len(self.namespaces)}"
        _ip("netns", "add", ns)
        self.namespaces[name] = address
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", host_end, "master", self.bridge, "up")
        for args in (["addr", "add", f"{address}/24", "dev", "eth0"],
                     ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"],
                     ["route", "add", "default", "via", self.gateway]):
            _ip("-n", ns, *args)
        return address

    def prefix(self, name: str) -> list[str]:
        """The words that run a command inside ``name``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def destroy(self) -> None:
        for name in list(self.namespaces):
            _ip("netns", "del", self.namespace(name), check=False)
        _ip("link", "del", self.bridge, check=False)

    def to_json(self) -> dict:
        return {"id": self.id, "subnet": self.subnet, "namespaces": self.namespaces}

    @classmethod
    def from_json(cls, data: dict) -> "Network":
        return cls(data["id"], data["subnet"], dict(data["namespaces"]))
