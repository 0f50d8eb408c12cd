/* testutil.h -- shared by the transcoder's test driver and fuzz target: a growable byte buffer,
 * builders for packed listings and stored entries (msgpack, in any of its encodings), and the
 * two-pass render the Python wrapper does, checked harder (exact-size heap buffers, so ASan sees
 * any write past the measured size, and a one-byte-short buffer that must be refused). */
#ifndef PYKVS_TRANSCODE_TESTUTIL_H
#define PYKVS_TRANSCODE_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transcode.h"
#include "../check.h"


typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void bytes_put(bytes *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->p = realloc(b->p, b->cap);
        CHECK(b->p != NULL);
    }
    if (n != 0)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0; /* keeps text NUL-terminated for printing */
}

static void bytes_byte(bytes *b, uint8_t v)
{
    bytes_put(b, &v, 1);
}

static void bytes_free(bytes *b)
{
    free(b->p);
    *b = (bytes){NULL, 0, 0};
}

static void put_le(bytes *b, uint64_t v, size_t width)
{
    for (size_t i = 0; i < width; i++)
        bytes_byte(b, (uint8_t)(v >> (8 * i)));
}

static void put_be(bytes *b, uint64_t v, size_t width)
{
    for (size_t i = width; i-- > 0;)
        bytes_byte(b, (uint8_t)(v >> (8 * i)));
}

/* One record of a packed listing. */
static void add_record(bytes *b, const void *key, size_t key_len, const bytes *entry, uint64_t index)
{
    put_le(b, key_len, 4);
    put_le(b, entry->n, 4);
    put_le(b, index, 8);
    bytes_put(b, key, key_len);
    bytes_put(b, entry->p, entry->n);
}

/* One key of a packed key list. */
static void add_key(bytes *b, const void *key, size_t key_len)
{
    put_le(b, key_len, 4);
    bytes_put(b, key, key_len);
}

/* msgpack writers; `form` picks among the valid encodings (0 = the smallest). */
static void mp_uint(bytes *b, uint64_t v, unsigned form)
{
    /* uint 8..64, then int 8..64 (non-negative values only use their low bits - 1). */
    static const uint8_t tags[] = {0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3};
    static const unsigned bits[] = {8, 16, 32, 64, 7, 15, 31, 63};
    form %= 9;
    if (form == 0 && v <= 0x7f) {
        bytes_byte(b, (uint8_t)v);
        return;
    }
    size_t i = form == 0 ? 0 : form - 1;
    if (form == 0 || (bits[i] < 64 && v >> bits[i] != 0))
        for (i = 0; i < 3 && v >> bits[i] != 0; i++) /* the smallest uint that holds v */
            ;
    bytes_byte(b, tags[i]);
    put_be(b, v, (bits[i] + 1) / 8);
}

static void mp_sized(bytes *b, const uint8_t tags[3], const void *s, size_t n, unsigned form)
{
    static const size_t widths[] = {1, 2, 4};
    form %= 3;
    while (form < 2 && n >> (8 * widths[form]) != 0)
        form++;
    bytes_byte(b, tags[form]);
    put_be(b, n, widths[form]);
    bytes_put(b, s, n);
}

static void mp_bin(bytes *b, const void *s, size_t n, unsigned form)
{
    static const uint8_t tags[3] = {0xc4, 0xc5, 0xc6};
    mp_sized(b, tags, s, n, form);
}

/* A session: NULL is nil; form 3 is fixstr when short enough. */
static void mp_str_or_nil(bytes *b, const void *s, size_t n, unsigned form)
{
    static const uint8_t tags[3] = {0xd9, 0xda, 0xdb};
    if (s == NULL) {
        bytes_byte(b, 0xc0);
        return;
    }
    if (form % 4 == 3 && n < 32) {
        bytes_byte(b, (uint8_t)(0xa0 | n));
        bytes_put(b, s, n);
        return;
    }
    mp_sized(b, tags, s, n, form);
}

static void mp_array6(bytes *b, unsigned form)
{
    static const uint8_t forms[3][5] = {{0x96}, {0xdc, 0, 6}, {0xdd, 0, 0, 0, 6}};
    static const size_t sizes[3] = {1, 3, 5};
    bytes_put(b, forms[form % 3], sizes[form % 3]);
}

typedef struct {
    const uint8_t *value;
    size_t value_len;
    uint64_t flags, create_index, modify_index, lock_index;
    const uint8_t *session; /* NULL: nil */
    size_t session_len;
} test_entry;

/* A stored entry; `forms` picks encodings (0: the canonical, smallest ones). */
static void mp_entry(bytes *b, const test_entry *e, uint64_t forms)
{
    mp_array6(b, (unsigned)(forms & 3));
    mp_bin(b, e->value, e->value_len, (unsigned)(forms >> 2 & 3));
    mp_uint(b, e->flags, (unsigned)(forms >> 4 & 15));
    mp_uint(b, e->create_index, (unsigned)(forms >> 8 & 15));
    mp_uint(b, e->modify_index, (unsigned)(forms >> 12 & 15));
    mp_uint(b, e->lock_index, (unsigned)(forms >> 16 & 15));
    mp_str_or_nil(b, e->session, e->session_len, (unsigned)(forms >> 20 & 3));
}

typedef int (*listing_fn)(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                          size_t *out_len, transcode_error *err);

/* Renders `in` with fn as the wrapper does (measure, then write into exactly that much heap),
 * checking that both passes agree and that one byte less is refused without a write past it.
 * Returns the status; on success *out holds the output (free with bytes_free). */
static int render_checked(listing_fn fn, const uint8_t *in, size_t in_len, bytes *out,
                          transcode_error *err)
{
    size_t measured = (size_t)-1, written = (size_t)-1;
    int status = fn(in, in_len, NULL, 0, &measured, err);
    CHECK(status == err->status);
    if (status != TRANSCODE_OK) {
        CHECK(measured == (size_t)-1);
        return status;
    }
    uint8_t *buf = malloc(measured ? measured : 1);
    CHECK(buf != NULL);
    CHECK(fn(in, in_len, buf, measured, &written, err) == TRANSCODE_OK);
    CHECK(written == measured);
    *out = (bytes){NULL, 0, 0};
    bytes_put(out, buf, written);
    if (measured > 0) {
        size_t short_len = (size_t)-1;
        CHECK(fn(in, in_len, buf, measured - 1, &short_len, err) == TRANSCODE_ERR_OUTPUT_SPACE);
        CHECK(short_len == (size_t)-1);
    }
    free(buf);
    return TRANSCODE_OK;
}

#endif
