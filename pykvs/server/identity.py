"""Server identity on the server port: Consul's ``verify_server_hostname``, incoming side.

With ``TLSConfig.verify_server_hostname`` every connection to the server port presents a
client certificate signed by the CA (verify_incoming). Once per connection, when it is
accepted, the names in that certificate (its DNS subjectAltNames) decide what it may do:

- a certificate naming ``server.<this datacenter>.<domain>`` is a server of this cluster's
  datacenter: it may speak Raft (the transport's ``peer_check``) and call ``Internal.*``;
- any other certificate (``client.dc1.consul``, or ``server.dc2.consul``: a server of another
  datacenter, which forwards RPCs across datacenters but never joins this one) gets every other
  method, and its Raft hello is refused (the connection closed and logged) and its
  ``Internal.*`` calls answered with an error naming the name it lacked.

The fact is computed when the connection is accepted (one ``getpeercert`` and a scan of a few
names); the RPC connection then serves from a handler table chosen for it, so no request pays
a check. The outgoing side is pykvs.server.tls (``client_context(datacenter)``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pykvs.server.rpc import Handler, RPCError
from pykvs.server.tls import TLSConfig

log = logging.getLogger(__name__)

SERVER_ONLY_PREFIX = "Internal."


def certificate_names(peercert: Any) -> tuple[str, ...]:
    """The DNS names of a certificate as ``getpeercert()`` returns it (empty without one)."""
    if not isinstance(peercert, dict):
        return ()
    return tuple(str(value) for kind, value in peercert.get("subjectAltName", ())
                 if kind == "DNS")


def peer_names(writer: asyncio.StreamWriter) -> tuple[str, ...]:
    """The DNS names of the certificate the peer of ``writer`` presented."""
    return certificate_names(writer.get_extra_info("peercert"))


class ServerIdentity:
    """Who may speak Raft and call ``Internal.*`` on this server's port."""

    def __init__(self, tls: TLSConfig, datacenter: str) -> None:
        self.required = tls.server_name(datacenter)

    def refusal(self, writer: asyncio.StreamWriter) -> str:
        """"" when the peer's certificate names this datacenter's servers, else why not."""
        names = peer_names(writer)
        if self.required in names:
            return ""
        return (f"refused: the peer's certificate names {', '.join(names) or 'nothing'}, "
                f"not {self.required} (verify_server_hostname: only servers of this "
                f"datacenter speak Raft and call Internal.*)")

    def raft_check(self, writer: asyncio.StreamWriter) -> str:
        """The Raft transport's ``peer_check``: a refusal is logged there and the
        connection closed."""
        return self.refusal(writer)

    def handlers_for(
        self, handlers: Mapping[str, Handler]
    ) -> Callable[[asyncio.StreamWriter], Mapping[str, Handler]]:
        """The RPC server's ``handlers_for``: ``handlers`` for a server's connection, the same
        with ``Internal.*`` refusing for any other (both tables made once, here)."""
        client_handlers = dict(handlers)
        for name in handlers:
            if name.startswith(SERVER_ONLY_PREFIX):
                client_handlers[name] = self._refusing(name)

        def choose(writer: asyncio.StreamWriter) -> Mapping[str, Handler]:
            return client_handlers if self.refusal(writer) else handlers

        return choose

    def _refusing(self, method: str) -> Handler:
        required = self.required

        async def refuse(args: dict[str, Any]) -> Any:
            log.warning("rpc: refused %s from a peer without a server certificate (%s)",
                        method, required)
            raise RPCError(f"{method}: Permission denied: only a server whose certificate "
                           f"names {required} may call it (verify_server_hostname)")

        return refuse
