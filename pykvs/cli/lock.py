"""``pykvs lock``: Consul's ``consul lock``: run a command while holding a lock (``-n 1``) or one
of N slots of a semaphore (``-n N``) under a KV prefix, as Consul's api package takes them.

The command creates a session (renewed every half TTL), takes the lock, runs the child (through
``/bin/sh -c`` unless ``-shell=false``), watches the lock, and when the child exits releases the
lock and destroys the session. If the lock is lost (its session invalidated, the key taken), the
child is terminated. A ``pykvs lock`` killed with SIGKILL leaves its session to expire (TTL x 2 on
the server), after which the lock is free again (after the session's lock-delay).

- ``-n 1``: the key ``PREFIX/.lock`` acquired with the session (flags ``0x2ddccbc058a50c18``).
- ``-n N``: a contender key ``PREFIX/<session>`` acquired with the session, and ``PREFIX/.lock``
  (flags ``0xe0f69a2baa414de0``) holding ``{"Limit": N, "Holders": {session: true}}``, updated
  with check-and-set; holders whose contender key lost its session are pruned.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from pykvs.cli.command import CommandError, positional, top_command
from pykvs.cli.flags import boolean, duration, flag
from pykvs.cli.http_client import HTTPClient, client_from

LOCK_FLAG = 0x2DDCCBC058A50C18  # Consul's api.LockFlagValue
SEMAPHORE_FLAG = 0xE0F69A2BAA414DE0  # Consul's api.SemaphoreFlagValue
LOCK_KEY = ".lock"
WAIT = "15s"  # each blocking query's wait (Consul's DefaultLockWaitTime)
RETRY_SECONDS = 1.0  # after an acquire refused by lock-delay


class LockLost(Exception):
    """The session or the lock is gone: stop the child."""


class Holder:
    """One session's hold on ``prefix``: ``acquire``, ``holds`` (watched), ``release``."""

    def __init__(self, client: HTTPClient, prefix: str, limit: int, session: str) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.limit = limit
        self.session = session
        self.lock_key = f"{self.prefix}/{LOCK_KEY}"

    # ------------------------------------------------------------------------ the lock
    def _read(self, path: str, params: list[tuple[str, str]], index: int) -> tuple[int, Any]:
        if index:
            params = [*params, ("index", str(index)), ("wait", WAIT)]
        status, headers, body = self.client.request("GET", f"/v1/kv/{path}", params)
        found = None if status == 404 else json.loads(body)
        return int(headers.get("X-Consul-Index", "0") or 0), found

    def _put(self, path: str, params: list[tuple[str, str]], body: bytes = b"") -> bool:
        return bool(self.client.json("PUT", f"/v1/kv/{path}", params, body))

    def acquire(self, deadline: float) -> None:
        if self.limit == 1:
            self._acquire_lock(deadline)
        else:
            self._put(f"{self.prefix}/{self.session}",
                      [("acquire", self.session), ("flags", str(SEMAPHORE_FLAG))])
            self._acquire_slot(deadline)

    def _acquire_lock(self, deadline: float) -> None:
        index = 0
        while time.monotonic() < deadline:
            index, found = self._read(self.lock_key, [], index)
            entry = found[0] if found else None
            if entry is not None and entry["Flags"] != LOCK_FLAG:
                raise CommandError(f"Existing key {self.lock_key!r} does not match lock use")
            if entry is not None and entry.get("Session"):
                continue  # held: wait for it to change
            if self._put(self.lock_key, [("acquire", self.session), ("flags", str(LOCK_FLAG))]):
                return
            time.sleep(RETRY_SECONDS)  # the key's lock-delay after a lost session
        raise CommandError("Lock acquisition timed out")

    def _semaphore(self, index: int) -> tuple[int, dict[str, Any] | None, set[str]]:
        """``(index, the lock entry, sessions whose contender key is held)``."""
        index, found = self._read(f"{self.prefix}/", [("recurse", "")], index)
        lock, live = None, set()
        for entry in found or []:
            name = entry["Key"][len(self.prefix) + 1:]
            if name == LOCK_KEY:
                lock = entry
            elif entry.get("Session") == name:
                live.add(name)
        return index, lock, live

    def _holders(self, lock: dict[str, Any] | None) -> dict[str, bool]:
        if lock is None:
            return {}
        if lock["Flags"] != SEMAPHORE_FLAG:
            raise CommandError(f"Existing key {self.lock_key!r} does not match semaphore use")
        content = json.loads(base64.b64decode(lock["Value"] or ""))
        if content.get("Limit") != self.limit:
            raise CommandError(f"Semaphore limit conflict (lock: {content.get('Limit')}, "
                               f"local: {self.limit})")
        return dict(content.get("Holders") or {})

    def _acquire_slot(self, deadline: float) -> None:
        index = 0
        while time.monotonic() < deadline:
            index, lock, live = self._semaphore(index)
            holders = {s: True for s in self._holders(lock) if s in live}
            if len(holders) >= self.limit:
                continue
            holders[self.session] = True
            body = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
            cas = str(lock["ModifyIndex"]) if lock is not None else "0"
            if self._put(self.lock_key, [("cas", cas), ("flags", str(SEMAPHORE_FLAG))], body):
                return
            index = 0  # another contender changed it: read again at once
        raise CommandError("Semaphore acquisition timed out")

    def holds(self, index: int) -> tuple[int, bool]:
        """Whether this session still holds its lock or slot, after the state at ``index``
        changes (a blocking query)."""
        if self.limit == 1:
            index, found = self._read(self.lock_key, [], index)
            return index, bool(found) and found[0].get("Session") == self.session
        index, lock, live = self._semaphore(index)
        return index, self.session in live and self.session in self._holders(lock)

    def release(self) -> None:
        """Give the lock or slot back, then remove the lock key if nobody uses it (Consul's
        Unlock, then Destroy)."""
        if self.limit == 1:
            self._put(self.lock_key, [("release", self.session), ("flags", str(LOCK_FLAG))])
            _, found = self._read(self.lock_key, [], 0)
            if found and not found[0].get("Session"):
                self._delete_unused(found[0]["ModifyIndex"])
            return
        for _ in range(10):  # check-and-set against other contenders
            _, lock, _ = self._semaphore(0)
            holders = self._holders(lock)
            if lock is None or self.session not in holders:
                break
            del holders[self.session]
            body = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
            if self._put(self.lock_key, [("cas", str(lock["ModifyIndex"])),
                                         ("flags", str(SEMAPHORE_FLAG))], body):
                break
        self.client.request("DELETE", f"/v1/kv/{self.prefix}/{self.session}")
        _, lock, _ = self._semaphore(0)
        if lock is not None and not self._holders(lock):
            self._delete_unused(lock["ModifyIndex"])

    def _delete_unused(self, modify_index: int) -> None:
        """Delete the lock key as it was at ``modify_index`` (not if someone took it since)."""
        self.client.request("DELETE", f"/v1/kv/{self.lock_key}", [("cas", str(modify_index))])


class _Session:
    """The lock's session, renewed every half TTL from a thread; ``lost`` is set when a
    renewal finds it gone (or the agent unreachable past the TTL)."""

    def __init__(self, client: HTTPClient, name: str, ttl: float, lock_delay: float) -> None:
        body = json.dumps({"Name": name, "TTL": f"{ttl:g}s", "Behavior": "release",
                           "LockDelay": f"{lock_delay:g}s"}).encode()
        self.client = client
        self.ttl = ttl
        self.id = str(client.json("PUT", "/v1/session/create", body=body)["ID"])
        self.lost = threading.Event()
        self.closed = threading.Event()
        self.renewer = threading.Thread(target=self._renew, name="session renew", daemon=True)
        self.renewer.start()

    def _renew(self) -> None:
        last_renewed = time.monotonic()
        while not self.closed.wait(self.ttl / 2):
            try:
                status, _, _ = self.client.request("PUT", f"/v1/session/renew/{self.id}",
                                                   answers=(404,))
            except CommandError:
                if time.monotonic() - last_renewed > self.ttl:
                    self.lost.set()
                    return
                continue
            if status == 404:
                self.lost.set()
                return
            last_renewed = time.monotonic()

    def destroy(self) -> None:
        self.closed.set()
        self.client.request("PUT", f"/v1/session/destroy/{self.id}")


def _monitor(holder: Holder, session: _Session, lost: threading.Event) -> None:
    """Set ``lost`` once the lock is no longer this session's (a thread)."""
    index = 0
    while not session.closed.is_set() and not lost.is_set():
        try:
            index, held = holder.holds(index)
        except CommandError:
            held = True  # the agent is unreachable: the session's TTL decides
            time.sleep(1.0)
        if not held or session.lost.is_set():
            lost.set()


def _run_child(ns: argparse.Namespace, child: list[str], lost: threading.Event,
               err: TextIO) -> int:
    """Run the child until it exits; terminate it if the lock is lost or we are signalled."""
    argv = ["/bin/sh", "-c", " ".join(child)] if ns.shell else child
    stdin = None if ns.pass_stdin else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdin=stdin)
    except OSError as exc:
        raise CommandError(f"Error starting handler: {exc}") from None
    stop = threading.Event()

    def forward(signum: int, frame: Any) -> None:
        stop.set()
        proc.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    while proc.poll() is None:
        if lost.wait(0.1) and not stop.is_set():
            print("Lock lost, killing child", file=err, flush=True)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            stop.set()
    return proc.wait()


def lock(ns: argparse.Namespace, out: TextIO) -> int:
    args = positional(ns, 1 << 16)
    if len(args) < 2:
        raise CommandError("Key prefix and child command must be specified")
    prefix, child = args[0], args[1:]
    if ns.n < 1:
        raise CommandError("Command limit (-n) must be at least 1")
    client = client_from(ns)
    session = _Session(client, ns.name or f"Consul lock for {child[0]} at {prefix}",
                       ns.session_ttl, ns.lock_delay)
    holder = Holder(client, prefix, ns.n, session.id)
    try:
        deadline = time.monotonic() + (ns.timeout or float("inf"))
        holder.acquire(deadline)
        lost = threading.Event()
        threading.Thread(target=_monitor, args=(holder, session, lost), name="lock monitor",
                         daemon=True).start()
        code = _run_child(ns, child, lost, sys.stderr)
        if not lost.is_set():
            holder.release()
    finally:
        session.destroy()
    return 2 if ns.child_exit_code and code != 0 else 0


def _lock_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "n", type=int, default=1, help="how many may hold the lock at once (a semaphore)")
    flag(p, "name", default="", help="the session's name")
    flag(p, "child-exit-code", action="store_true",
         help="exit 2 when the child exits with an error (default: 0)")
    flag(p, "shell", type=boolean, default=True,
         metavar="BOOL", help="run the child through /bin/sh -c (default true)")
    flag(p, "pass-stdin", action="store_true", help="give the child this command's stdin")
    flag(p, "timeout", type=duration, default=0.0, metavar="DURATION",
         help="give up acquiring after this long (default: wait forever)")
    flag(p, "session-ttl", type=duration, default=15.0, metavar="DURATION",
         help="the session's TTL (default 15s; pykvs's, beyond consul lock)")
    flag(p, "lock-delay", type=duration, default=15.0, metavar="DURATION",
         help="the session's lock-delay (default 15s; pykvs's, beyond consul lock)")


def register(subparsers: Any) -> None:
    """Add ``lock`` to the ``pykvs`` command."""
    top_command(subparsers, "lock", lock,
                "Run a command holding a lock (or one of -n slots) under a KV prefix",
                _lock_flags)
