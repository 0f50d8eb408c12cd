/* fuzz_radix.c -- random operations on many live versions of the tree, checked
 * against the model after every step, with allocations failing at random.
 *
 *   fuzz_radix [seconds [seed]]
 *
 * Each round takes a random live version, runs a transaction of random
 * inserts, bulk loads of packed pages (whole, cut short, or with an allocation
 * failing), deletes and prefix deletes on it (mirrored on a copy of that
 * version's model), and commits or aborts it. It checks:
 *   - the transaction's working tree equals the model after every operation,
 *     including operations whose allocations failed (they must change nothing);
 *   - every committed version still equals its own model while newer ones are
 *     built from it, and listings, counts, max indexes and key listings with a
 *     separator agree with the model;
 *   - watch soundness: a key or prefix whose answer changed has its watch id
 *     (taken on the base version) among the fired ids;
 *   - watch precision: the leaf id of a key the transaction did not write is
 *     never fired;
 *   - at the end, with every version released, no byte is left allocated.
 */
#include <time.h>

#include "model.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static unsigned below(unsigned n) { return (unsigned)(rnd() % n); }

#define MAXKEY 320

static size_t gen_key(unsigned char *k)
{
    static const unsigned char alpha[] = {'a', 'b', '/', 0, 'c'};
    size_t n = 0;
    if (below(16) == 0) {
        memcpy(k, "LONG", 4);
        memset(k + 4, 'x', 200 + below(3));
        n = 4 + 200 + below(3);
    }
    size_t len = below(8);
    for (size_t i = 0; i < len; i++)
        k[n++] = alpha[below(sizeof alpha)];
    return n;
}

static size_t gen_value(unsigned char *v)
{
    size_t n = below(16) == 0 ? 300 : below(17);
    for (size_t i = 0; i < n; i++)
        v[i] = (unsigned char)rnd();
    return n;
}

static uint64_t gen_index(void)
{
    switch (below(6)) {
    case 0:
        return 0x7ffffffeu + below(4);
    case 1:
        return 0x8000000000000000u + below(3);
    case 2:
        return UINT64_MAX - below(2);
    default:
        return 1 + below(100);
    }
}

typedef struct {
    radix_node *t;
    model m;
} version;

#define MAXVERSIONS 6
static version versions[MAXVERSIONS];
static size_t nversions;

static int fired_has(const radix_txn *x, uint64_t id)
{
    for (size_t i = 0; i < x->nfired; i++)
        if (x->fired[i] == id)
            return 1;
    return 0;
}

static int same_entry(const entry *a, const entry *b)
{
    if (!a || !b)
        return a == b;
    return a->vlen == b->vlen && a->index == b->index &&
           (a->vlen == 0 || memcmp(a->val, b->val, a->vlen) == 0);
}

static int prefix_changed(const model *a, const model *b, const void *p, size_t plen)
{
    for (size_t i = 0; i < a->n; i++)
        if (has_prefix(&a->e[i], p, plen) &&
            !same_entry(&a->e[i], model_get(b, a->e[i].key, a->e[i].klen)))
            return 1;
    for (size_t i = 0; i < b->n; i++)
        if (has_prefix(&b->e[i], p, plen) && !model_get(a, b->e[i].key, b->e[i].klen))
            return 1;
    return 0;
}

/* Queries on a committed version against its model. */
static void check_queries(const version *v)
{
    unsigned char p[MAXKEY], lower[MAXKEY], sep[2];
    size_t plen = gen_key(p);
    if (plen > 3 && below(2))
        plen = below(4);
    size_t llen = gen_key(lower);
    uint64_t count = 0, max = 0;
    for (size_t i = 0; i < v->m.n; i++) {
        if (has_prefix(&v->m.e[i], p, plen)) {
            count++;
            if (v->m.e[i].index > max)
                max = v->m.e[i].index;
        }
    }
    CHECK(radix_count(v->t, (char *)p, plen) == count);
    CHECK(radix_max_index(v->t, (char *)p, plen) == max);

    keyref *want = malloc((v->m.n + 1) * sizeof(keyref));
    CHECK(want);
    /* Listing from a lower bound within the prefix, with a limit. */
    size_t limit = below(3) ? 0 : 1 + below(5), n = 0;
    for (size_t i = 0; i < v->m.n && (!limit || n < limit); i++) {
        const entry *e = &v->m.e[i];
        if (has_prefix(e, p, plen) && key_cmp(e->key, e->klen, lower, llen) >= 0)
            want[n++] = (keyref){e->key, e->klen};
    }
    radix_buf b = {0};
    long got = radix_scan(v->t, (char *)p, plen, (char *)lower, llen, NULL, 0, limit,
                          RADIX_PACKED, &b);
    if (got >= 0) {
        CHECK((size_t)got == n);
        check_packed(&b, &v->m, want, n, 1);
    }
    radix_buf_free(&b);

    /* Key listing with a separator. */
    size_t seplen = below(3);
    for (size_t i = 0; i < seplen; i++)
        sep[i] = below(2) ? '/' : (unsigned char)"ab"[below(2)];
    n = model_list_keys(&v->m, p, plen, sep, seplen, want);
    got = radix_scan(v->t, (char *)p, plen, "", 0, (char *)sep, seplen, 0, RADIX_PACKED, &b);
    if (got >= 0) {
        CHECK((size_t)got == n);
        check_packed(&b, &v->m, want, n, 0);
    }
    radix_buf_free(&b);
    free(want);
}

typedef struct {
    unsigned char k[MAXKEY];
    size_t klen;
    int is_prefix;
} written;

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A bulk load of 1..4 records in the packed layout, sometimes cut short, checked
 * against the same records inserted one by one into the model: all of them, none
 * when the page is malformed, the ones before *bad_at when an allocation failed. */
static size_t packed_op(radix_txn *x, model *m, written *w, size_t nw)
{
    static unsigned char page[4 * (16 + MAXKEY + 400)];
    size_t off[5], len = 0, nrec = 1 + below(4);
    for (size_t i = 0; i < nrec; i++) {
        unsigned char *r = page + len;
        size_t klen = gen_key(r + 16), vlen = gen_value(r + 16 + klen);
        uint64_t index = gen_index();
        put32(r, (uint32_t)klen);
        put32(r + 4, (uint32_t)vlen);
        put32(r + 8, (uint32_t)index);
        put32(r + 12, (uint32_t)(index >> 32));
        off[i] = len;
        len += 16 + klen + vlen;
    }
    off[nrec] = len;
    size_t cut = below(4) == 0 ? below((unsigned)len) : len;
    int failing = below(4) == 0;
    if (failing)
        radix_fail_alloc_after(below(8));
    size_t bad_at = (size_t)-1;
    int64_t r = radix_txn_insert_packed(x, (char *)page, cut, &bad_at);
    radix_fail_alloc_after(-1);
    size_t whole = 0; /* records wholly inside the cut */
    while (whole < nrec && off[whole + 1] <= cut)
        whole++;
    if (off[whole] != cut) { /* malformed: the first record not wholly inside is named */
        CHECK(r == (cut - off[whole] < 16 ? -2 : -3) && bad_at == off[whole]);
        return nw;
    }
    CHECK(r == (int64_t)whole || (failing && r == -1));
    size_t upto = r == -1 ? bad_at : cut;
    CHECK(r != -1 || bad_at < cut);
    for (size_t i = 0; i < whole && off[i] < upto; i++) {
        const unsigned char *rec = page + off[i];
        size_t klen = rd32((const char *)rec), vlen = rd32((const char *)rec + 4);
        model_insert(m, rec + 16, klen, rec + 16 + klen, vlen, rd64((const char *)rec + 8));
        w[nw++] = (written){{0}, klen, 0}, memcpy(w[nw - 1].k, rec + 16, klen);
    }
    return nw;
}

static void one_round(void)
{
    version *base = &versions[below((unsigned)nversions)];
    if (below(8) == 0)
        radix_fail_alloc_after(below(3));
    radix_txn *x = radix_txn_begin(base->t);
    radix_fail_alloc_after(-1);
    if (!x)
        return;
    model m = model_copy(&base->m);
    written w[16];
    size_t nw = 0, nops = 1 + below(12);
    unsigned char k[MAXKEY], v[400];
    for (size_t op = 0; op < nops; op++) {
        size_t klen = gen_key(k);
        int failing = below(6) == 0;
        if (failing)
            radix_fail_alloc_after(below(6));
        unsigned kind = below(11);
        if (kind == 10 && nw + 4 <= 16) {
            radix_fail_alloc_after(-1);
            nw = packed_op(x, &m, w, nw);
        } else if (kind < 6 || kind == 10) {
            size_t vlen = gen_value(v);
            uint64_t index = gen_index();
            int r = radix_txn_insert(x, (char *)k, klen, (char *)v, vlen, index);
            CHECK(r == -1 || r == 0 || r == 1);
            if (r >= 0) {
                CHECK(model_insert(&m, k, klen, v, vlen, index) == r);
            }
            if (r >= 0 && nw < 16)
                w[nw++] = (written){{0}, klen, 0}, memcpy(w[nw - 1].k, k, klen);
        } else if (kind < 9) {
            int r = radix_txn_delete(x, (char *)k, klen);
            CHECK(r == -1 || r == 0 || r == 1);
            if (r >= 0) {
                CHECK(model_delete(&m, k, klen) == r);
            }
            if (r >= 0 && nw < 16)
                w[nw++] = (written){{0}, klen, 0}, memcpy(w[nw - 1].k, k, klen);
        } else {
            if (klen > 2 && below(2))
                klen = below(3);
            int64_t r = radix_txn_delete_prefix(x, (char *)k, klen);
            CHECK(r >= -1);
            if (r >= 0) {
                CHECK((size_t)r == model_delete_prefix(&m, k, klen));
            }
            if (r >= 0 && nw < 16)
                w[nw++] = (written){{0}, klen, 1}, memcpy(w[nw - 1].k, k, klen);
        }
        radix_fail_alloc_after(-1);
        check_against(x->root, &m);
        if (nw == 16)
            break;
    }
    if (below(5) == 0) { /* abort */
        radix_txn_free(x);
        model_free(&m);
        return;
    }
    radix_node *t = radix_txn_commit(x);
    CHECK(t && radix_txn_commit(x) == NULL);
    CHECK(radix_txn_insert(x, "a", 1, "", 0, 1) == -2);

    /* Soundness: every key and prefix whose answer changed fired. */
    for (int probe = 0; probe < 24; probe++) {
        size_t klen = gen_key(k);
        if (probe & 1) {
            if (!same_entry(model_get(&base->m, k, klen), model_get(&m, k, klen)))
                CHECK(fired_has(x, radix_key_watch(base->t, (char *)k, klen)));
        } else {
            if (klen > 3 && below(2))
                klen = below(4);
            if (prefix_changed(&base->m, &m, k, klen))
                CHECK(fired_has(x, radix_prefix_watch(base->t, (char *)k, klen)));
        }
    }
    /* Precision: a key nobody wrote keeps its leaf id out of the fired set. */
    for (size_t i = 0; i < base->m.n; i++) {
        const entry *e = &base->m.e[i];
        int wrote = 0;
        for (size_t j = 0; j < nw && !wrote; j++) {
            if (w[j].is_prefix)
                wrote = has_prefix(e, w[j].k, w[j].klen);
            else
                wrote = key_cmp(e->key, e->klen, w[j].k, w[j].klen) == 0;
        }
        const radix_leaf *l = radix_get(base->t, (char *)e->key, e->klen);
        CHECK(l);
        if (!wrote)
            CHECK(!fired_has(x, l->watch));
    }
    radix_txn_free(x);

    version nv = {t, m};
    if (nversions < MAXVERSIONS) {
        versions[nversions++] = nv;
    } else {
        size_t i = below(MAXVERSIONS);
        radix_release(versions[i].t);
        model_free(&versions[i].m);
        versions[i] = nv;
    }
    /* Every live version still reads as it did. */
    for (size_t i = 0; i < nversions; i++) {
        if (below(4) == 0)
            check_against(versions[i].t, &versions[i].m);
        check_queries(&versions[i]);
    }
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed * 2654435761u + 1;
    printf("fuzz_radix: seed %llu, %.1f s\n", (unsigned long long)seed, seconds);
    fflush(stdout);
    versions[0] = (version){radix_empty(), {NULL, 0, 0}};
    nversions = 1;
    clock_t end = clock() + (clock_t)(seconds * CLOCKS_PER_SEC);
    unsigned long rounds = 0;
    while (clock() < end) {
        one_round();
        rounds++;
        if (rounds % 2000 == 0) { /* start over now and then: keeps the trees small */
            for (size_t i = 1; i < nversions; i++) {
                radix_release(versions[i].t);
                model_free(&versions[i].m);
            }
            nversions = 1;
        }
    }
    for (size_t i = 0; i < nversions; i++) {
        radix_release(versions[i].t);
        model_free(&versions[i].m);
    }
    CHECK(radix_bytes_allocated() == 0);
    CHECK(radix_blocks_allocated() == 0);
    printf("fuzz_radix: %lu rounds, ok\n", rounds);
    return 0;
}
