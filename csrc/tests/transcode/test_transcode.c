/* test_transcode.c -- hand-written cases for csrc/transcode.c: exact output bytes (Go's
 * encoding/json rules, Consul's field order), every error status with where it points, and the
 * measuring/writing contract.  Built with ASan + UBSan by the Makefile beside it; exits 0 when
 * every check holds, aborts at the first that does not. */
#include "testutil.h"

/* transcode_kv_entry_json in the listing shape: `in` is one packed record (key and entry). */
static int entry_as_listing(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                            size_t *out_len, transcode_error *err)
{
    CHECK(in_len >= 16);
    size_t key_len = (size_t)in[0] | (size_t)in[1] << 8 | (size_t)in[2] << 16;
    return transcode_kv_entry_json(in + 16, key_len, in + 16 + key_len, in_len - 16 - key_len,
                                   out, cap, out_len, err);
}

static void expect_output(listing_fn fn, const bytes *in, const void *want, size_t want_len)
{
    bytes out;
    transcode_error err;
    int status = render_checked(fn, in->p, in->n, &out, &err);
    if (status != TRANSCODE_OK || out.n != want_len || memcmp(out.p, want, want_len) != 0) {
        fprintf(stderr, "status %d\n got: %s\nwant: %.*s\n", status,
                status == TRANSCODE_OK ? (char *)out.p : "", (int)want_len, (const char *)want);
        abort();
    }
    bytes_free(&out);
}

#define EXPECT_JSON(fn, in, want) expect_output((fn), (in), (want), strlen(want))

static void expect_error(listing_fn fn, const bytes *in, int status, int field, size_t record,
                         size_t offset)
{
    bytes out;
    transcode_error err;
    int got = render_checked(fn, in->p, in->n, &out, &err);
    if (got != status || err.field != field || err.record != record || err.offset != offset) {
        fprintf(stderr, "got status %d field %d record %zu offset %zu\n", got, err.field,
                err.record, err.offset);
        fprintf(stderr, "want status %d field %d record %zu offset %zu\n", status, field, record,
                offset);
        abort();
    }
}

static const test_entry PLAIN = {(const uint8_t *)"bar", 3, 0, 5, 7, 0, NULL, 0};

/* A listing of one key and one entry, in the encodings `forms` picks. */
static bytes one_record(const char *key, size_t key_len, const test_entry *e, uint64_t forms)
{
    bytes entry = {0}, listing = {0};
    mp_entry(&entry, e, forms);
    add_record(&listing, key, key_len, &entry, e->modify_index);
    bytes_free(&entry);
    return listing;
}

static void test_documented_example(void)
{
    bytes in = one_record("a/b", 3, &PLAIN, 0);
    const char *want =
        "[{\"LockIndex\":0,\"Key\":\"a/b\",\"Flags\":0,\"Value\":\"YmFy\","
        "\"CreateIndex\":5,\"ModifyIndex\":7}]";
    EXPECT_JSON(transcode_kv_json, &in, want);
    EXPECT_JSON(entry_as_listing, &in, want);
    bytes_free(&in);
}

static void test_key_escapes(void)
{
    static const struct {
        const char *key;
        size_t key_len;
        const char *json;
    } cases[] = {
        {"q\"b\\", 4, "\"q\\\"b\\\\\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\0\x01\x0b\x1f\x7f", 5, "\"\\u0000\\u0001\\u000b\\u001f\x7f\""},
        {"<a>&", 4, "\"\\u003ca\\u003e\\u0026\""},
        {"\xc3\xa9\xf0\x9f\x99\x82", 6, "\"\xc3\xa9\xf0\x9f\x99\x82\""},
        {"\xe2\x80\xa8\xe2\x80\xa9\xe2\x80\xa7", 9, "\"\\u2028\\u2029\xe2\x80\xa7\""},
        {"\xff", 1, "\"\\ufffd\""},
        {"a\xe2\x82", 3, "\"a\\ufffd\\ufffd\""},
        {"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
        {"\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
        {"\xef\xbf\xbd", 3, "\"\xef\xbf\xbd\""},
        {"", 0, "\"\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes in = one_record(cases[i].key, cases[i].key_len, &PLAIN, 0);
        bytes want = {0}, keys = {0};
        bytes_put(&want, "[{\"LockIndex\":0,\"Key\":", 22);
        bytes_put(&want, cases[i].json, strlen(cases[i].json));
        bytes_put(&want, ",\"Flags\":0,\"Value\":\"YmFy\",\"CreateIndex\":5,\"ModifyIndex\":7}]",
                  59);
        expect_output(transcode_kv_json, &in, want.p, want.n);

        add_key(&keys, cases[i].key, cases[i].key_len);
        add_key(&keys, "k", 1);
        bytes_free(&want);
        bytes_put(&want, "[", 1);
        bytes_put(&want, cases[i].json, strlen(cases[i].json));
        bytes_put(&want, ",\"k\"]", 5);
        expect_output(transcode_keys_json, &keys, want.p, want.n);
        bytes_free(&in);
        bytes_free(&want);
        bytes_free(&keys);
    }
}

static void test_all_fields_and_encodings(void)
{
    const test_entry e = {(const uint8_t *)"\0", 1, UINT64_MAX, 1, UINT64_MAX, 3,
                          (const uint8_t *)"se<s>", 5};
    const test_entry empty_session = {(const uint8_t *)"\xfb\xff", 2, 42, 0, 0, 0,
                                      (const uint8_t *)"", 0};
    const char *want_e =
        "[{\"LockIndex\":3,\"Key\":\"k\",\"Flags\":18446744073709551615,\"Value\":\"AA==\","
        "\"Session\":\"se\\u003cs\\u003e\",\"CreateIndex\":1,\"ModifyIndex\":18446744073709551615}]";
    const char *want_empty =
        "[{\"LockIndex\":0,\"Key\":\"k\",\"Flags\":42,\"Value\":\"+/8=\",\"CreateIndex\":0,"
        "\"ModifyIndex\":0}]";
    /* Every array, bin, int and str form of the same entries renders the same. */
    for (uint64_t forms = 0; forms < 4096; forms += 7) {
        uint64_t spread = (forms & 3) | (forms >> 2 & 3) << 2 | (forms >> 4 & 15) << 4 |
                          (forms >> 3 & 15) << 8 | (forms >> 5 & 15) << 12 |
                          (forms >> 6 & 15) << 16 | (forms >> 8 & 3) << 20;
        bytes in = one_record("k", 1, &e, spread);
        EXPECT_JSON(transcode_kv_json, &in, want_e);
        EXPECT_JSON(entry_as_listing, &in, want_e);
        bytes_free(&in);
        in = one_record("k", 1, &empty_session, spread);
        EXPECT_JSON(transcode_kv_json, &in, want_empty);
        bytes_free(&in);
    }
}

static void test_two_records_and_empty_inputs(void)
{
    const test_entry empty_value = {(const uint8_t *)"", 0, 1, 2, 3, 4, NULL, 0};
    bytes in = one_record("a", 1, &PLAIN, 0);
    bytes second = one_record("b", 1, &empty_value, 0);
    bytes_put(&in, second.p, second.n);
    EXPECT_JSON(transcode_kv_json, &in,
                "[{\"LockIndex\":0,\"Key\":\"a\",\"Flags\":0,\"Value\":\"YmFy\",\"CreateIndex\":5,"
                "\"ModifyIndex\":7},{\"LockIndex\":4,\"Key\":\"b\",\"Flags\":1,\"Value\":null,"
                "\"CreateIndex\":2,\"ModifyIndex\":3}]");
    bytes_free(&in);
    bytes_free(&second);

    bytes none = {0};
    EXPECT_JSON(transcode_kv_json, &none, "[]");
    EXPECT_JSON(transcode_keys_json, &none, "[]");
    expect_output(transcode_kv_msgpack, &none, "\x90", 1);
    size_t len = 0;
    CHECK(transcode_kv_json(NULL, 0, NULL, 0, &len, NULL) == TRANSCODE_OK && len == 2);
}

static void test_msgpack_reply(void)
{
    bytes entry = {0}, in = {0}, want = {0};
    mp_entry(&entry, &PLAIN, 0x155555); /* non-canonical forms: embedded untouched */
    add_record(&in, "a/b", 3, &entry, 7);
    add_record(&in, "c", 1, &entry, 7);
    bytes_put(&want, "\x92\x92\xc4\x03" "a/b", 7);
    bytes_put(&want, entry.p, entry.n);
    bytes_put(&want, "\x92\xc4\x01" "c", 4);
    bytes_put(&want, entry.p, entry.n);
    expect_output(transcode_kv_msgpack, &in, want.p, want.n);
    bytes_free(&entry);
    bytes_free(&in);
    bytes_free(&want);

    /* 16 records take an array 16 header; a 300-byte key a bin 16 header. */
    char key[300];
    memset(key, 'k', sizeof key);
    mp_entry(&entry, &PLAIN, 0);
    for (int i = 0; i < 16; i++)
        add_record(&in, key, sizeof key, &entry, 1);
    bytes out;
    transcode_error err;
    CHECK(render_checked(transcode_kv_msgpack, in.p, in.n, &out, &err) == TRANSCODE_OK);
    CHECK(out.n == 3 + 16 * (1 + 3 + sizeof key + entry.n));
    CHECK(memcmp(out.p, "\xdc\x00\x10\x92\xc5\x01\x2c", 7) == 0);
    bytes_free(&out);
    bytes_free(&entry);
    bytes_free(&in);
}

/* A listing whose record 1 (after a good record 0) has the stored entry given in raw bytes. */
static bytes bad_second(const char *raw, size_t raw_len, size_t *offset)
{
    bytes in = one_record("first", 5, &PLAIN, 0), entry = {0};
    *offset = in.n;
    bytes_put(&entry, raw, raw_len);
    add_record(&in, "bad", 3, &entry, 1);
    bytes_free(&entry);
    return in;
}

static void test_bad_entries(void)
{
    static const struct {
        const char *raw;
        size_t raw_len;
        int status, field;
    } cases[] = {
        {"", 0, TRANSCODE_ERR_NOT_ENTRY, TRANSCODE_FIELD_NONE},
        {"\x95\xc4\x00\0\0\0\0", 7, TRANSCODE_ERR_NOT_ENTRY, TRANSCODE_FIELD_NONE},
        {"\xdc\x00", 2, TRANSCODE_ERR_NOT_ENTRY, TRANSCODE_FIELD_NONE},
        {"\xdd\x00\x00\x00\x07", 5, TRANSCODE_ERR_NOT_ENTRY, TRANSCODE_FIELD_NONE},
        {"\x81\x00\x00", 3, TRANSCODE_ERR_NOT_ENTRY, TRANSCODE_FIELD_NONE},
        {"\x96\xa1v\0\0\0\0\xc0", 8, TRANSCODE_ERR_FIELD_TYPE, TRANSCODE_FIELD_VALUE},
        {"\x96\xc0\0\0\0\0\xc0", 7, TRANSCODE_ERR_FIELD_TYPE, TRANSCODE_FIELD_VALUE},
        {"\x96\xc4\x00\xff\0\0\0\xc0", 8, TRANSCODE_ERR_FIELD_TYPE, TRANSCODE_FIELD_FLAGS},
        {"\x96\xc4\x00\0\xd0\x80\0\0\xc0", 9, TRANSCODE_ERR_FIELD_TYPE,
         TRANSCODE_FIELD_CREATE_INDEX},
        {"\x96\xc4\x00\0\0\xd3\x80\0\0\0\0\0\0\0\0\xc0", 16, TRANSCODE_ERR_FIELD_TYPE,
         TRANSCODE_FIELD_MODIFY_INDEX},
        {"\x96\xc4\x00\0\0\0\xc3\xc0", 8, TRANSCODE_ERR_FIELD_TYPE, TRANSCODE_FIELD_LOCK_INDEX},
        {"\x96\xc4\x00\0\0\0\xca\0\0\0\0\xc0", 12, TRANSCODE_ERR_FIELD_TYPE,
         TRANSCODE_FIELD_LOCK_INDEX},
        {"\x96\xc4\x00\0\0\0\0\xc4\x00", 9, TRANSCODE_ERR_FIELD_TYPE, TRANSCODE_FIELD_SESSION},
        {"\x96\xc4\x00\0\0\0\0\x01", 8, TRANSCODE_ERR_FIELD_TYPE, TRANSCODE_FIELD_SESSION},
        {"\x96", 1, TRANSCODE_ERR_FIELD_TRUNCATED, TRANSCODE_FIELD_VALUE},
        {"\x96\xc6\x00\x00", 4, TRANSCODE_ERR_FIELD_TRUNCATED, TRANSCODE_FIELD_VALUE},
        {"\x96\xc4\x05v", 4, TRANSCODE_ERR_FIELD_TRUNCATED, TRANSCODE_FIELD_VALUE},
        {"\x96\xc4\x00\xcf\0\0", 6, TRANSCODE_ERR_FIELD_TRUNCATED, TRANSCODE_FIELD_FLAGS},
        {"\x96\xc4\x00\0\0\0", 6, TRANSCODE_ERR_FIELD_TRUNCATED, TRANSCODE_FIELD_LOCK_INDEX},
        {"\x96\xc4\x00\0\0\0\0", 7, TRANSCODE_ERR_FIELD_TRUNCATED, TRANSCODE_FIELD_SESSION},
        {"\x96\xc4\x00\0\0\0\0\xdb\0\0", 10, TRANSCODE_ERR_FIELD_TRUNCATED,
         TRANSCODE_FIELD_SESSION},
        {"\x96\xc4\x00\0\0\0\0\xa3xy", 10, TRANSCODE_ERR_FIELD_TRUNCATED,
         TRANSCODE_FIELD_SESSION},
        {"\x96\xc4\x00\0\0\0\0\xc0\xc0", 9, TRANSCODE_ERR_TRAILING_BYTES, TRANSCODE_FIELD_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t offset;
        bytes in = bad_second(cases[i].raw, cases[i].raw_len, &offset);
        expect_error(transcode_kv_json, &in, cases[i].status, cases[i].field, 1, offset);
        expect_error(transcode_kv_msgpack, &in, cases[i].status, cases[i].field, 1, offset);
        bytes single = {0};
        bytes_put(&single, in.p + offset, in.n - offset);
        expect_error(entry_as_listing, &single, cases[i].status, cases[i].field, 0, 0);
        bytes_free(&single);
        bytes_free(&in);
    }
}

static void test_truncated_listings(void)
{
    bytes in = one_record("a", 1, &PLAIN, 0);
    size_t first = in.n;
    bytes second = one_record("bc", 2, &PLAIN, 0);
    bytes_put(&in, second.p, second.n);
    for (size_t cut = 1; cut < in.n; cut++) {
        if (cut == first)
            continue;
        size_t record = cut < first ? 0 : 1, start = cut < first ? 0 : first;
        int status = cut - start < 16 ? TRANSCODE_ERR_RECORD_HEADER : TRANSCODE_ERR_RECORD_BODY;
        bytes part = {0};
        bytes_put(&part, in.p, cut);
        expect_error(transcode_kv_json, &part, status, TRANSCODE_FIELD_NONE, record, start);
        expect_error(transcode_kv_msgpack, &part, status, TRANSCODE_FIELD_NONE, record, start);
        bytes_free(&part);
    }
    /* Lengths near 2^32 must not wrap. */
    bytes huge = {0};
    put_le(&huge, UINT32_MAX, 4);
    put_le(&huge, UINT32_MAX, 4);
    put_le(&huge, 0, 8);
    expect_error(transcode_kv_json, &huge, TRANSCODE_ERR_RECORD_BODY, TRANSCODE_FIELD_NONE, 0, 0);
    bytes keys = {0};
    add_key(&keys, "abc", 3);
    put_le(&keys, 3, 4);
    bytes_put(&keys, "ab", 2);
    expect_error(transcode_keys_json, &keys, TRANSCODE_ERR_RECORD_BODY, TRANSCODE_FIELD_NONE, 1, 7);
    keys.n = 9;
    expect_error(transcode_keys_json, &keys, TRANSCODE_ERR_RECORD_HEADER, TRANSCODE_FIELD_NONE, 1,
                 7);
    bytes_free(&keys);
    bytes_free(&huge);
    bytes_free(&second);
    bytes_free(&in);
}

static void test_large_value_base64(void)
{
    static uint8_t value[70000];
    for (size_t i = 0; i < sizeof value; i++)
        value[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 0; n < 8; n++) {
        test_entry e = {value, sizeof value - n, 0, 1, 1, 0, NULL, 0};
        bytes in = one_record("v", 1, &e, n);
        bytes out;
        transcode_error err;
        CHECK(render_checked(transcode_kv_json, in.p, in.n, &out, &err) == TRANSCODE_OK);
        size_t b64 = 4 * ((e.value_len + 2) / 3);
        const char *value_at = strstr((const char *)out.p, "\"Value\":\"") + 9;
        CHECK(value_at[b64] == '"');
        CHECK(memcmp(value_at, "AwoRGB8mLTQ7", 12) == 0); /* bytes 03 0a 11 18 1f 26 2d 34 3b */
        size_t pad = (3 - e.value_len % 3) % 3;
        for (size_t i = 0; i < pad; i++)
            CHECK(value_at[b64 - 1 - i] == '=');
        CHECK(value_at[b64 - 1 - pad] != '=');
        bytes_free(&out);
        bytes_free(&in);
    }
}

int main(void)
{
    test_documented_example();
    test_key_escapes();
    test_all_fields_and_encodings();
    test_two_records_and_empty_inputs();
    test_msgpack_reply();
    test_bad_entries();
    test_truncated_listings();
    test_large_value_base64();
    puts("test_transcode: all checks passed");
    return 0;
}
