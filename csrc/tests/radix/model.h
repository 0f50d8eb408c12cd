/* model.h -- the simple reference model the tree is checked against: a sorted
 * array of entries, plus helpers shared by the test driver and the fuzz target. */
#ifndef RADIX_TEST_MODEL_H
#define RADIX_TEST_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "radix.h"
#include "../check.h"


typedef struct {
    unsigned char *key;
    size_t klen;
    unsigned char *val;
    size_t vlen;
    uint64_t index;
} entry;

typedef struct {
    entry *e;
    size_t n, cap;
} model;

static inline int key_cmp(const void *a, size_t an, const void *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

static inline void *dup(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    CHECK(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* Position of key, or where it would go; *found set when present. */
static inline size_t model_find(const model *m, const void *key, size_t klen, int *found)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = key_cmp(m->e[mid].key, m->e[mid].klen, key, klen);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static const entry *model_get(const model *m, const void *key, size_t klen)
{
    int found;
    size_t i = model_find(m, key, klen, &found);
    return found ? &m->e[i] : NULL;
}

static inline int model_insert(model *m, const void *key, size_t klen, const void *val, size_t vlen,
                        uint64_t index)
{
    int found;
    size_t i = model_find(m, key, klen, &found);
    if (found) {
        free(m->e[i].val);
        m->e[i].val = dup(val, vlen);
        m->e[i].vlen = vlen;
        m->e[i].index = index;
        return 0;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->e = realloc(m->e, m->cap * sizeof(entry));
        CHECK(m->e);
    }
    memmove(m->e + i + 1, m->e + i, (m->n - i) * sizeof(entry));
    m->e[i] = (entry){dup(key, klen), klen, dup(val, vlen), vlen, index};
    m->n++;
    return 1;
}

static inline void entry_free(entry *e)
{
    free(e->key);
    free(e->val);
}

static inline int model_delete(model *m, const void *key, size_t klen)
{
    int found;
    size_t i = model_find(m, key, klen, &found);
    if (!found)
        return 0;
    entry_free(&m->e[i]);
    memmove(m->e + i, m->e + i + 1, (m->n - i - 1) * sizeof(entry));
    m->n--;
    return 1;
}

static inline int has_prefix(const entry *e, const void *p, size_t plen)
{
    return e->klen >= plen && (plen == 0 || memcmp(e->key, p, plen) == 0);
}

static inline size_t model_delete_prefix(model *m, const void *p, size_t plen)
{
    size_t j = 0, removed = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (has_prefix(&m->e[i], p, plen)) {
            entry_free(&m->e[i]);
            removed++;
        } else {
            m->e[j++] = m->e[i];
        }
    }
    m->n = j;
    return removed;
}

static inline model model_copy(const model *m)
{
    model c = {NULL, 0, 0};
    for (size_t i = 0; i < m->n; i++)
        model_insert(&c, m->e[i].key, m->e[i].klen, m->e[i].val, m->e[i].vlen, m->e[i].index);
    return c;
}

static inline void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++)
        entry_free(&m->e[i]);
    free(m->e);
    *m = (model){NULL, 0, 0};
}

static inline uint32_t rd32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

static inline uint64_t rd64(const char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Checks that a packed listing (keys only when keys_only) equals the model's
 * entries [from, ...) matching `want` in order. `want` decides per entry:
 * 1 list it, 0 skip it; cut: for list_keys, the length to cut the key to. */
typedef struct {
    const void *key;
    size_t klen;
} keyref;

static inline void check_packed(const radix_buf *b, const model *m, const keyref *want, size_t nwant,
                         int with_values)
{
    size_t off = 0, k = 0;
    while (off < b->len) {
        CHECK(k < nwant);
        CHECK(off + 16 <= b->len);
        size_t klen = rd32(b->data + off), vlen = rd32(b->data + off + 4);
        uint64_t index = rd64(b->data + off + 8);
        off += 16;
        CHECK(off + klen + vlen <= b->len);
        CHECK(klen == want[k].klen && key_cmp(b->data + off, klen, want[k].key, klen) == 0);
        if (with_values) {
            const entry *e = model_get(m, b->data + off, klen);
            CHECK(e && e->vlen == vlen && e->index == index);
            CHECK(vlen == 0 || memcmp(b->data + off + klen, e->val, vlen) == 0);
        }
        off += klen + vlen;
        k++;
    }
    CHECK(k == nwant);
}

/* Consul's key listing on the model: keys under prefix, cut just after the
 * first sep that follows the prefix, consecutive duplicates dropped. */
static inline size_t model_list_keys(const model *m, const void *p, size_t plen, const void *sep,
                              size_t seplen, keyref *out)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        const entry *e = &m->e[i];
        if (!has_prefix(e, p, plen))
            continue;
        size_t cut = e->klen;
        if (seplen) {
            for (size_t j = plen; j + seplen <= e->klen; j++) {
                if (memcmp(e->key + j, sep, seplen) == 0) {
                    cut = j + seplen;
                    break;
                }
            }
        }
        if (n > 0 && out[n - 1].klen == cut && memcmp(out[n - 1].key, e->key, cut) == 0)
            continue;
        out[n++] = (keyref){e->key, cut};
    }
    return n;
}

/* The whole tree against the model: length, every entry, the full listing. */
static inline void check_against(const radix_node *t, const model *m)
{
    CHECK(radix_check(t) == 0);
    CHECK(radix_len(t) == m->n);
    keyref *want = malloc((m->n + 1) * sizeof(keyref));
    CHECK(want);
    for (size_t i = 0; i < m->n; i++) {
        const entry *e = &m->e[i];
        const radix_leaf *l = radix_get(t, (const char *)e->key, e->klen);
        CHECK(l && l->vlen == e->vlen && l->index == e->index);
        CHECK(e->vlen == 0 || memcmp(l->data, e->val, e->vlen) == 0);
        want[i] = (keyref){e->key, e->klen};
    }
    radix_buf b = {0};
    long n = radix_scan(t, "", 0, "", 0, NULL, 0, 0, RADIX_PACKED, &b);
    CHECK(n == (long)m->n);
    check_packed(&b, m, want, m->n, 1);
    radix_buf_free(&b);
    free(want);
}

#endif
