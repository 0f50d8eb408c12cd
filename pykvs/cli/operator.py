"""``pykvs operator raft list-peers|remove-peer|transfer-leader``: the consul CLI's ``operator
raft`` commands, over the HTTP API (``consul operator raft``'s flags, messages and exit codes)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from pykvs.cli.command import CommandError, columns, command, group, positional
from pykvs.cli.flags import flag
from pykvs.cli.http_client import client_from
from pykvs.goformat import go_quote


def raft_list_peers(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    try:
        reply = client_from(ns).json("GET", "/v1/operator/raft/configuration", read=True)
    except CommandError as exc:
        raise CommandError(f"Error getting peers: Failed to retrieve raft configuration: "
                           f"{exc}") from None
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for server in reply["Servers"]:
        rows.append([server["Node"], server["ID"], server["Address"],
                     "leader" if server["Leader"] else "follower",
                     str(server["Voter"]).lower(), server.get("ProtocolVersion") or "<=1"])
    out.write(columns(rows) + "\n")
    return 0


def raft_remove_peer(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    if not ns.address and not ns.id:
        raise CommandError("Error removing peer: an address or id is required for the peer "
                           "to remove")
    if ns.address and ns.id:
        raise CommandError("Error removing peer: cannot give both an address and id")
    params = [("address", ns.address)] if ns.address else [("id", ns.id)]
    try:
        client_from(ns).request("DELETE", "/v1/operator/raft/peer", params)
    except CommandError as exc:
        raise CommandError(f"Error removing peer: {exc}") from None
    if ns.address:
        out.write(f"Removed peer with address {go_quote(ns.address)}\n")
    else:
        out.write(f"Removed peer with id {go_quote(ns.id)}\n")
    return 0


def raft_transfer_leader(ns: argparse.Namespace, out: TextIO) -> int:
    positional(ns, 0)
    params = [("id", ns.id)] if ns.id else []
    try:
        reply = client_from(ns).json("POST", "/v1/operator/raft/transfer-leader", params)
    except CommandError as exc:
        raise CommandError(f"Error transferring leadership: {exc}") from None
    if not reply or not reply.get("Success"):
        raise CommandError("Error transferring leadership: the server did not confirm it")
    out.write("Success! Leadership transferred\n")
    return 0


def _remove_peer_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "address", default="", help="IP:port of the server to remove")
    flag(p, "id", default="", help="ID of the server to remove")


def _transfer_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "id", default="", help="ID of the voter to hand leadership to (default: any)")


def register(subparsers: Any) -> None:
    """Add ``operator`` (``operator raft ...``) to the ``pykvs`` command's subparsers."""
    operator_sub = group(subparsers, "operator", "pykvs operator raft ...", go_flags=False)
    raft_sub = group(operator_sub, "raft", "list-peers|remove-peer|transfer-leader")
    command(raft_sub, "list-peers", raft_list_peers, "Display the current Raft peer "
            "configuration")
    command(raft_sub, "remove-peer", raft_remove_peer, "Remove a server from the Raft "
            "configuration", _remove_peer_flags)
    command(raft_sub, "transfer-leader", raft_transfer_leader, "Transfer Raft leadership to "
            "another server", _transfer_flags)
