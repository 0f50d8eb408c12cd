"""pykvs.radix against a model: a dict per version, many versions alive at once.

A hypothesis state machine keeps a set of live versions, each with the dict it
should read as. A step runs a transaction of random writes on a random version
and commits (or aborts) it, then checks the new version, that every older one
still reads as it did, and the watch contract:

- soundness: every key or prefix whose answer changed fired the watch id its
  lookup returned on the base version;
- precision: the leaf id of an existing key the transaction did not write is
  never fired.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pykvs.radix import Tree

Model = dict[bytes, tuple[bytes, int]]

# Keys from a small alphabet (with the separator and NUL) collide, share prefixes
# and split and merge nodes often; a few long ones exercise long prefixes.
_short = st.lists(st.sampled_from(b"ab/\x00c"), max_size=6).map(bytes)
_long = _short.map(lambda tail: b"L" + b"x" * 300 + tail)
keys = st.one_of(_short, _short, _short, _long)
prefixes = st.lists(st.sampled_from(b"ab/\x00"), max_size=3).map(bytes)
values = st.one_of(st.binary(max_size=12), st.binary(min_size=250, max_size=300))
indexes = st.one_of(
    st.integers(0, 100), st.integers(2**31 - 2, 2**31 + 2), st.integers(2**63, 2**64 - 1)
)
ops = st.one_of(
    st.tuples(st.just("insert"), keys, values, indexes),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("delete_prefix"), prefixes),
)


def model_list_keys(model: Model, prefix: bytes, sep: bytes) -> list[bytes]:
    out: list[bytes] = []
    for key in sorted(k for k in model if k.startswith(prefix)):
        cut = key.find(sep, len(prefix)) if sep else -1
        item = key[: cut + len(sep)] if cut >= 0 else key
        if not out or out[-1] != item:
            out.append(item)
    return out


def under(model: Model, prefix: bytes) -> dict[bytes, tuple[bytes, int]]:
    return {k: v for k, v in model.items() if k.startswith(prefix)}


def wrote(key: bytes, keys: set[bytes], prefixes: list[bytes]) -> bool:
    return key in keys or any(key.startswith(p) for p in prefixes)


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.versions: list[tuple[Tree, Model]] = [(Tree(), {})]

    @rule(
        data=st.data(),
        writes=st.lists(ops, min_size=1, max_size=10),
        probe_keys=st.lists(keys, max_size=8),
        probe_prefixes=st.lists(prefixes, max_size=6),
        abort=st.booleans(),
    )
    def transaction(self, data, writes, probe_keys, probe_prefixes, abort) -> None:
        base, base_model = self.versions[data.draw(st.integers(0, len(self.versions) - 1))]
        model = dict(base_model)
        key_watch = {k: base.get_watch(k)[1] for k in set(probe_keys) | set(base_model)}
        prefix_watch = {p: base.prefix_watch(p) for p in set(probe_prefixes)}
        written_keys: set[bytes] = set()
        written_prefixes: list[bytes] = []
        txn = base.txn()
        for op in writes:
            if op[0] == "insert":
                _, key, value, index = op
                assert txn.insert(key, value, index) == (key not in model)
                model[key] = (value, index)
                written_keys.add(key)
            elif op[0] == "delete":
                assert txn.delete(op[1]) == (op[1] in model)
                model.pop(op[1], None)
                written_keys.add(op[1])
            else:
                gone = [k for k in model if k.startswith(op[1])]
                assert txn.delete_prefix(op[1]) == len(gone)
                for k in gone:
                    del model[k]
                written_prefixes.append(op[1])
            assert txn.get(op[1]) == (model[op[1]][0] if op[1] in model else None)
        assert len(txn) == len(model)
        if abort:
            txn.abort()
            return
        tree, fired = txn.commit()

        for key, watch in key_watch.items():
            if base_model.get(key) != model.get(key):
                assert watch in fired, f"changing {key!r} did not fire its watch"
            elif key in base_model and not wrote(key, written_keys, written_prefixes):
                assert watch not in fired, f"{key!r} was not written but its leaf fired"
        for prefix, watch in prefix_watch.items():
            if under(base_model, prefix) != under(model, prefix):
                assert watch in fired, f"a change under {prefix!r} did not fire"
        self.versions.append((tree, model))

    @precondition(lambda self: len(self.versions) > 1)
    @rule(data=st.data())
    def release_a_version(self, data) -> None:
        del self.versions[data.draw(st.integers(0, len(self.versions) - 1))]

    @rule(
        data=st.data(),
        prefix=prefixes,
        lower=keys,
        limit=st.integers(0, 4),
        sep=st.sampled_from([b"", b"/", b"a/", b"\x00"]),
    )
    def queries(self, data, prefix, lower, limit, sep) -> None:
        tree, model = self.versions[data.draw(st.integers(0, len(self.versions) - 1))]
        sub = under(model, prefix)
        listing = sorted((k, v, i) for k, (v, i) in sub.items())
        assert tree.list_prefix(prefix) == listing
        assert tree.count(prefix) == len(sub)
        assert tree.max_index(prefix) == max((i for _, i in sub.values()), default=0)
        assert tree.list_keys(prefix, sep) == model_list_keys(model, prefix, sep)
        after = [e for e in listing if e[0] >= lower]
        assert tree.seek(lower, limit, prefix) == (after[:limit] if limit else after)

    @invariant()
    def every_version_reads_as_its_model(self) -> None:
        for tree, model in self.versions:
            assert len(tree) == len(model)
            assert tree.list_prefix() == sorted((k, v, i) for k, (v, i) in model.items())
            for key, (value, index) in model.items():
                assert tree.get_with_index(key) == (value, index)


TreeMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=20, deadline=None)
test_tree_against_model = TreeMachine.TestCase
