"""pykvs: a durable, Raft-replicated key/value store modelled on Consul's KV store."""

__version__ = "0.1.0"
