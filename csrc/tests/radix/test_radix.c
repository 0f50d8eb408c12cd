/* test_radix.c -- the tree's C test driver: named cases, then every allocation
 * of a scripted workload made to fail in turn. Exits non-zero on the first
 * failed check; built with ASan and UBSan by the Makefile beside it. */
#include "model.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static radix_node *commit(radix_txn *x)
{
    radix_node *t = radix_txn_commit(x);
    CHECK(t);
    return t;
}

static int fired(const radix_txn *x, uint64_t id)
{
    for (size_t i = 0; i < x->nfired; i++)
        if (x->fired[i] == id)
            return 1;
    return 0;
}

static void test_empty(void)
{
    radix_node *t = radix_empty();
    CHECK(t && radix_len(t) == 0 && radix_check(t) == 0);
    CHECK(radix_get(t, S("")) == NULL && radix_get(t, S("a")) == NULL);
    CHECK(radix_key_watch(t, S("a")) != 0 && radix_prefix_watch(t, S("")) != 0);
    CHECK(radix_count(t, S("")) == 0 && radix_max_index(t, S("")) == 0);
    radix_buf b = {0};
    CHECK(radix_scan(t, S(""), S(""), NULL, 0, 0, RADIX_PACKED, &b) == 0 && b.len == 0);
    CHECK(radix_scan(t, S(""), S(""), NULL, 0, 0, RADIX_PICKLE_ITEMS, &b) == 0);
    CHECK(b.len == 6 && memcmp(b.data, "\x80\x03](e.", 6) == 0);
    radix_buf_free(&b);
    radix_release(t);
}

static void test_basic_and_versions(void)
{
    radix_node *t0 = radix_empty();
    radix_txn *x = radix_txn_begin(t0);
    CHECK(radix_txn_insert(x, S("foo/bar"), S("1"), 10) == 1);
    CHECK(radix_txn_insert(x, S("foo/baz"), S("2"), 11) == 1);
    CHECK(radix_txn_insert(x, S(""), S("empty"), 3) == 1);
    CHECK(radix_txn_insert(x, "a\0b", 3, S("nul"), 12) == 1);
    CHECK(radix_txn_insert(x, S("foo/bar"), S("1b"), 13) == 0);
    const radix_leaf *l = radix_get(x->root, S("foo/bar")); /* reads its own writes */
    CHECK(l && l->vlen == 2 && memcmp(l->data, "1b", 2) == 0 && l->index == 13);
    radix_node *t1 = commit(x);
    radix_txn_free(x);
    CHECK(radix_len(t0) == 0 && radix_len(t1) == 4);
    CHECK(radix_get(t1, "a\0b", 3) && !radix_get(t1, "a", 1) && radix_get(t1, S("")));
    CHECK(radix_count(t1, S("foo/")) == 2 && radix_max_index(t1, S("foo/")) == 13);
    CHECK(radix_count(t1, S("foo/ba")) == 2 && radix_count(t1, S("foo/baz")) == 1);
    CHECK(radix_count(t1, S("foo/bazz")) == 0 && radix_max_index(t1, S("")) == 13);

    x = radix_txn_begin(t1);
    CHECK(radix_txn_delete(x, S("foo/bar")) == 1);
    CHECK(radix_txn_delete(x, S("foo/bar")) == 0);
    CHECK(radix_txn_delete_prefix(x, S("nothing")) == 0);
    CHECK(radix_txn_insert(x, S("foo/qux"), S("3"), 5) == 1);
    radix_node *t2 = commit(x);
    radix_txn_free(x);
    CHECK(radix_len(t1) == 4 && radix_get(t1, S("foo/bar")));
    CHECK(radix_len(t2) == 4 && !radix_get(t2, S("foo/bar")));
    CHECK(radix_max_index(t2, S("foo/")) == 11);

    x = radix_txn_begin(t2);
    CHECK(radix_txn_delete_prefix(x, S("foo/")) == 2);
    radix_node *t3 = commit(x);
    radix_txn_free(x);
    CHECK(radix_len(t3) == 2 && radix_check(t3) == 0);
    x = radix_txn_begin(t3);
    CHECK(radix_txn_delete_prefix(x, S("")) == 2);
    radix_node *t4 = commit(x);
    radix_txn_free(x);
    CHECK(radix_len(t4) == 0 && radix_len(t3) == 2);
    radix_release(t0);
    radix_release(t2);
    radix_release(t1);
    radix_release(t4);
    radix_release(t3);
}

static void test_watches(void)
{
    radix_node *t0 = radix_empty();
    radix_txn *x = radix_txn_begin(t0);
    radix_txn_insert(x, S("app/a"), S("1"), 1);
    radix_txn_insert(x, S("app/b"), S("2"), 2);
    radix_txn_insert(x, S("other"), S("3"), 3);
    radix_node *t1 = commit(x);
    radix_txn_free(x);

    uint64_t wa = radix_key_watch(t1, S("app/a")), wb = radix_key_watch(t1, S("app/b"));
    uint64_t wo = radix_key_watch(t1, S("other"));
    uint64_t wmissing = radix_key_watch(t1, S("app/c")), wapp = radix_prefix_watch(t1, S("app/"));
    CHECK(wa == radix_get(t1, S("app/a"))->watch);
    CHECK(wmissing != wa && wmissing != wb);

    /* A split below app/a's node: inserting app/ab moves app/a's leaf but keeps its id. */
    x = radix_txn_begin(t1);
    radix_txn_insert(x, S("app/ab"), S("4"), 4);
    radix_node *t2 = commit(x);
    CHECK(!fired(x, wa) && !fired(x, wb) && !fired(x, wo));
    CHECK(fired(x, wapp) && radix_key_watch(t2, S("app/a")) == wa);
    radix_txn_free(x);

    /* Creating a missing key fires the id its lookup reported. */
    wmissing = radix_key_watch(t2, S("app/c"));
    x = radix_txn_begin(t2);
    radix_txn_insert(x, S("app/c"), S("5"), 5);
    CHECK(fired(x, wmissing) && !fired(x, wa) && !fired(x, wb));
    radix_node *t3 = commit(x);
    radix_txn_free(x);

    /* Deleting app/ab merges app/a's leaf back: same id, not fired. */
    x = radix_txn_begin(t3);
    uint64_t wab = radix_key_watch(t3, S("app/ab"));
    radix_txn_delete(x, S("app/ab"));
    CHECK(fired(x, wab) && !fired(x, wa));
    radix_node *t4 = commit(x);
    CHECK(radix_key_watch(t4, S("app/a")) == wa);
    radix_txn_free(x);

    /* Rewriting a key fires its leaf only. */
    x = radix_txn_begin(t4);
    radix_txn_insert(x, S("app/b"), S("2b"), 6);
    CHECK(fired(x, wb) && !fired(x, wa) && !fired(x, wo));
    radix_node *t5 = commit(x);
    radix_txn_free(x);

    /* A prefix delete fires every leaf under it. */
    x = radix_txn_begin(t5);
    CHECK(radix_txn_delete_prefix(x, S("app")) == 3);
    CHECK(fired(x, wa) && fired(x, radix_key_watch(t5, S("app/b"))) && !fired(x, wo));
    radix_node *t6 = commit(x);
    radix_txn_free(x);

    radix_node *all[] = {t0, t1, t2, t3, t4, t5, t6};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        radix_release(all[i]);
}

static void test_list_keys(void)
{
    static const char *keys[] = {"web/a", "web/b/c", "web/b/d", "web/e/", "web", "webx/y", "x"};
    radix_node *t0 = radix_empty();
    radix_txn *x = radix_txn_begin(t0);
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        radix_txn_insert(x, keys[i], strlen(keys[i]), "v", 1, i + 1);
    radix_node *t = commit(x);
    radix_txn_free(x);
    radix_buf b = {0};
    CHECK(radix_scan(t, S("web/"), S(""), S("/"), 0, RADIX_PACKED, &b) == 3);
    const char *want[] = {"web/a", "web/b/", "web/e/"};
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        size_t klen = rd32(b.data + off);
        CHECK(klen == strlen(want[i]) && memcmp(b.data + off + 16, want[i], klen) == 0);
        off += 16 + klen + rd32(b.data + off + 4);
    }
    radix_buf_free(&b);
    CHECK(radix_scan(t, S("web"), S(""), S("/"), 0, RADIX_PACKED, &b) == 3); /* web web/ webx/ */
    radix_buf_free(&b);
    CHECK(radix_scan(t, S(""), S("web/b/c"), NULL, 0, 2, RADIX_PACKED, &b) == 2); /* seek */
    CHECK(rd32(b.data) == 7 && memcmp(b.data + 16, "web/b/c", 7) == 0);
    radix_buf_free(&b);
    radix_release(t);
    radix_release(t0);
}

/* Runs a scripted workload with the n-th allocation of each step failing, for
 * every n until the step succeeds: a failed step must leave the content as
 * it was, and nothing may leak. */
static void test_failing_allocator(void)
{
    model m = {NULL, 0, 0};
    radix_node *t = radix_empty();
    unsigned long failures = 0;
    for (int round = 0; round < 60; round++) {
        radix_txn *x = NULL;
        for (long n = 0; !x; n++) {
            radix_fail_alloc_after(n);
            x = radix_txn_begin(t);
        }
        radix_fail_alloc_after(-1);
        for (int step = 0; step < 6; step++) {
            char key[64], val[300];
            int klen = snprintf(key, sizeof key, "svc/%d/%s/k%d", (round * 7 + step) % 5,
                                step % 2 ? "cfg" : "data", (round + step * 3) % 11);
            size_t vlen = (size_t)(round * 37 + step) % 300;
            memset(val, 'a' + step, vlen);
            int kind = (round + step) % 7;
            for (long n = 0;; n++) {
                radix_fail_alloc_after(n);
                long r;
                if (kind < 4)
                    r = radix_txn_insert(x, key, (size_t)klen, val, vlen, (uint64_t)round * 10 + step);
                else if (kind < 6)
                    r = radix_txn_delete(x, key, (size_t)klen);
                else
                    r = radix_txn_delete_prefix(x, key, 6);
                radix_fail_alloc_after(-1);
                if (r == -1) {
                    failures++;
                    check_against(x->root, &m);
                    continue;
                }
                if (kind < 4)
                    model_insert(&m, key, (size_t)klen, val, vlen, (uint64_t)round * 10 + step);
                else if (kind < 6)
                    model_delete(&m, key, (size_t)klen);
                else
                    model_delete_prefix(&m, key, 6);
                check_against(x->root, &m);
                break;
            }
        }
        radix_node *t2 = commit(x);
        radix_txn_free(x);
        radix_release(t);
        t = t2;
        for (long n = 0;; n++) { /* listings fail cleanly too */
            radix_buf b = {0};
            radix_fail_alloc_after(n);
            long r = radix_scan(t, S("svc/"), S(""), S("/"), 0, RADIX_PICKLE_KEYS, &b);
            radix_fail_alloc_after(-1);
            radix_buf_free(&b);
            if (r >= 0)
                break;
        }
    }
    radix_release(t);
    model_free(&m);
    CHECK(failures > 100);
    printf("failing allocator: %lu failed allocations, each left the tree as it was\n",
           failures);
}

static void test_memory(void)
{
    size_t before = radix_bytes_allocated();
    radix_node *t0 = radix_empty();
    radix_txn *x = radix_txn_begin(t0);
    char key[64], val[100];
    memset(val, 'v', sizeof val);
    size_t keybytes = 0, n = 0;
    for (int s = 0; s < 100; s++) {
        for (int k = 0; k < 100; k++) {
            int klen = snprintf(key, sizeof key, "service/web-%d/config/key-%d", s, k);
            radix_txn_insert(x, key, (size_t)klen, val, sizeof val, (uint64_t)n + 1);
            keybytes += (size_t)klen;
            n++;
        }
    }
    radix_node *t = commit(x);
    radix_txn_free(x);
    radix_release(t0);
    size_t bytes = radix_bytes_allocated() - before;
    double per = ((double)bytes - (double)keybytes - (double)(n * sizeof val)) / (double)n;
    printf("memory: %zu entries, %.1f bytes per entry beyond key and value bytes, %llu nodes\n",
           n, per, (unsigned long long)radix_node_count(t));
    CHECK(per <= 48);
    radix_release(t);
}

/* The bulk loader takes a packed listing back: the copy lists byte for byte the
 * same; a malformed page names its bad record and inserts nothing. */
static void test_insert_packed(void)
{
    radix_node *t0 = radix_empty();
    radix_txn *x = radix_txn_begin(t0);
    char key[32], val[300];
    for (int i = 0; i < 2000; i++) {
        int klen = snprintf(key, sizeof key, "svc/%d/k%c%d", i % 37, 0, i);
        memset(val, 'a' + i % 26, sizeof val);
        CHECK(radix_txn_insert(x, key, (size_t)klen, val, (size_t)(i % 300), (uint64_t)i * 7) == 1);
    }
    CHECK(radix_txn_insert(x, S(""), S(""), 0) == 1);
    radix_node *t1 = commit(x);
    radix_txn_free(x);
    radix_buf page = {0}, again = {0};
    CHECK(radix_scan(t1, S(""), S(""), NULL, 0, 0, RADIX_PACKED, &page) == 2001);

    x = radix_txn_begin(t0);
    size_t bad_at = 99;
    CHECK(radix_txn_insert_packed(x, page.data, page.len, &bad_at) == 2001 && bad_at == 99);
    CHECK(radix_txn_insert_packed(x, page.data, 0, &bad_at) == 0); /* an empty page */
    radix_node *t2 = commit(x);
    CHECK(radix_txn_insert_packed(x, page.data, page.len, &bad_at) == -4);
    radix_txn_free(x);
    CHECK(radix_check(t2) == 0 && radix_len(t2) == 2001);
    CHECK(radix_max_index(t2, S("")) == radix_max_index(t1, S("")));
    CHECK(radix_scan(t2, S(""), S(""), NULL, 0, 0, RADIX_PACKED, &again) == 2001);
    CHECK(again.len == page.len && memcmp(again.data, page.data, page.len) == 0);

    /* Cut inside the second record's header, then inside its body. */
    size_t second = 16 + rd32(page.data) + rd32(page.data + 4);
    x = radix_txn_begin(t1);
    CHECK(radix_txn_insert_packed(x, page.data, second + 5, &bad_at) == -2 && bad_at == second);
    CHECK(radix_txn_insert_packed(x, page.data, second + 17, &bad_at) == -3 && bad_at == second);
    CHECK(x->root == t1 && x->nfired == 0); /* nothing inserted, nothing copied */
    /* A later record of the same key replaces the earlier one, as one by one. */
    char twice[2 * 18] = {0};
    for (int i = 0; i < 2; i++) {
        char *r = twice + 18 * i;
        r[0] = 1, r[4] = 1, r[8] = (char)(5 + i), r[16] = 'k', r[17] = (char)('0' + i);
    }
    CHECK(radix_txn_insert_packed(x, twice, sizeof twice, &bad_at) == 2);
    radix_node *t3 = commit(x);
    radix_txn_free(x);
    const radix_leaf *l = radix_get(t3, S("k"));
    CHECK(l && l->vlen == 1 && l->data[0] == '1' && l->index == 6 && radix_len(t3) == 2002);

    radix_buf_free(&page);
    radix_buf_free(&again);
    radix_release(t0);
    radix_release(t1);
    radix_release(t2);
    radix_release(t3);
}

int main(void)
{
    test_empty();
    test_basic_and_versions();
    test_watches();
    test_list_keys();
    test_insert_packed();
    test_failing_allocator();
    test_memory();
    CHECK(radix_bytes_allocated() == 0 && radix_blocks_allocated() == 0);
    printf("test_radix: ok\n");
    return 0;
}
