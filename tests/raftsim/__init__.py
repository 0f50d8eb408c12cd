"""A deterministic Raft simulator and a linearizability checker, for tests only.

- ``linearizability``: a Wing & Gong / Porcupine-style checker for histories of a key/value
  register (get, put, delete, cas), partitioned by key.
- ``network``: a seeded simulated network (drops, duplicates, delays, reordering, partitions).
- ``cluster``: N Raft cores on that network, each with an in-memory store and a tiny KV state
  machine; crashes, restarts, snapshots, simulated clients and the Raft safety invariants.
"""
