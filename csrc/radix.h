/* radix.h -- a persistent, watchable radix tree over byte-string keys.
 *
 * See the comment at the top of radix.c for the node layout and the rules.
 * In short:
 *
 *   radix_node *t = radix_empty();            a version is its root node
 *   radix_txn *x = radix_txn_begin(t);        copy-on-write transaction
 *   radix_txn_insert(x, "k", 1, "v", 1, 7);
 *   radix_node *t2 = radix_txn_commit(x);     x->fired / x->nfired: fired watch ids
 *   radix_txn_free(x);
 *   const radix_leaf *l = radix_get(t2, "k", 1);   l->data holds l->vlen value bytes
 *   radix_release(t); radix_release(t2);
 *
 * Every function returning int reports -1 when an allocation failed; the tree
 * or transaction it worked on is then as it was before the call.
 *
 * Threads: reading a committed version, and radix_retain / radix_release, are
 * safe from any number of threads at once (reference counts are atomic, a
 * committed version never changes). One transaction must be used by one
 * thread at a time.
 */
#ifndef PYKVS_RADIX_H
#define PYKVS_RADIX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct radix_node radix_node; /* opaque: a version is its root node */

/* A stored entry. The value is the first vlen bytes of data; after it come the
 * tail of the key (see radix.c). Valid as long as a version holding it lives. */
typedef struct radix_leaf {
    atomic_uint refs;
    uint32_t vlen;
    uint64_t watch; /* watch id */
    uint64_t index; /* modify index */
    char data[];
} radix_leaf;

typedef struct radix_txn {
    radix_node *root;     /* the transaction's working version (readable) */
    uint64_t *fired;      /* after commit: ids of base nodes/leaves replaced */
    size_t nfired;
    size_t capfired;
    uint64_t first_watch; /* ids >= this were created by this transaction */
    int state;            /* 0 open, 1 committed */
} radix_txn;

/* A growable output buffer for listings; free data with radix_buf_free. */
typedef struct radix_buf {
    char *data;
    size_t len;
    size_t cap;
} radix_buf;

/* Listing formats for radix_scan. */
enum {
    RADIX_PACKED = 0,       /* u32 key_len, u32 value_len, u64 index, key, value (LE) */
    RADIX_PICKLE_ITEMS = 1, /* a pickle (protocol 3) of [(key, value, index), ...] */
    RADIX_PICKLE_KEYS = 2   /* a pickle (protocol 3) of [key, ...] */
};

/* Versions. */
radix_node *radix_empty(void); /* NULL when out of memory */
void radix_retain(radix_node *t);
void radix_release(radix_node *t);

/* Reads (on any version, or on a transaction's root). */
uint64_t radix_len(const radix_node *t);
const radix_leaf *radix_get(const radix_node *t, const char *key, size_t klen);
uint64_t radix_key_watch(const radix_node *t, const char *key, size_t klen);
uint64_t radix_prefix_watch(const radix_node *t, const char *prefix, size_t plen);
uint64_t radix_count(const radix_node *t, const char *prefix, size_t plen);
uint64_t radix_max_index(const radix_node *t, const char *prefix, size_t plen);

/* Ordered listing: entries whose key starts with prefix and is >= lower, at most
 * limit of them (0: no limit), appended to out in the given format. With
 * seplen > 0, a key with sep after the prefix is listed once, cut just after
 * the first sep (Consul's ?keys&separator=), and its subtree is skipped.
 * Returns the number of records, or -1 when out of memory. */
long radix_scan(const radix_node *t, const char *prefix, size_t plen, const char *lower,
                size_t llen, const char *sep, size_t seplen, size_t limit, int format,
                radix_buf *out);
void radix_buf_free(radix_buf *b);

/* Transactions. */
radix_txn *radix_txn_begin(radix_node *base); /* retains base; NULL when out of memory */
int radix_txn_insert(radix_txn *x, const char *key, size_t klen, const char *value,
                     size_t vlen, uint64_t index); /* 1 added, 0 replaced, -1, -2 bad size */
int radix_txn_delete(radix_txn *x, const char *key, size_t klen); /* 1 deleted, 0 absent */
/* Bulk load: inserts every record of a page in the packed listing layout (records
 * back to back, each u32 key_len, u32 value_len, u64 index, key, value; LE), in
 * page order (a later record of the same key replaces an earlier one). Returns the
 * number of records. A malformed page inserts nothing: -2 when a record header is
 * cut short, -3 when a record's body runs past the page, *bad_at = that record's
 * offset; -4 on a committed transaction. -1: out of memory at the record at
 * *bad_at, the records before it inserted (abort the transaction). */
int64_t radix_txn_insert_packed(radix_txn *x, const char *page, size_t len, size_t *bad_at);
int64_t radix_txn_delete_prefix(radix_txn *x, const char *prefix, size_t plen);
radix_node *radix_txn_commit(radix_txn *x); /* new version (caller owns a reference) */
void radix_txn_free(radix_txn *x);          /* aborts if not committed */

/* Memory accounting and tests. */
size_t radix_bytes_allocated(void); /* bytes requested and not yet freed */
size_t radix_blocks_allocated(void);
uint64_t radix_node_count(const radix_node *t); /* nodes in a version (walks it) */
void radix_fail_alloc_after(long n); /* the n-th next allocation fails; -1: never */
int radix_check(const radix_node *t); /* 0 when every invariant holds */

#ifdef Py_PYTHON_H /* in the cffi extension module only: see radix_py.h */
#include "radix_py.h"
#endif

#endif
