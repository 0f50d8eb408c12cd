/* fuzz_transcode.c -- fuzz target for csrc/transcode.c.
 *
 * Two kinds of rounds:
 *   model    random valid listings (keys rich in bytes that need escaping, valid and broken
 *            UTF-8, every msgpack encoding of the entry) rendered by the transcoder and by a
 *            naive reference written here (code points decoded arithmetically, snprintf
 *            escapes, a bit-at-a-time base64): the outputs must be equal byte for byte.
 *   garbage  random bytes and mutated valid listings through every entry point: each call
 *            must either be refused with a status or give output whose two passes agree.
 *
 * Standalone (gcc): `fuzz_transcode SECONDS [SEED]` runs rounds until the time is up.
 * With clang -fsanitize=fuzzer -DUSE_LIBFUZZER, LLVMFuzzerTestOneInput is the garbage round.
 */
#define _POSIX_C_SOURCE 199309L
#include <inttypes.h>
#include <time.h>

#include "testutil.h"

/* ---- a seeded PRNG (xorshift64*) ------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rng_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rng() % n);
}

/* ---- the naive reference renderer ------------------------------------------------------- */

/* Decodes one code point; returns its length, or 1 with *cp = UINT32_MAX for a bad byte. */
static size_t ref_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    static const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t length;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xe0) == 0xc0)
        length = 2;
    else if ((s[0] & 0xf0) == 0xe0)
        length = 3;
    else if ((s[0] & 0xf8) == 0xf0)
        length = 4;
    else
        goto bad;
    if (n < length)
        goto bad;
    *cp = s[0] & (0x7f >> length);
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xc0) != 0x80)
            goto bad;
        *cp = *cp << 6 | (s[i] & 0x3f);
    }
    if (*cp < min_for_length[length] || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        goto bad;
    return length;
bad:
    *cp = UINT32_MAX;
    return 1;
}

static void ref_string(bytes *o, const uint8_t *s, size_t n)
{
    bytes_byte(o, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t length = ref_decode(s + i, n - i, &cp);
        char tmp[16];
        const char *named = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\b' ? "\\b"
                          : cp == '\f' ? "\\f" : cp == '\n' ? "\\n" : cp == '\r' ? "\\r"
                          : cp == '\t' ? "\\t" : NULL;
        if (cp == UINT32_MAX)
            bytes_put(o, "\\ufffd", 6);
        else if (named != NULL)
            bytes_put(o, named, 2);
        else if (cp < 0x20 || cp == '<' || cp == '>' || cp == '&' || cp == 0x2028 || cp == 0x2029)
            bytes_put(o, tmp, (size_t)snprintf(tmp, sizeof tmp, "\\u%04" PRIx32, cp));
        else
            bytes_put(o, s + i, length);
        i += length;
    }
    bytes_byte(o, '"');
}

static void ref_base64(bytes *o, const uint8_t *s, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | s[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            bytes_byte(o, (uint8_t)alphabet[(acc >> bits) & 63]);
            chars++;
        }
    }
    if (bits > 0) {
        bytes_byte(o, (uint8_t)alphabet[(acc << (6 - bits)) & 63]);
        chars++;
    }
    for (; chars % 4 != 0; chars++)
        bytes_byte(o, '=');
}

static void ref_uint(bytes *o, const char *name, uint64_t v)
{
    char tmp[64];
    bytes_put(o, tmp, (size_t)snprintf(tmp, sizeof tmp, "%s%" PRIu64, name, v));
}

static void ref_object(bytes *o, const uint8_t *key, size_t key_len, const test_entry *e)
{
    ref_uint(o, "{\"LockIndex\":", e->lock_index);
    bytes_put(o, ",\"Key\":", 7);
    ref_string(o, key, key_len);
    ref_uint(o, ",\"Flags\":", e->flags);
    bytes_put(o, ",\"Value\":", 9);
    if (e->value_len == 0) {
        bytes_put(o, "null", 4);
    } else {
        bytes_byte(o, '"');
        ref_base64(o, e->value, e->value_len);
        bytes_byte(o, '"');
    }
    if (e->session != NULL && e->session_len != 0) {
        bytes_put(o, ",\"Session\":", 11);
        ref_string(o, e->session, e->session_len);
    }
    ref_uint(o, ",\"CreateIndex\":", e->create_index);
    ref_uint(o, ",\"ModifyIndex\":", e->modify_index);
    bytes_byte(o, '}');
}

/* ---- random valid inputs --------------------------------------------------------------- */

/* Pieces that exercise every branch of the string escaper. */
static const char *const PIECES[] = {
    "a", "/", "key-", "\"", "\\", "<", ">", "&", "\b", "\f", "\n", "\r", "\t", "\x01", "\x1f",
    "\x7f", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x99\x82", "\xe2\x80\xa8", "\xe2\x80\xa9",
    "\xe2\x80\xa7", "\xef\xbf\xbd", "\xff", "\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
    "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xe2\x82", "\xf0\x9f\x99", "\xc3",
};

static void random_text(bytes *b, size_t max_pieces)
{
    size_t pieces = rng_below(max_pieces + 1);
    for (size_t i = 0; i < pieces; i++) {
        if (rng() % 8 == 0)
            bytes_byte(b, (uint8_t)rng()); /* any byte at all */
        else {
            const char *piece = PIECES[rng_below(sizeof PIECES / sizeof PIECES[0])];
            bytes_put(b, piece, strlen(piece));
        }
    }
}

static uint64_t random_number(void)
{
    switch (rng() % 5) {
    case 0: return rng() % 128;
    case 1: return rng() % 70000;
    case 2: return rng() >> (rng() % 64);
    case 3: return UINT64_MAX - rng() % 3;
    default: return rng();
    }
}

typedef struct {
    bytes key, value, session;
    test_entry e;
} model_record;

static void model_record_fill(model_record *r)
{
    random_text(&r->key, 12);
    size_t value_len = rng() % 4 == 0 ? 0 : rng_below(rng() % 16 == 0 ? 70000 : 200);
    for (size_t i = 0; i < value_len; i++)
        bytes_byte(&r->value, (uint8_t)rng());
    int has_session = rng() % 3 != 0;
    if (has_session)
        random_text(&r->session, rng() % 32 == 0 ? 3000 : 8);
    r->e = (test_entry){r->value.p, r->value.n, random_number(), random_number(),
                        random_number(), random_number(),
                        has_session ? (r->session.p ? r->session.p : (const uint8_t *)"") : NULL,
                        r->session.n};
}

static void model_record_free(model_record *r)
{
    bytes_free(&r->key);
    bytes_free(&r->value);
    bytes_free(&r->session);
}

static void expect_equal(const char *what, const bytes *got, const bytes *want)
{
    if (got->n != want->n || memcmp(got->p, want->p, want->n) != 0) {
        fprintf(stderr, "%s differs from the reference (seed state %" PRIu64 ")\n got: %.*s\n"
                "want: %.*s\n", what, rng_state, (int)got->n, (const char *)got->p,
                (int)want->n, (const char *)want->p);
        abort();
    }
}

static int garbage_round(const uint8_t *data, size_t size);

static void model_round(void)
{
    enum { MAX_RECORDS = 24 };
    model_record records[MAX_RECORDS];
    size_t count = rng_below(MAX_RECORDS + 1);
    bytes listing = {0}, keys = {0}, json_want = {0}, keys_want = {0}, msgpack_want = {0};
    bytes_byte(&json_want, '[');
    bytes_byte(&keys_want, '[');
    bytes_byte(&msgpack_want, (uint8_t)(count <= 15 ? 0x90 | count : 0xdc));
    if (count > 15)
        put_be(&msgpack_want, count, 2);
    for (size_t i = 0; i < count; i++) {
        model_record *r = &records[i];
        *r = (model_record){{0}, {0}, {0}, {0}};
        model_record_fill(r);
        bytes entry = {0};
        mp_entry(&entry, &r->e, rng());
        add_record(&listing, r->key.p, r->key.n, &entry, r->e.modify_index);
        add_key(&keys, r->key.p, r->key.n);
        if (i != 0) {
            bytes_byte(&json_want, ',');
            bytes_byte(&keys_want, ',');
        }
        ref_object(&json_want, r->key.p, r->key.n, &r->e);
        ref_string(&keys_want, r->key.p, r->key.n);
        bytes_byte(&msgpack_want, 0x92);
        mp_bin(&msgpack_want, r->key.p, r->key.n, 0);
        bytes_put(&msgpack_want, entry.p, entry.n);

        bytes single = {0}, single_want = {0};
        transcode_error err;
        size_t len = 0;
        CHECK(transcode_kv_entry_json(r->key.p, r->key.n, entry.p, entry.n, NULL, 0, &len, &err)
              == TRANSCODE_OK);
        single.p = malloc(len);
        CHECK(single.p != NULL);
        CHECK(transcode_kv_entry_json(r->key.p, r->key.n, entry.p, entry.n, single.p, len,
                                      &single.n, &err) == TRANSCODE_OK);
        bytes_byte(&single_want, '[');
        ref_object(&single_want, r->key.p, r->key.n, &r->e);
        bytes_byte(&single_want, ']');
        expect_equal("transcode_kv_entry_json", &single, &single_want);
        bytes_free(&single);
        bytes_free(&single_want);
        bytes_free(&entry);
    }
    bytes_byte(&json_want, ']');
    bytes_byte(&keys_want, ']');

    bytes got;
    transcode_error err;
    CHECK(render_checked(transcode_kv_json, listing.p, listing.n, &got, &err) == TRANSCODE_OK);
    expect_equal("transcode_kv_json", &got, &json_want);
    bytes_free(&got);
    CHECK(render_checked(transcode_keys_json, keys.p, keys.n, &got, &err) == TRANSCODE_OK);
    expect_equal("transcode_keys_json", &got, &keys_want);
    bytes_free(&got);
    CHECK(render_checked(transcode_kv_msgpack, listing.p, listing.n, &got, &err) ==
          TRANSCODE_OK);
    expect_equal("transcode_kv_msgpack", &got, &msgpack_want);
    bytes_free(&got);

    /* The same listing, damaged: flipped bytes, cut short, or with bytes spliced in. */
    for (int m = 0; m < 4 && listing.n > 0; m++) {
        bytes damaged = {0};
        bytes_put(&damaged, listing.p, listing.n);
        size_t at = rng_below(damaged.n);
        switch (rng() % 3) {
        case 0:
            for (size_t k = 0; k < 1 + rng_below(4); k++)
                damaged.p[rng_below(damaged.n)] ^= (uint8_t)(1 + rng_below(255));
            break;
        case 1: damaged.n = at; break;
        default: {
            uint8_t junk[8];
            for (size_t k = 0; k < sizeof junk; k++)
                junk[k] = (uint8_t)rng();
            bytes tail = {0};
            bytes_put(&tail, damaged.p + at, damaged.n - at);
            damaged.n = at;
            bytes_put(&damaged, junk, 1 + rng_below(sizeof junk));
            bytes_put(&damaged, tail.p, tail.n);
            bytes_free(&tail);
        }
        }
        garbage_round(damaged.p, damaged.n);
        bytes_free(&damaged);
    }

    for (size_t i = 0; i < count; i++)
        model_record_free(&records[i]);
    bytes_free(&listing);
    bytes_free(&keys);
    bytes_free(&json_want);
    bytes_free(&keys_want);
    bytes_free(&msgpack_want);
}

/* ---- garbage ------------------------------------------------------------------------- */

static int key_entry_split(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                           size_t *out_len, transcode_error *err)
{
    /* The first byte says how much of the rest is the key; the remainder is the entry. */
    size_t key_len = in_len == 0 ? 0 : in[0] % in_len;
    const uint8_t *key = in_len == 0 ? NULL : in + 1;
    size_t rest = in_len == 0 ? 0 : in_len - 1;
    if (key_len > rest)
        key_len = rest;
    return transcode_kv_entry_json(key, key_len, key == NULL ? NULL : key + key_len,
                                   rest - key_len, out, cap, out_len, err);
}

static int garbage_round(const uint8_t *data, size_t size)
{
    static const listing_fn fns[] = {transcode_kv_json, transcode_keys_json, transcode_kv_msgpack,
                                     key_entry_split};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        bytes out;
        transcode_error err = {-1, -1, 0, 0};
        int status = render_checked(fns[i], data, size, &out, &err);
        if (status != TRANSCODE_OK) {
            CHECK(status > TRANSCODE_OK && status < TRANSCODE_ERR_OUTPUT_SPACE);
            CHECK(err.offset <= size);
            CHECK(err.field >= TRANSCODE_FIELD_NONE && err.field <= TRANSCODE_FIELD_SESSION);
            continue;
        }
        CHECK(out.n >= 1);
        if (fns[i] != transcode_kv_msgpack)
            CHECK(out.p[0] == '[' && out.p[out.n - 1] == ']');
        bytes_free(&out);
    }
    return 0;
}

#ifdef USE_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return garbage_round(data, size);
}
#else
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
    double deadline = now() + seconds;
    uint64_t rounds = 0;
    do {
        model_round();
        uint8_t garbage[256];
        size_t size = rng_below(sizeof garbage + 1);
        for (size_t i = 0; i < size; i++)
            garbage[i] = (uint8_t)(rng() % 4 == 0 ? rng() % 8 : rng()); /* small lengths too */
        garbage_round(garbage, size);
        rounds++;
    } while (now() < deadline);
    printf("fuzz_transcode: %" PRIu64 " rounds, seed %" PRIu64 ", no failure\n", rounds, seed);
    return 0;
}
#endif
