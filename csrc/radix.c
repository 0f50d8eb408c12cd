/* radix.c -- a persistent, watchable radix tree over byte-string keys.
 *
 * A version of the tree is its root node. Versions are immutable once
 * committed and share every node they have in common; nodes and leaves carry
 * reference counts, and releasing a version frees what no other version uses.
 * A transaction copies the nodes on the paths it changes (path copying); a
 * node it created itself is changed in place.
 *
 * Node layout (one allocation):
 *
 *   +------+------+---+-----+-------+-----------+-------+------+
 *   | refs | plen | n | cap | watch | max_index | count | leaf |   48 bytes
 *   +------+------+---+-----+-------+-----------+-------+------+
 *   | keys[cap]:  the byte leading to each child, sorted          |   cap
 *   | prefix[plen]: the compressed path below the parent's byte   |   plen
 *   | (padding to 8 bytes)                                        |
 *   | kids[cap]: pointers, a leaf tagged with the low bit         |   8 * cap
 *   +------------------------------------------------------------+
 *
 * A lookup reads the header, the prefix and the key bytes (together, in the
 * first cache line or two), then one child pointer.
 *
 * The key of everything under a node starts with the node's path: the
 * parents' paths, each followed by the byte leading down, then this node's
 * prefix. `leaf` is the entry whose key is exactly the node's path. The root
 * node always has an empty prefix and is never replaced by a leaf.
 *
 * Leaf layout (one allocation):
 *
 *   +------+------+-------+-------+-------------+-------------+----------+
 *   | refs | vlen | watch | index | value[vlen] | varint slen | suffix   |
 *   +------+------+-------+-------+-------------+-------------+----------+
 *
 * A leaf hanging from a node's child array stores the rest of its key after
 * the child's byte (the suffix); the key is never stored whole, which is
 * where the tree beats a hash table on memory. A node's own leaf has an empty
 * suffix. When a split or a merge moves a leaf to another depth, the leaf is
 * copied with a new suffix but keeps its watch id: it is the same entry.
 *
 * Watch ids. Every node and leaf gets an id from one global counter. A
 * transaction remembers the counter when it began (first_watch): a node with
 * an id >= first_watch was created by the transaction, belongs to it alone
 * and may be changed in place. Each base node the transaction copies or
 * drops, and each base leaf it replaces or removes, has its id recorded in
 * `fired`. Room for those ids is reserved before an operation changes
 * anything, so an operation either happens or fails with -1 (out of memory)
 * leaving the transaction's content as it was (some nodes may have been
 * copied already, which is harmless).
 *
 * Each node keeps its subtree's entry count and largest modify index.
 *
 * Children are a sorted array of (byte, pointer), grown 1.5x when a
 * transaction adds to a node it owns, exact when it copies a base node. Up to
 * 256 children: lookups use memchr over the key bytes.
 */
#include "radix.h"
#include "pickle_writer.h"
#include "byteorder.h"

#include <stdlib.h>
#include <string.h>

typedef unsigned char uchar;

struct radix_node {
    atomic_uint refs;
    uint32_t plen;
    uint16_t n;
    uint16_t cap;
    uint64_t watch;
    uint64_t max_index;
    uint64_t count;
    radix_leaf *leaf;
    uchar tail[]; /* keys[cap], prefix[plen], padding, kids[cap] */
};

#define IS_LEAF(p) (((uintptr_t)(p)) & 1u)
#define AS_LEAF(p) ((radix_leaf *)(((uintptr_t)(p)) & ~(uintptr_t)1))
#define TAG_LEAF(l) ((radix_node *)(((uintptr_t)(l)) | 1u))

/* ------------------------------------------------------------------------ */
/* Allocation, with exact accounting and a failure hook for tests.          */

static atomic_size_t g_bytes;
static atomic_size_t g_blocks;
static atomic_long g_fail_after = -1;
static atomic_uint_fast64_t g_next_watch = 1;

static void *rmalloc(size_t size)
{
    if (atomic_load_explicit(&g_fail_after, memory_order_relaxed) >= 0 &&
        atomic_fetch_sub(&g_fail_after, 1) == 0)
        return NULL;
    void *p = malloc(size);
    if (p) {
        atomic_fetch_add_explicit(&g_bytes, size, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_blocks, 1, memory_order_relaxed);
    }
    return p;
}

static void rfree(void *p, size_t size)
{
    if (!p)
        return;
    atomic_fetch_sub_explicit(&g_bytes, size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&g_blocks, 1, memory_order_relaxed);
    free(p);
}

static void *rrealloc(void *p, size_t old, size_t size)
{
    if (atomic_load_explicit(&g_fail_after, memory_order_relaxed) >= 0 &&
        atomic_fetch_sub(&g_fail_after, 1) == 0)
        return NULL;
    void *q = realloc(p, size);
    if (q) {
        atomic_fetch_add_explicit(&g_bytes, size, memory_order_relaxed);
        atomic_fetch_sub_explicit(&g_bytes, old, memory_order_relaxed);
        if (!p)
            atomic_fetch_add_explicit(&g_blocks, 1, memory_order_relaxed);
    }
    return q;
}

size_t radix_bytes_allocated(void) { return atomic_load(&g_bytes); }
size_t radix_blocks_allocated(void) { return atomic_load(&g_blocks); }
void radix_fail_alloc_after(long n) { atomic_store(&g_fail_after, n); }

static uint64_t next_watch(void) { return atomic_fetch_add(&g_next_watch, 1); }

static void copy(void *dst, const void *src, size_t n)
{
    if (n)
        memcpy(dst, src, n);
}

static int same(const void *a, const void *b, size_t n) { return n == 0 || memcmp(a, b, n) == 0; }

/* Three-way compare of a[0:n] and b[0:n]. */
static int cmp(const void *a, const void *b, size_t n) { return n ? memcmp(a, b, n) : 0; }

/* ------------------------------------------------------------------------ */
/* Leaves.                                                                  */

static size_t varint_len(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static const uchar *leaf_suffix(const radix_leaf *l, size_t *slen)
{
    const uchar *p = (const uchar *)l->data + l->vlen;
    size_t v = 0;
    unsigned shift = 0;
    uchar b;
    do {
        b = *p++;
        v |= (size_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    *slen = v;
    return p;
}

static size_t leaf_size(const radix_leaf *l)
{
    size_t slen;
    const uchar *s = leaf_suffix(l, &slen);
    return (size_t)(s - (const uchar *)l) + slen;
}

/* A suffix given in up to three parts: a[0:an], then byte mid if mid >= 0, then b[0:bn]. */
typedef struct {
    const uchar *a;
    size_t an;
    int mid;
    const uchar *b;
    size_t bn;
} parts;

static parts one_part(const uchar *a, size_t an) { return (parts){a, an, -1, NULL, 0}; }

static radix_leaf *leaf_new(const void *value, uint32_t vlen, uint64_t index, uint64_t watch,
                            parts s)
{
    size_t slen = s.an + (s.mid >= 0) + s.bn;
    size_t size = sizeof(radix_leaf) + vlen + varint_len(slen) + slen;
    radix_leaf *l = rmalloc(size);
    if (!l)
        return NULL;
    atomic_init(&l->refs, 1);
    l->vlen = vlen;
    l->watch = watch;
    l->index = index;
    copy(l->data, value, vlen);
    uchar *p = (uchar *)l->data + vlen;
    size_t v = slen;
    while (v >= 0x80) {
        *p++ = (uchar)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uchar)v;
    copy(p, s.a, s.an);
    p += s.an;
    if (s.mid >= 0)
        *p++ = (uchar)s.mid;
    copy(p, s.b, s.bn);
    return l;
}

/* The same entry (value, index, watch id) with another suffix. */
static radix_leaf *leaf_moved(const radix_leaf *l, parts s)
{
    return leaf_new(l->data, l->vlen, l->index, l->watch, s);
}

static void leaf_decref(radix_leaf *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        rfree(l, leaf_size(l));
}

static void leaf_incref(radix_leaf *l) { atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed); }

/* ------------------------------------------------------------------------ */
/* Nodes.                                                                   */

static size_t round8(size_t n) { return (n + 7) & ~(size_t)7; }
static uchar *node_keys(const radix_node *n) { return (uchar *)n->tail; }
static uchar *node_prefix(const radix_node *n) { return (uchar *)n->tail + n->cap; }

/* The child pointers, after the key bytes and the prefix. */
#define KIDS(n) ((radix_node **)((n)->tail + round8((size_t)(n)->cap + (n)->plen)))

static size_t node_bytes(unsigned cap, size_t plen)
{
    return sizeof(radix_node) + round8(cap + plen) + cap * sizeof(radix_node *);
}

static size_t node_size(const radix_node *n) { return node_bytes(n->cap, n->plen); }

static radix_node *node_alloc(unsigned cap, size_t plen)
{
    if (plen > UINT32_MAX)
        return NULL;
    radix_node *n = rmalloc(node_bytes(cap, plen));
    if (!n)
        return NULL;
    atomic_init(&n->refs, 1);
    n->plen = (uint32_t)plen;
    n->n = 0;
    n->cap = (uint16_t)cap;
    n->watch = next_watch();
    n->max_index = 0;
    n->count = 0;
    n->leaf = NULL;
    return n;
}

static int node_find(const radix_node *n, uchar b)
{
    const uchar *k = node_keys(n);
    const uchar *p = n->n ? memchr(k, b, n->n) : NULL;
    return p ? (int)(p - k) : -1;
}

static unsigned node_lower_bound(const radix_node *n, uchar b)
{
    const uchar *k = node_keys(n);
    unsigned lo = 0, hi = n->n;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (k[mid] < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void child_incref(radix_node *c);
static void node_decref(radix_node *n);

static void child_decref(radix_node *c)
{
    if (IS_LEAF(c))
        leaf_decref(AS_LEAF(c));
    else
        node_decref(c);
}

static void node_decref(radix_node *n)
{
    if (atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < n->n; i++)
        child_decref(KIDS(n)[i]);
    if (n->leaf)
        leaf_decref(n->leaf);
    rfree(n, node_size(n));
}

static void child_incref(radix_node *c)
{
    if (IS_LEAF(c))
        leaf_incref(AS_LEAF(c));
    else
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static uint64_t child_max(const radix_node *c)
{
    return IS_LEAF(c) ? AS_LEAF(c)->index : c->max_index;
}

static uint64_t child_count(const radix_node *c) { return IS_LEAF(c) ? 1 : c->count; }

static void node_fix_max(radix_node *n)
{
    uint64_t m = n->leaf ? n->leaf->index : 0;
    for (unsigned i = 0; i < n->n; i++) {
        uint64_t c = child_max(KIDS(n)[i]);
        if (c > m)
            m = c;
    }
    n->max_index = m;
}

/* A new node with n's children and leaf (references taken), the given prefix
 * and room for cap children; a fresh watch id. */
static radix_node *node_clone(const radix_node *n, unsigned cap, parts prefix)
{
    size_t plen = prefix.an + (prefix.mid >= 0) + prefix.bn;
    radix_node *m = node_alloc(cap, plen);
    if (!m)
        return NULL;
    m->n = n->n;
    m->max_index = n->max_index;
    m->count = n->count;
    m->leaf = n->leaf;
    if (m->leaf)
        leaf_incref(m->leaf);
    for (unsigned i = 0; i < n->n; i++) {
        KIDS(m)[i] = KIDS(n)[i];
        child_incref(KIDS(m)[i]);
    }
    copy(node_keys(m), node_keys(n), n->n);
    uchar *p = node_prefix(m);
    copy(p, prefix.a, prefix.an);
    p += prefix.an;
    if (prefix.mid >= 0)
        *p++ = (uchar)prefix.mid;
    copy(p, prefix.b, prefix.bn);
    return m;
}

static void node_insert_child(radix_node *n, unsigned at, uchar b, radix_node *c)
{
    uchar *k = node_keys(n);
    memmove(KIDS(n) + at + 1, KIDS(n) + at, (n->n - at) * sizeof(radix_node *));
    memmove(k + at + 1, k + at, n->n - at);
    KIDS(n)[at] = c;
    k[at] = b;
    n->n++;
}

static void node_remove_child(radix_node *n, unsigned at)
{
    uchar *k = node_keys(n);
    memmove(KIDS(n) + at, KIDS(n) + at + 1, (n->n - at - 1) * sizeof(radix_node *));
    memmove(k + at, k + at + 1, n->n - at - 1);
    n->n--;
}

radix_node *radix_empty(void) { return node_alloc(0, 0); }

void radix_retain(radix_node *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void radix_release(radix_node *t)
{
    if (t)
        node_decref(t);
}

uint64_t radix_len(const radix_node *t) { return t->count; }

/* ------------------------------------------------------------------------ */
/* Reads.                                                                   */

/* The node, or tagged leaf, whose subtree holds exactly the keys starting
 * with p; NULL when no key does. *deepest: the last node visited. */
static radix_node *locate(const radix_node *t, const uchar *p, size_t plen,
                          const radix_node **deepest)
{
    const radix_node *n = t;
    size_t depth = 0;
    for (;;) {
        *deepest = n;
        size_t rem = plen - depth;
        size_t m = rem < n->plen ? rem : n->plen;
        if (!same(node_prefix(n), p + depth, m))
            return NULL;
        if (rem <= n->plen)
            return (radix_node *)n;
        size_t d = depth + n->plen;
        int i = node_find(n, p[d]);
        if (i < 0)
            return NULL;
        radix_node *c = KIDS(n)[i];
        if (IS_LEAF(c)) {
            size_t slen;
            const uchar *s = leaf_suffix(AS_LEAF(c), &slen);
            size_t r2 = plen - d - 1;
            return slen >= r2 && same(s, p + d + 1, r2) ? c : NULL;
        }
        n = c;
        depth = d + 1;
    }
}

/* The leaf holding key, or NULL; *deepest: the last node visited. */
static radix_leaf *lookup(const radix_node *t, const uchar *key, size_t klen,
                          const radix_node **deepest)
{
    const radix_node *n = t;
    size_t depth = 0;
    for (;;) {
        *deepest = n;
        size_t rem = klen - depth;
        if (rem < n->plen || !same(node_prefix(n), key + depth, n->plen))
            return NULL;
        size_t d = depth + n->plen;
        if (d == klen)
            return n->leaf;
        int i = node_find(n, key[d]);
        if (i < 0)
            return NULL;
        radix_node *c = KIDS(n)[i];
        if (IS_LEAF(c)) {
            size_t slen;
            const uchar *s = leaf_suffix(AS_LEAF(c), &slen);
            return slen == klen - d - 1 && same(s, key + d + 1, slen) ? AS_LEAF(c) : NULL;
        }
        n = c;
        depth = d + 1;
    }
}

const radix_leaf *radix_get(const radix_node *t, const char *key, size_t klen)
{
    const radix_node *deepest;
    return lookup(t, (const uchar *)key, klen, &deepest);
}

uint64_t radix_key_watch(const radix_node *t, const char *key, size_t klen)
{
    const radix_node *deepest;
    const radix_leaf *l = lookup(t, (const uchar *)key, klen, &deepest);
    return l ? l->watch : deepest->watch;
}

uint64_t radix_prefix_watch(const radix_node *t, const char *prefix, size_t plen)
{
    const radix_node *deepest;
    radix_node *c = locate(t, (const uchar *)prefix, plen, &deepest);
    return c && !IS_LEAF(c) ? c->watch : deepest->watch;
}

uint64_t radix_count(const radix_node *t, const char *prefix, size_t plen)
{
    const radix_node *deepest;
    radix_node *c = locate(t, (const uchar *)prefix, plen, &deepest);
    return c ? child_count(c) : 0;
}

uint64_t radix_max_index(const radix_node *t, const char *prefix, size_t plen)
{
    const radix_node *deepest;
    radix_node *c = locate(t, (const uchar *)prefix, plen, &deepest);
    return c ? child_max(c) : 0;
}

/* ------------------------------------------------------------------------ */
/* Listings.                                                                */

void radix_buf_free(radix_buf *b)
{
    rfree(b->data, b->cap);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_reserve(radix_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    char *d = rrealloc(b->data, b->cap, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static char *buf_end(const radix_buf *b) { return b->data + b->len; }

static void buf_set_end(radix_buf *b, const char *end) { b->len = (size_t)(end - b->data); }

/* The record writers (put, put_parts, put_record) write at p, where room was made, and
 * return the end of what they wrote, as the pickle writer and byteorder.h do. */

static char *put(char *p, const void *src, size_t n)
{
    copy(p, src, n);
    return p + n;
}

enum {
    PACKED_HEADER = 16, /* u32 key_len, u32 value_len, u64 index */
    RECORD_ROOM = 32    /* the most a listed record takes beyond its key and value bytes */
};
_Static_assert(PACKED_HEADER <= RECORD_ROOM, "a packed record's header fits");
_Static_assert(2 * PW_BYTES_HEAD_ROOM + PW_UINT_ROOM + PW_TUPLE3_ROOM <= RECORD_ROOM,
               "a pickled (key, value, index) tuple's opcodes fit");

typedef struct {
    radix_buf *out;
    const uchar *prefix, *lower, *sep;
    size_t plen, llen, seplen, limit;
    long emitted;
    int format;
    int stop; /* 1: done, -1: out of memory */
    uchar *path;
    size_t len, cap;
} scan_t;

static int path_append(scan_t *s, const uchar *p, size_t n)
{
    if (s->cap - s->len < n) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap - s->len < n)
            cap *= 2;
        uchar *q = rrealloc(s->path, s->cap, cap);
        if (!q) {
            s->stop = -1;
            return -1;
        }
        s->path = q;
        s->cap = cap;
    }
    copy(s->path + s->len, p, n);
    s->len += n;
    return 0;
}

static size_t parts_len(parts k) { return k.an + (k.mid >= 0) + k.bn; }

static char *put_parts(char *p, parts k)
{
    p = put(p, k.a, k.an);
    if (k.mid >= 0)
        *p++ = (char)k.mid;
    return put(p, k.b, k.bn);
}

/* One record in the listing's format: the key in parts, and the entry (NULL for a folder). */
static char *put_record(char *p, int format, parts key, const radix_leaf *l)
{
    size_t klen = parts_len(key);
    uint32_t vlen = l ? l->vlen : 0;
    const char *value = l ? l->data : NULL;
    uint64_t index = l ? l->index : 0;
    switch (format) {
    case RADIX_PACKED:
        p = store_le64(store_le32(store_le32(p, (uint32_t)klen), vlen), index);
        return put(put_parts(p, key), value, vlen);
    case RADIX_PICKLE_ITEMS:
        p = put_parts(pw_begin_bytes(p, klen), key);
        p = pw_append_bytes(p, value, vlen);
        return pw_build_tuple3(pw_append_uint(p, index));
    default: /* RADIX_PICKLE_KEYS */
        return put_parts(pw_begin_bytes(p, klen), key);
    }
}

/* Appends one record, and stops the scan at the limit or when out of memory. */
static void emit(scan_t *s, parts key, const radix_leaf *l)
{
    radix_buf *b = s->out;
    if (buf_reserve(b, RECORD_ROOM + parts_len(key) + (l ? l->vlen : 0)) < 0) {
        s->stop = -1;
        return;
    }
    buf_set_end(b, put_record(buf_end(b), s->format, key, l));
    s->emitted++;
    if (s->limit && (size_t)s->emitted >= s->limit)
        s->stop = 1;
}

enum { VISIT = 0, SKIP = 1 };

/* Called once the path has grown from old bytes to s->len: checks the prefix,
 * the lower bound (while *seeking, the path is a prefix of lower) and the
 * separator. Returns SKIP when nothing below the path is listed. */
static int check_path(scan_t *s, size_t old, int *seeking)
{
    if (old < s->plen) { /* past the prefix, the parent's check covers it */
        size_t m = s->len < s->plen ? s->len : s->plen;
        int c = cmp(s->path, s->prefix, m);
        if (c != 0) {
            if (c > 0)
                s->stop = 1;
            return SKIP;
        }
    }
    if (*seeking) {
        size_t m = s->len < s->llen ? s->len : s->llen;
        int c = cmp(s->path, s->lower, m);
        if (c < 0)
            return SKIP;
        if (c > 0 || s->len > s->llen)
            *seeking = 0;
    }
    if (s->seplen && s->len >= s->plen + s->seplen) {
        size_t from = old + 1 >= s->seplen ? old + 1 - s->seplen : 0;
        if (from < s->plen)
            from = s->plen;
        for (size_t i = from; i + s->seplen <= s->len; i++) {
            if (s->path[i] == s->sep[0] && same(s->path + i, s->sep, s->seplen)) {
                if (!*seeking || i + s->seplen >= s->llen)
                    emit(s, one_part(s->path, i + s->seplen), NULL);
                return SKIP;
            }
        }
    }
    return VISIT;
}

static void emit_leaf(scan_t *s, const radix_leaf *l, int seeking)
{
    if (s->len < s->plen || (seeking && s->len < s->llen))
        return;
    emit(s, one_part(s->path, s->len), l);
}

static void scan_node(scan_t *s, const radix_node *n, size_t old, int seeking)
{
    if (path_append(s, node_prefix(n), n->plen) < 0)
        return;
    if (check_path(s, old, &seeking) == SKIP || s->stop)
        return;
    size_t here = s->len;
    if (n->leaf)
        emit_leaf(s, n->leaf, seeking);
    const uchar *keys = node_keys(n);
    unsigned i = 0;
    if (seeking && here < s->llen)
        i = node_lower_bound(n, s->lower[here]);
    for (; i < n->n && !s->stop; i++) {
        s->len = here;
        int child_seeking = seeking && here < s->llen && keys[i] == s->lower[here];
        radix_node *c = KIDS(n)[i];
        if (!IS_LEAF(c)) {
            if (path_append(s, &keys[i], 1) == 0)
                scan_node(s, c, here, child_seeking);
            continue;
        }
        size_t slen;
        const uchar *suffix = leaf_suffix(AS_LEAF(c), &slen);
        if (!child_seeking && here >= s->plen && !s->seplen) {
            /* Inside the prefix, no bound, no folding: list it straight away. */
            emit(s, (parts){s->path, here, keys[i], suffix, slen}, AS_LEAF(c));
            continue;
        }
        if (path_append(s, &keys[i], 1) < 0 || path_append(s, suffix, slen) < 0)
            break;
        if (check_path(s, here, &child_seeking) == VISIT && !s->stop)
            emit_leaf(s, AS_LEAF(c), child_seeking);
    }
    s->len = here;
}

long radix_scan(const radix_node *t, const char *prefix, size_t plen, const char *lower,
                size_t llen, const char *sep, size_t seplen, size_t limit, int format,
                radix_buf *out)
{
    /* Start at the larger of lower and prefix. */
    size_t m = llen < plen ? llen : plen;
    int c = cmp(lower, prefix, m);
    if (c < 0 || (c == 0 && llen < plen)) {
        lower = prefix;
        llen = plen;
    }
    scan_t s = {.out = out,
                .prefix = (const uchar *)prefix,
                .plen = plen,
                .lower = (const uchar *)lower,
                .llen = llen,
                .sep = (const uchar *)sep,
                .seplen = seplen,
                .limit = limit,
                .format = format};
    int pickled = format != RADIX_PACKED;
    if (pickled) {
        if (buf_reserve(out, PW_LIST_BEGIN_ROOM) < 0)
            return -1;
        buf_set_end(out, pw_begin_list(buf_end(out)));
    }
    scan_node(&s, t, 0, 1);
    rfree(s.path, s.cap);
    if (s.stop < 0 || (pickled && buf_reserve(out, PW_LIST_END_ROOM) < 0))
        return -1;
    if (pickled)
        buf_set_end(out, pw_end_list(buf_end(out)));
    return s.emitted;
}

/* ------------------------------------------------------------------------ */
/* Transactions.                                                            */

radix_txn *radix_txn_begin(radix_node *base)
{
    radix_txn *x = rmalloc(sizeof *x);
    if (!x)
        return NULL;
    radix_retain(base);
    *x = (radix_txn){.root = base, .first_watch = atomic_load(&g_next_watch)};
    return x;
}

void radix_txn_free(radix_txn *x)
{
    if (!x)
        return;
    if (x->state == 0)
        radix_release(x->root);
    rfree(x->fired, x->capfired * sizeof(uint64_t));
    rfree(x, sizeof *x);
}

radix_node *radix_txn_commit(radix_txn *x)
{
    if (x->state != 0)
        return NULL;
    x->state = 1;
    return x->root;
}

/* Makes room for n more fired ids. */
static int reserve_fired(radix_txn *x, size_t n)
{
    if (x->capfired - x->nfired >= n)
        return 0;
    size_t cap = x->capfired ? x->capfired * 2 : 64;
    while (cap - x->nfired < n)
        cap *= 2;
    uint64_t *f = rrealloc(x->fired, x->capfired * sizeof(uint64_t), cap * sizeof(uint64_t));
    if (!f)
        return -1;
    x->fired = f;
    x->capfired = cap;
    return 0;
}

static void fire(radix_txn *x, uint64_t watch)
{
    if (watch < x->first_watch)
        x->fired[x->nfired++] = watch;
}

static int owned(const radix_txn *x, const radix_node *n) { return n->watch >= x->first_watch; }

/* Makes the node in *slot the transaction's own, with room for `extra` more
 * children, and returns it; NULL when out of memory (*slot unchanged). */
static radix_node *own(radix_txn *x, radix_node **slot, unsigned extra)
{
    radix_node *n = *slot;
    unsigned need = n->n + extra;
    if (owned(x, n) && need <= n->cap)
        return n;
    unsigned cap = need;
    if (owned(x, n)) {
        cap = need < 4 ? 4 : need + need / 2;
        if (cap > 256)
            cap = 256;
    }
    radix_node *m = node_clone(n, cap, one_part(node_prefix(n), n->plen));
    if (!m)
        return NULL;
    if (owned(x, n))
        m->watch = n->watch;
    fire(x, n->watch);
    node_decref(n);
    *slot = m;
    return m;
}

static void note_index(radix_node *n, uint64_t index)
{
    if (index > n->max_index)
        n->max_index = index;
}

/* After one entry of index `old` in n's subtree changed to index `now`
 * (now == 0 and gone: removed), keeps n->max_index right. */
static void fix_after(radix_node *n, uint64_t old, uint64_t now)
{
    if (now >= n->max_index)
        n->max_index = now;
    else if (old == n->max_index)
        node_fix_max(n);
}

static size_t common(const uchar *a, size_t an, const uchar *b, size_t bn)
{
    size_t m = an < bn ? an : bn, i = 0;
    while (i < m && a[i] == b[i])
        i++;
    return i;
}

typedef struct {
    const uchar *key;
    size_t klen;
    const void *value;
    uint32_t vlen;
    uint64_t index;
    int added;
    uint64_t old_index; /* of the replaced entry */
} ins_t;

/* A new leaf for the entry being inserted, with suffix s and a fresh watch id. */
static radix_leaf *entry_leaf_new(const ins_t *in, parts s)
{
    return leaf_new(in->value, in->vlen, in->index, next_watch(), s);
}

/* Counts the inserted entry in n, one of the nodes on its path. */
static void count_added(radix_node *n, ins_t *in)
{
    in->added = 1;
    n->count++;
    note_index(n, in->index);
}

/* The inserted entry took the place of `old`, held by n: watchers of old are told (fire),
 * old is dropped and n's max index follows the index that changed. */
static void retire_replaced(radix_txn *x, radix_node *n, radix_leaf *old, ins_t *in)
{
    in->old_index = old->index;
    fire(x, old->watch);
    leaf_decref(old);
    fix_after(n, in->old_index, in->index);
}

/* A node holding two things: the entry being inserted, whose key continues
 * with k2[0:r2] below the node's path, and `other` (a leaf whose suffix is
 * o2[0:or2], or a node reached by byte o2[0]); the node's prefix is their
 * common part q. */
static radix_node *fork_node(ins_t *in, const uchar *k2, size_t r2, size_t q,
                             const radix_leaf *other_leaf, const uchar *o2, size_t or2,
                             radix_node *other_node)
{
    radix_node *m = node_alloc(2, q);
    if (!m)
        return NULL;
    copy(node_prefix(m), k2, q);
    radix_leaf *nl = entry_leaf_new(in, one_part(k2 + q + (r2 > q), r2 > q ? r2 - q - 1 : 0));
    radix_leaf *ol = NULL;
    if (other_leaf)
        ol = leaf_moved(other_leaf, one_part(o2 + q + (or2 > q), or2 > q ? or2 - q - 1 : 0));
    if (!nl || (other_leaf && !ol)) {
        if (nl)
            leaf_decref(nl);
        if (ol)
            leaf_decref(ol);
        rfree(m, node_size(m));
        return NULL;
    }
    radix_node *oc = other_leaf ? TAG_LEAF(ol) : other_node;
    if (r2 == q)
        m->leaf = nl;
    else
        node_insert_child(m, 0, k2[q], TAG_LEAF(nl));
    if (other_leaf && or2 == q)
        m->leaf = ol;
    else
        node_insert_child(m, node_lower_bound(m, o2[q]), o2[q], oc);
    m->count = 1 + (other_leaf ? 1 : other_node->count);
    m->max_index = other_leaf ? other_leaf->index : other_node->max_index;
    note_index(m, in->index);
    return m;
}

/* The insertion's steps, one per shape of the node *slot whose path the key starts with
 * (depth bytes of it); d = depth + the node's prefix length, where the key's next byte is.
 * Each returns 0, or -1 when out of memory with the transaction's content unchanged. */

static int ins(radix_txn *x, radix_node **slot, size_t depth, ins_t *in);

/* own(), for a step that has made `made` (a tagged leaf or a node) to hang from the node:
 * made comes first so that, when own fails, dropping made leaves the transaction as it was. */
static radix_node *own_or_drop(radix_txn *x, radix_node **slot, unsigned extra, radix_node *made)
{
    radix_node *n = own(x, slot, extra);
    if (!n)
        child_decref(made);
    return n;
}

/* The key leaves n's prefix after its first p bytes. A new node takes those p bytes and
 * holds the entry and n below it; n is copied with the rest of its prefix (the prefix is in
 * n's allocation, and n may be shared with other versions). */
static int insert_at_prefix_split(radix_txn *x, radix_node **slot, size_t depth, size_t p,
                                  ins_t *in)
{
    radix_node *n = *slot;
    const uchar *pre = node_prefix(n);
    radix_node *lower = node_clone(n, n->n, one_part(pre + p + 1, n->plen - p - 1));
    if (!lower)
        return -1;
    radix_node *m = fork_node(in, in->key + depth, in->klen - depth, p, NULL, pre, n->plen, lower);
    if (!m) {
        node_decref(lower);
        return -1;
    }
    fire(x, n->watch);
    node_decref(n);
    *slot = m;
    in->added = 1;
    return 0;
}

/* The key is exactly n's path: the entry becomes n's own leaf, replacing the one there. */
static int insert_at_node(radix_txn *x, radix_node **slot, ins_t *in)
{
    radix_leaf *l = entry_leaf_new(in, one_part(NULL, 0));
    radix_node *n = l ? own_or_drop(x, slot, 0, TAG_LEAF(l)) : NULL;
    if (!n)
        return -1;
    radix_leaf *old = n->leaf;
    n->leaf = l;
    if (old)
        retire_replaced(x, n, old, in);
    else
        count_added(n, in);
    return 0;
}

/* No child of n starts with the key's next byte key[d]: the entry hangs from n as a new leaf
 * child, whose suffix is the rest of the key (n gets room for one more child). */
static int insert_new_child(radix_txn *x, radix_node **slot, size_t d, ins_t *in)
{
    const uchar *key = in->key;
    radix_leaf *l = entry_leaf_new(in, one_part(key + d + 1, in->klen - d - 1));
    radix_node *n = l ? own_or_drop(x, slot, 1, TAG_LEAF(l)) : NULL;
    if (!n)
        return -1;
    node_insert_child(n, node_lower_bound(n, key[d]), key[d], TAG_LEAF(l));
    count_added(n, in);
    return 0;
}

/* Child i of n is a leaf. With the same key it is replaced; otherwise a new node holding
 * the common part of the two suffixes takes its place, with the entry and the old leaf
 * (moved: same entry, same watch id, so not fired) below it. */
static int insert_at_leaf_child(radix_txn *x, radix_node **slot, unsigned i, size_t d,
                                ins_t *in)
{
    const uchar *k2 = in->key + d + 1;
    size_t r2 = in->klen - d - 1;
    radix_leaf *old = AS_LEAF(KIDS(*slot)[i]);
    size_t slen;
    const uchar *s = leaf_suffix(old, &slen);
    radix_node *repl;
    if (slen == r2 && same(s, k2, r2)) {
        radix_leaf *l = entry_leaf_new(in, one_part(k2, r2));
        repl = l ? TAG_LEAF(l) : NULL;
    } else {
        repl = fork_node(in, k2, r2, common(s, slen, k2, r2), old, s, slen, NULL);
    }
    radix_node *n = repl ? own_or_drop(x, slot, 0, repl) : NULL;
    if (!n)
        return -1;
    KIDS(n)[i] = repl;
    if (IS_LEAF(repl)) {
        retire_replaced(x, n, old, in);
    } else {
        leaf_decref(old);
        count_added(n, in);
    }
    return 0;
}

/* Child i of n is a node: the entry goes into its subtree, then n's count and max index
 * follow. n is made the transaction's own first, as the child's slot in it changes. */
static int insert_below_child(radix_txn *x, radix_node **slot, unsigned i, size_t d, ins_t *in)
{
    radix_node *n = own(x, slot, 0);
    if (!n)
        return -1;
    uint64_t old_max = KIDS(n)[i]->max_index;
    if (ins(x, &KIDS(n)[i], d + 1, in) < 0)
        return -1;
    if (in->added)
        count_added(n, in);
    else
        fix_after(n, old_max, KIDS(n)[i]->max_index);
    return 0;
}

/* Inserts the entry below *slot, whose path is the key's first depth bytes: finds which
 * shape the node has where the key goes, and takes that step (recursing down a child). */
static int ins(radix_txn *x, radix_node **slot, size_t depth, ins_t *in)
{
    radix_node *n = *slot;
    size_t p = common(node_prefix(n), n->plen, in->key + depth, in->klen - depth);
    if (p < n->plen)
        return insert_at_prefix_split(x, slot, depth, p, in);
    size_t d = depth + n->plen;
    if (d == in->klen)
        return insert_at_node(x, slot, in);
    int i = node_find(n, in->key[d]);
    if (i < 0)
        return insert_new_child(x, slot, d, in);
    if (IS_LEAF(KIDS(n)[i]))
        return insert_at_leaf_child(x, slot, (unsigned)i, d, in);
    return insert_below_child(x, slot, (unsigned)i, d, in);
}

int radix_txn_insert(radix_txn *x, const char *key, size_t klen, const char *value,
                     size_t vlen, uint64_t index)
{
    if (x->state != 0 || vlen > UINT32_MAX || klen > UINT32_MAX)
        return -2;
    if (reserve_fired(x, klen + 8) < 0)
        return -1;
    ins_t in = {(const uchar *)key, klen, value, (uint32_t)vlen, index, 0, 0};
    if (ins(x, &x->root, 0, &in) < 0)
        return -1;
    return in.added;
}

/* The whole page is checked before anything is inserted, so a malformed one
 * changes nothing; a failed allocation leaves the records before it inserted. */
int64_t radix_txn_insert_packed(radix_txn *x, const char *page, size_t len, size_t *bad_at)
{
    if (x->state != 0)
        return -4;
    const uchar *p = (const uchar *)page;
    int64_t records = 0;
    size_t off = 0;
    while (off < len) {
        if (len - off < PACKED_HEADER) {
            *bad_at = off;
            return -2;
        }
        uint64_t body = (uint64_t)load_le32(p + off) + load_le32(p + off + 4);
        if (body > len - off - PACKED_HEADER) {
            *bad_at = off;
            return -3;
        }
        off += PACKED_HEADER + (size_t)body;
        records++;
    }
    for (off = 0; off < len;) {
        size_t klen = load_le32(p + off), vlen = load_le32(p + off + 4);
        uint64_t index = load_le64(p + off + 8);
        const char *key = page + off + PACKED_HEADER;
        if (radix_txn_insert(x, key, klen, key + klen, vlen, index) < 0) {
            *bad_at = off;
            return -1;
        }
        off += PACKED_HEADER + klen + vlen;
    }
    return records;
}

/* Puts n (the transaction's own, not the root) back in canonical shape after
 * a removal below it: gone when empty, merged into its only child, or turned
 * into a leaf. When a merge cannot allocate, n simply stays as it is. */
static void normalize(radix_txn *x, radix_node **slot)
{
    radix_node *n = *slot;
    parts pre = one_part(node_prefix(n), n->plen);
    radix_node *repl;
    if (n->count == 0) {
        repl = NULL;
    } else if (!n->leaf && n->n == 1) {
        radix_node *c = KIDS(n)[0];
        pre.mid = node_keys(n)[0];
        if (IS_LEAF(c)) {
            size_t slen;
            pre.b = leaf_suffix(AS_LEAF(c), &slen);
            pre.bn = slen;
            radix_leaf *l = leaf_moved(AS_LEAF(c), pre);
            if (!l)
                return;
            repl = TAG_LEAF(l);
        } else {
            pre.b = node_prefix(c);
            pre.bn = c->plen;
            repl = node_clone(c, c->n, pre);
            if (!repl)
                return;
            if (owned(x, c))
                repl->watch = c->watch;
            fire(x, c->watch);
        }
    } else if (n->leaf && n->n == 0) {
        radix_leaf *l = leaf_moved(n->leaf, pre);
        if (!l)
            return;
        repl = TAG_LEAF(l);
    } else {
        return;
    }
    node_decref(n); /* n is the transaction's own: frees it and drops its references */
    *slot = repl;
}

/* Drops the entry child i of n (a tagged leaf or a node), which was counted in
 * n, firing the leaf. */
static void drop_child(radix_txn *x, radix_node *n, unsigned i)
{
    radix_node *c = KIDS(n)[i];
    node_remove_child(n, i);
    if (IS_LEAF(c))
        fire(x, AS_LEAF(c)->watch);
    child_decref(c);
}

/* After a deletion below child i of n: a child left with nothing is unlinked. */
static void drop_if_emptied(radix_node *n, unsigned i)
{
    if (!KIDS(n)[i])
        node_remove_child(n, i);
}

/* After `removed` entries, the largest index `top`, left n's subtree: its count and max
 * index follow, and a node other than the root is merged or replaced if it became
 * trivial. */
static void removed_below(radix_txn *x, radix_node **slot, radix_node *n, uint64_t removed,
                          uint64_t top, int is_root)
{
    n->count -= removed;
    if (top == n->max_index)
        node_fix_max(n);
    if (!is_root)
        normalize(x, slot);
}

/* Removes key (which exists below *slot); *gone receives its index. */
static int del(radix_txn *x, radix_node **slot, size_t depth, const uchar *key, size_t klen,
               uint64_t *gone, int is_root)
{
    radix_node *n = own(x, slot, 0);
    if (!n)
        return -1;
    size_t d = depth + n->plen;
    if (d == klen) {
        *gone = n->leaf->index;
        fire(x, n->leaf->watch);
        leaf_decref(n->leaf);
        n->leaf = NULL;
    } else {
        int i = node_find(n, key[d]);
        if (IS_LEAF(KIDS(n)[i])) {
            *gone = AS_LEAF(KIDS(n)[i])->index;
            drop_child(x, n, (unsigned)i);
        } else {
            if (del(x, &KIDS(n)[i], d + 1, key, klen, gone, 0) < 0)
                return -1;
            drop_if_emptied(n, (unsigned)i);
        }
    }
    removed_below(x, slot, n, 1, *gone, is_root);
    return 0;
}

int radix_txn_delete(radix_txn *x, const char *key, size_t klen)
{
    if (x->state != 0)
        return -2;
    const radix_node *deepest;
    if (!lookup(x->root, (const uchar *)key, klen, &deepest))
        return 0;
    if (reserve_fired(x, klen + 8) < 0)
        return -1;
    uint64_t gone = 0;
    return del(x, &x->root, 0, (const uchar *)key, klen, &gone, 1) < 0 ? -1 : 1;
}

/* Walks c's subtree: counts (fire == 0) or fires (fire == 1) its base ids. */
static size_t walk_ids(radix_txn *x, const radix_node *c, int do_fire)
{
    if (IS_LEAF(c)) {
        uint64_t w = AS_LEAF(c)->watch;
        if (do_fire)
            fire(x, w);
        return w < x->first_watch;
    }
    size_t k = c->watch < x->first_watch;
    if (do_fire)
        fire(x, c->watch);
    if (c->leaf) {
        k += c->leaf->watch < x->first_watch;
        if (do_fire)
            fire(x, c->leaf->watch);
    }
    for (unsigned i = 0; i < c->n; i++)
        k += walk_ids(x, KIDS(c)[i], do_fire);
    return k;
}

/* Removes the subtree of keys starting with p, which is `target` below *slot:
 * `removed` entries, the largest index tmax. */
static int delp(radix_txn *x, radix_node **slot, size_t depth, const uchar *p, size_t plen,
                const radix_node *target, uint64_t removed, uint64_t tmax, int is_root)
{
    radix_node *n = own(x, slot, 0);
    if (!n)
        return -1;
    size_t d = depth + n->plen;
    int i = node_find(n, p[d]);
    radix_node *c = KIDS(n)[i];
    if (c == target) {
        walk_ids(x, c, 1);
        node_remove_child(n, (unsigned)i);
        child_decref(c);
    } else {
        if (delp(x, &KIDS(n)[i], d + 1, p, plen, target, removed, tmax, 0) < 0)
            return -1;
        drop_if_emptied(n, (unsigned)i);
    }
    removed_below(x, slot, n, removed, tmax, is_root);
    return 0;
}

int64_t radix_txn_delete_prefix(radix_txn *x, const char *prefix, size_t plen)
{
    if (x->state != 0)
        return -2;
    const radix_node *deepest;
    radix_node *target = locate(x->root, (const uchar *)prefix, plen, &deepest);
    if (!target || child_count(target) == 0)
        return 0;
    uint64_t removed = child_count(target);
    if (reserve_fired(x, walk_ids(x, target, 0) + plen + 8) < 0)
        return -1;
    if (target == x->root) {
        /* Everything goes: a fresh empty root. */
        radix_node *e = node_alloc(0, 0);
        if (!e)
            return -1;
        walk_ids(x, x->root, 1);
        radix_release(x->root);
        x->root = e;
        return (int64_t)removed;
    }
    if (delp(x, &x->root, 0, (const uchar *)prefix, plen, target, removed, child_max(target), 1) < 0)
        return -1;
    return (int64_t)removed;
}

/* ------------------------------------------------------------------------ */
/* Checks, for tests.                                                       */

uint64_t radix_node_count(const radix_node *t)
{
    uint64_t k = 1;
    for (unsigned i = 0; i < t->n; i++)
        if (!IS_LEAF(KIDS(t)[i]))
            k += radix_node_count(KIDS(t)[i]);
    return k;
}

static int check_node(const radix_node *n, int is_root)
{
    if (atomic_load(&n->refs) == 0 || n->n > n->cap || (is_root && n->plen))
        return 1;
    uint64_t count = n->leaf != NULL, max = n->leaf ? n->leaf->index : 0;
    const uchar *k = node_keys(n);
    for (unsigned i = 0; i < n->n; i++) {
        const radix_node *c = KIDS(n)[i];
        if (!c || (i > 0 && k[i - 1] >= k[i]))
            return 1;
        if (IS_LEAF(c)) {
            if (atomic_load(&AS_LEAF(c)->refs) == 0)
                return 1;
        } else if (check_node(c, 0)) {
            return 1;
        }
        count += child_count(c);
        if (child_max(c) > max)
            max = child_max(c);
    }
    if (count != n->count || max != n->max_index || (!is_root && count == 0))
        return 1;
    return 0;
}

int radix_check(const radix_node *t) { return check_node(t, 1); }
