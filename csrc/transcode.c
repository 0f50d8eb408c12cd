/* transcode.c -- stored KV entries -> Consul's JSON bodies and msgpack RPC replies.
 *
 * The layouts and the calling convention are described in transcode.h.  The shape of the code:
 *
 *   input  --next_record / next_key-->  record (key, stored entry)
 *          --parse_entry-->             kv_entry (spans into the input, no copies)
 *          --put_* into an out_t-->     output
 *
 * An out_t either counts (buf == NULL) or writes.  Every put_* first reserves its exact size,
 * so the measuring pass and the writing pass share one code path and cannot disagree; the
 * caller measures, allocates once, then writes.
 *
 * JSON strings follow Go's encoding/json (json.Marshal, which Consul's HTTP layer uses):
 *   "  \  -> \"  \\           \b \f \n \r \t -> themselves escaped (Go >= 1.22)
 *   other bytes < 0x20, and < > &           -> \u00XX, lowercase hex
 *   U+2028, U+2029                          -> \u2028, \u2029
 *   a byte that does not start a valid UTF-8 sequence (utf8.DecodeRune's RuneError, size 1)
 *                                           -> \ufffd, one per byte
 *   everything else, including valid multi-byte UTF-8, is copied as is.
 */
#include "transcode.h"

#include "byteorder.h"

#include <string.h>

/* ---- input spans and little/big-endian loads ------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n;
} span;

static uint64_t load_be(const uint8_t *p, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- the packed listing ---------------------------------------------------------------- */

#define RECORD_HEADER_SIZE 16 /* key_len u32, value_len u32, index u64 */
#define KEY_HEADER_SIZE 4     /* key_len u32 */

typedef struct {
    span key;
    span entry;
    uint64_t index; /* the tree's modify index; the entry's own ModifyIndex is what we render */
} record;

/* Reads the record at in[*off ..] and advances *off past it.  With KEY_HEADER_SIZE it reads an
 * item of a packed key list instead: a bare key, no entry. */
static int next_record(const uint8_t *in, size_t in_len, size_t *off, size_t header_size,
                       record *r)
{
    size_t left = in_len - *off;
    if (left < header_size)
        return TRANSCODE_ERR_RECORD_HEADER;
    const uint8_t *p = in + *off;
    int has_entry = header_size == RECORD_HEADER_SIZE;
    uint64_t key_len = load_le32(p);
    uint64_t entry_len = has_entry ? load_le32(p + 4) : 0;
    r->index = has_entry ? load_le64(p + 8) : 0;
    if (key_len + entry_len > left - header_size)
        return TRANSCODE_ERR_RECORD_BODY;
    r->key = (span){p + header_size, (size_t)key_len};
    r->entry = (span){r->key.p + key_len, (size_t)entry_len};
    *off += header_size + (size_t)(key_len + entry_len);
    return TRANSCODE_OK;
}

/* ---- the stored entry (msgpack) -------------------------------------------------------- */

typedef struct {
    span value;
    uint64_t flags;
    uint64_t create_index;
    uint64_t modify_index;
    uint64_t lock_index;
    span session; /* n == 0 when nil or "": Consul omits it then (json:",omitempty") */
} kv_entry;

typedef struct {
    const uint8_t *p;
    size_t left;
} cursor;

/* Takes `width` bytes as a big-endian number; -1 when fewer are left. */
static int take_be(cursor *c, size_t width, uint64_t *v)
{
    if (c->left < width)
        return -1;
    *v = load_be(c->p, width);
    c->p += width;
    c->left -= width;
    return 0;
}

/* Takes a payload of n bytes as a span. */
static int take_span(cursor *c, uint64_t n, span *s)
{
    if (n > c->left)
        return TRANSCODE_ERR_FIELD_TRUNCATED;
    *s = (span){c->p, (size_t)n};
    c->p += n;
    c->left -= (size_t)n;
    return TRANSCODE_OK;
}

/* msgpack numbers its size variants with consecutive tags for 1, 2, 4 (and 8) byte widths:
 * the width for `tag` in the run first..last, or 0 when the tag is not in that run. */
static size_t tag_width(uint8_t tag, uint8_t first, uint8_t last)
{
    return tag >= first && tag <= last ? (size_t)1 << (tag - first) : 0;
}

/* A non-negative integer in any msgpack int encoding (other encoders may pick signed ones). */
static int take_uint(cursor *c, uint64_t *v)
{
    if (c->left == 0)
        return TRANSCODE_ERR_FIELD_TRUNCATED;
    uint8_t tag = *c->p++;
    c->left--;
    if (tag <= 0x7f) {
        *v = tag;
        return TRANSCODE_OK;
    }
    size_t width = tag_width(tag, 0xcc, 0xcf); /* uint 8..64 */
    size_t signed_width = tag_width(tag, 0xd0, 0xd3); /* int 8..64 */
    if (width == 0 && signed_width == 0)
        return TRANSCODE_ERR_FIELD_TYPE;
    if (take_be(c, width + signed_width, v) != 0)
        return TRANSCODE_ERR_FIELD_TRUNCATED;
    if (signed_width != 0 && (*v >> (8 * signed_width - 1)) != 0)
        return TRANSCODE_ERR_FIELD_TYPE; /* negative */
    return TRANSCODE_OK;
}

/* Value: bin 8/16/32. */
static int take_bin(cursor *c, span *s)
{
    if (c->left == 0)
        return TRANSCODE_ERR_FIELD_TRUNCATED;
    uint8_t tag = *c->p++;
    c->left--;
    size_t width = tag_width(tag, 0xc4, 0xc6);
    uint64_t n;
    if (width == 0)
        return TRANSCODE_ERR_FIELD_TYPE;
    if (take_be(c, width, &n) != 0)
        return TRANSCODE_ERR_FIELD_TRUNCATED;
    return take_span(c, n, s);
}

/* Session: fixstr, str 8/16/32 or nil (an empty span). */
static int take_str_or_nil(cursor *c, span *s)
{
    if (c->left == 0)
        return TRANSCODE_ERR_FIELD_TRUNCATED;
    uint8_t tag = *c->p++;
    c->left--;
    uint64_t n;
    if (tag == 0xc0) {
        *s = (span){c->p, 0};
        return TRANSCODE_OK;
    }
    if ((tag & 0xe0) == 0xa0) {
        n = tag & 0x1f;
    } else {
        size_t width = tag_width(tag, 0xd9, 0xdb);
        if (width == 0)
            return TRANSCODE_ERR_FIELD_TYPE;
        if (take_be(c, width, &n) != 0)
            return TRANSCODE_ERR_FIELD_TRUNCATED;
    }
    return take_span(c, n, s);
}

/* Parses a stored entry that must fill `stored` exactly.  On error *field names the item. */
static int parse_entry(span stored, kv_entry *e, int *field)
{
    cursor c = {stored.p, stored.n};
    uint64_t count = 0;
    int status;

    *field = TRANSCODE_FIELD_NONE;
    if (c.left == 0)
        return TRANSCODE_ERR_NOT_ENTRY;
    uint8_t tag = *c.p++;
    c.left--;
    if ((tag & 0xf0) == 0x90)
        count = tag & 0x0f;
    else if (tag == 0xdc || tag == 0xdd) { /* array 16, array 32 */
        if (take_be(&c, 2 * tag_width(tag, 0xdc, 0xdd), &count) != 0)
            return TRANSCODE_ERR_NOT_ENTRY;
    } else
        return TRANSCODE_ERR_NOT_ENTRY;
    if (count != 6)
        return TRANSCODE_ERR_NOT_ENTRY;

    *field = TRANSCODE_FIELD_VALUE;
    if ((status = take_bin(&c, &e->value)) != TRANSCODE_OK)
        return status;
    /* Flags, CreateIndex, ModifyIndex, LockIndex: stored in this order, field numbers 1..4. */
    uint64_t *numbers[] = {&e->flags, &e->create_index, &e->modify_index, &e->lock_index};
    for (int i = 0; i < 4; i++) {
        *field = TRANSCODE_FIELD_FLAGS + i;
        if ((status = take_uint(&c, numbers[i])) != TRANSCODE_OK)
            return status;
    }
    *field = TRANSCODE_FIELD_SESSION;
    if ((status = take_str_or_nil(&c, &e->session)) != TRANSCODE_OK)
        return status;
    *field = TRANSCODE_FIELD_NONE;
    return c.left == 0 ? TRANSCODE_OK : TRANSCODE_ERR_TRAILING_BYTES;
}

/* ---- output ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t *buf; /* NULL: measure only */
    size_t cap;
    size_t len;   /* bytes measured or written so far */
    int status;   /* first output error; later puts do nothing */
} out_t;

/* Reserves n bytes and returns where to write them; NULL when measuring or after an error. */
static uint8_t *reserve(out_t *o, uint64_t n)
{
    if (o->status != TRANSCODE_OK)
        return NULL;
    if (n > (uint64_t)(SIZE_MAX - o->len)) {
        o->status = TRANSCODE_ERR_TOO_LARGE;
        return NULL;
    }
    if (o->buf == NULL) {
        o->len += (size_t)n;
        return NULL;
    }
    if (n > (uint64_t)(o->cap - o->len)) {
        o->status = TRANSCODE_ERR_OUTPUT_SPACE;
        return NULL;
    }
    uint8_t *p = o->buf + o->len;
    o->len += (size_t)n;
    return p;
}

static void put_bytes(out_t *o, const void *s, size_t n)
{
    uint8_t *p = reserve(o, n);
    if (p != NULL && n != 0)
        memcpy(p, s, n);
}

#define PUT_LITERAL(o, lit) put_bytes((o), (lit), sizeof(lit) - 1)

static void put_byte(out_t *o, uint8_t b)
{
    uint8_t *p = reserve(o, 1);
    if (p != NULL)
        *p = b;
}

/* ---- decimal integers ------------------------------------------------------------------ */

static size_t decimal_width(uint64_t v)
{
    size_t width = 1;
    for (uint64_t bound = 10; v >= bound; bound *= 10) {
        width++;
        if (width == 20) /* 10^19 is the last power of ten below 2^64 */
            break;
    }
    return width;
}

static void put_uint(out_t *o, uint64_t v)
{
    static const char PAIRS[] = "00010203040506070809101112131415161718192021222324252627282930"
                                "31323334353637383940414243444546474849505152535455565758596061"
                                "62636465666768697071727374757677787980818283848586878889909192"
                                "93949596979899";
    size_t i = decimal_width(v);
    uint8_t *p = reserve(o, i);
    if (p == NULL)
        return;
    for (; v >= 100; v /= 100) { /* two digits per division */
        i -= 2;
        memcpy(p + i, PAIRS + 2 * (v % 100), 2);
    }
    if (v >= 10)
        memcpy(p + i - 2, PAIRS + 2 * v, 2);
    else
        p[i - 1] = (uint8_t)('0' + v);
}

/* ---- base64 (standard alphabet, padded, as Go's encoding/json writes []byte) ------------ */

static const char BASE64_ALPHABET[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The two characters for each 12-bit group, so 3 input bytes take 2 lookups instead of 4.
 * Built by the preprocessor: B64(x) is the alphabet as an integer constant expression. */
#define B64(x) ((x) < 26 ? 'A' + (x) : (x) < 52 ? 'a' + (x) - 26 : (x) < 62 ? '0' + (x) - 52 \
                : (x) == 62 ? '+' : '/')
#define B64_PAIR(i) B64((i) >> 6), B64((i) & 63)
#define B64_PAIRS4(i) B64_PAIR(i), B64_PAIR((i) + 1), B64_PAIR((i) + 2), B64_PAIR((i) + 3)
#define B64_PAIRS16(i) B64_PAIRS4(i), B64_PAIRS4((i) + 4), B64_PAIRS4((i) + 8), B64_PAIRS4((i) + 12)
#define B64_PAIRS64(i) \
    B64_PAIRS16(i), B64_PAIRS16((i) + 16), B64_PAIRS16((i) + 32), B64_PAIRS16((i) + 48)
#define B64_PAIRS256(i) \
    B64_PAIRS64(i), B64_PAIRS64((i) + 64), B64_PAIRS64((i) + 128), B64_PAIRS64((i) + 192)
#define B64_PAIRS1024(i) \
    B64_PAIRS256(i), B64_PAIRS256((i) + 256), B64_PAIRS256((i) + 512), B64_PAIRS256((i) + 768)

static const uint8_t BASE64_PAIRS[2 * 4096] = {
    B64_PAIRS1024(0), B64_PAIRS1024(1024), B64_PAIRS1024(2048), B64_PAIRS1024(3072),
};

static void base64_write(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        memcpy(dst, BASE64_PAIRS + 2 * (v >> 12), 2);
        memcpy(dst + 2, BASE64_PAIRS + 2 * (v & 0xfff), 2);
        dst += 4;
    }
    if (n - i == 0)
        return;
    uint32_t v = (uint32_t)src[i] << 16;
    if (n - i == 2)
        v |= (uint32_t)src[i + 1] << 8;
    dst[0] = (uint8_t)BASE64_ALPHABET[v >> 18];
    dst[1] = (uint8_t)BASE64_ALPHABET[(v >> 12) & 63];
    dst[2] = n - i == 2 ? (uint8_t)BASE64_ALPHABET[(v >> 6) & 63] : '=';
    dst[3] = '=';
}

/* "base64" with its quotes, or null when empty (Consul's Value for an empty value). */
static void put_base64_or_null(out_t *o, span s)
{
    if (s.n == 0) {
        PUT_LITERAL(o, "null");
        return;
    }
    uint8_t *p = reserve(o, 2 + 4 * ((uint64_t)s.n / 3 + (s.n % 3 != 0)));
    if (p == NULL)
        return;
    p[0] = '"';
    base64_write(p + 1, s.p, s.n);
    p[1 + 4 * (s.n / 3 + (s.n % 3 != 0))] = '"';
}

/* ---- JSON strings, as Go's encoding/json escapes them ---------------------------------- */

/* What one byte needs: COPY as is, SHORT escape \x, UNICODE escape \u00XX, or it is a non-ASCII
 * byte that starts (or fails to start) a UTF-8 sequence. */
enum { COPY = 0, SHORT = 1, UNICODE = 2, MULTI = 3 };

static const uint8_t BYTE_CLASS[256] = {
    /* 0x00 */ 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 1, 1, 2, 2,
    /* 0x10 */ 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* 0x20 */ 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* "  & */
    /* 0x30 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, /* <  > */
    /* 0x40 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x50 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* \ */
    /* 0x60 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x70 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x80 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0x90 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xa0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xb0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xc0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xd0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xe0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xf0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
};

static const char HEX_DIGITS[16] = "0123456789abcdef";

static int is_continuation(uint8_t b)
{
    return (b & 0xc0) == 0x80;
}

/* Length of the valid UTF-8 sequence starting at p (2, 3 or 4; p[0] >= 0x80), or 0 when p[0]
 * does not start one: Go's utf8.DecodeRune rejects overlong forms, surrogates, code points
 * above U+10FFFF and sequences cut short, and then consumes a single byte. */
static size_t utf8_sequence_length(const uint8_t *p, size_t left)
{
    uint8_t b0 = p[0];
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    size_t length;
    if (b0 >= 0xc2 && b0 <= 0xdf)
        length = 2;
    else if (b0 >= 0xe0 && b0 <= 0xef) {
        length = 3;
        if (b0 == 0xe0)
            lo = 0xa0; /* overlong */
        else if (b0 == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        length = 4;
        if (b0 == 0xf0)
            lo = 0x90; /* overlong */
        else if (b0 == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (left < length || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < length; i++)
        if (!is_continuation(p[i]))
            return 0;
    return length;
}

/* U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: E2 80 A8 / E2 80 A9. */
static int is_line_separator(const uint8_t *p, size_t length)
{
    return length == 3 && p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9);
}

/* Length of the run of bytes from s[i] that are copied as they are. */
static size_t copy_run(span s, size_t i)
{
    size_t start = i;
    while (i < s.n && BYTE_CLASS[s.p[i]] == COPY)
        i++;
    return i - start;
}

/* Size of s as a JSON string, quotes included. */
static uint64_t json_string_size(span s)
{
    uint64_t size = 2;
    size_t i = 0;
    for (;;) {
        size_t run = copy_run(s, i);
        size += run;
        i += run;
        if (i == s.n)
            return size;
        switch (BYTE_CLASS[s.p[i]]) {
        case SHORT: size += 2; i += 1; break;
        case UNICODE: size += 6; i += 1; break;
        default: {
            size_t length = utf8_sequence_length(s.p + i, s.n - i);
            if (length == 0) {
                size += 6; /* \ufffd */
                i += 1;
            } else {
                size += is_line_separator(s.p + i, length) ? 6 : length;
                i += length;
            }
        }
        }
    }
}

static uint8_t *write_unicode_escape(uint8_t *d, unsigned code)
{
    d[0] = '\\';
    d[1] = 'u';
    d[2] = (uint8_t)HEX_DIGITS[(code >> 12) & 15];
    d[3] = (uint8_t)HEX_DIGITS[(code >> 8) & 15];
    d[4] = (uint8_t)HEX_DIGITS[(code >> 4) & 15];
    d[5] = (uint8_t)HEX_DIGITS[code & 15];
    return d + 6;
}

static uint8_t short_escape_letter(uint8_t b)
{
    switch (b) {
    case '\b': return 'b';
    case '\f': return 'f';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    default: return b; /* " and \ */
    }
}

/* Writes s as a JSON string at d; returns the end. */
static uint8_t *json_string_write(uint8_t *d, span s)
{
    size_t i = 0;
    *d++ = '"';
    for (;;) {
        size_t run = copy_run(s, i);
        if (run != 0)
            memcpy(d, s.p + i, run);
        d += run;
        i += run;
        if (i == s.n)
            break;
        uint8_t b = s.p[i];
        if (BYTE_CLASS[b] == SHORT) {
            d[0] = '\\';
            d[1] = short_escape_letter(b);
            d += 2;
            i += 1;
        } else if (BYTE_CLASS[b] == UNICODE) {
            d = write_unicode_escape(d, b);
            i += 1;
        } else {
            size_t length = utf8_sequence_length(s.p + i, s.n - i);
            if (length == 0) {
                d = write_unicode_escape(d, 0xfffd);
                i += 1;
            } else if (is_line_separator(s.p + i, length)) {
                d = write_unicode_escape(d, s.p[i + 2] == 0xa8 ? 0x2028 : 0x2029);
                i += length;
            } else {
                memcpy(d, s.p + i, length);
                d += length;
                i += length;
            }
        }
    }
    *d++ = '"';
    return d;
}

static void put_json_string(out_t *o, span s)
{
    /* When even the worst case (every byte a 6-byte escape) fits, write without measuring. */
    uint64_t worst = 2 + 6 * (uint64_t)s.n;
    if (o->buf != NULL && o->status == TRANSCODE_OK && worst <= (uint64_t)(o->cap - o->len)) {
        o->len = (size_t)(json_string_write(o->buf + o->len, s) - o->buf);
        return;
    }
    uint8_t *p = reserve(o, json_string_size(s));
    if (p != NULL)
        json_string_write(p, s);
}

/* ---- msgpack headers (for the RPC reply) ----------------------------------------------- */

static void put_be(out_t *o, uint8_t tag, uint64_t v, size_t width)
{
    uint8_t *p = reserve(o, 1 + width);
    if (p == NULL)
        return;
    p[0] = tag;
    for (size_t i = width; i > 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_msgpack_array_header(out_t *o, uint64_t count)
{
    if (count <= 15)
        put_byte(o, (uint8_t)(0x90 | count));
    else if (count <= 0xffff)
        put_be(o, 0xdc, count, 2);
    else if (count <= 0xffffffff)
        put_be(o, 0xdd, count, 4);
    else if (o->status == TRANSCODE_OK)
        o->status = TRANSCODE_ERR_TOO_LARGE;
}

static void put_msgpack_bin(out_t *o, span s)
{
    if (s.n <= 0xff)
        put_be(o, 0xc4, s.n, 1);
    else if (s.n <= 0xffff)
        put_be(o, 0xc5, s.n, 2);
    else if ((uint64_t)s.n <= 0xffffffff)
        put_be(o, 0xc6, s.n, 4);
    else if (o->status == TRANSCODE_OK)
        o->status = TRANSCODE_ERR_TOO_LARGE;
    put_bytes(o, s.p, s.n);
}

/* ---- renderers ------------------------------------------------------------------------- */

/* One entry as Consul's DirEntry JSON object, fields in Consul's struct order. */
static void put_kv_object(out_t *o, span key, const kv_entry *e)
{
    PUT_LITERAL(o, "{\"LockIndex\":");
    put_uint(o, e->lock_index);
    PUT_LITERAL(o, ",\"Key\":");
    put_json_string(o, key);
    PUT_LITERAL(o, ",\"Flags\":");
    put_uint(o, e->flags);
    PUT_LITERAL(o, ",\"Value\":");
    put_base64_or_null(o, e->value);
    if (e->session.n != 0) {
        PUT_LITERAL(o, ",\"Session\":");
        put_json_string(o, e->session);
    }
    PUT_LITERAL(o, ",\"CreateIndex\":");
    put_uint(o, e->create_index);
    PUT_LITERAL(o, ",\"ModifyIndex\":");
    put_uint(o, e->modify_index);
    put_byte(o, '}');
}

static int fail(transcode_error *err, int status, int field, size_t number, size_t offset)
{
    if (err != NULL)
        *err = (transcode_error){status, field, number, offset};
    return status;
}

/* Ends a call: reports an output error, or stores the size measured or written. */
static int finish(const out_t *o, size_t *out_len, transcode_error *err)
{
    if (o->status != TRANSCODE_OK)
        return fail(err, o->status, TRANSCODE_FIELD_NONE, 0, 0);
    *out_len = o->len;
    return fail(err, TRANSCODE_OK, TRANSCODE_FIELD_NONE, 0, 0);
}

/* Walks the records of a packed listing, parsing each entry; `put` renders one record. */
typedef void (*record_renderer)(out_t *o, size_t number, span key, span stored,
                                const kv_entry *e);

static int render_listing(const uint8_t *in, size_t in_len, out_t *o, record_renderer put,
                          size_t *count, transcode_error *err)
{
    size_t off = 0, number = 0;
    while (off < in_len && o->status == TRANSCODE_OK) {
        size_t start = off;
        record r;
        kv_entry e;
        int field = TRANSCODE_FIELD_NONE;
        int status = next_record(in, in_len, &off, RECORD_HEADER_SIZE, &r);
        if (status == TRANSCODE_OK)
            status = parse_entry(r.entry, &e, &field);
        if (status != TRANSCODE_OK)
            return fail(err, status, field, number, start);
        if (put != NULL)
            put(o, number, r.key, r.entry, &e);
        number++;
    }
    *count = number;
    return TRANSCODE_OK;
}

static void put_kv_json_record(out_t *o, size_t number, span key, span stored,
                               const kv_entry *e)
{
    (void)stored;
    if (number != 0)
        put_byte(o, ',');
    put_kv_object(o, key, e);
}

int transcode_kv_json(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                      size_t *out_len, transcode_error *err)
{
    out_t o = {out, cap, 0, TRANSCODE_OK};
    size_t count;
    put_byte(&o, '[');
    int status = render_listing(in, in_len, &o, put_kv_json_record, &count, err);
    if (status != TRANSCODE_OK)
        return status;
    put_byte(&o, ']');
    return finish(&o, out_len, err);
}

int transcode_kv_entry_json(const uint8_t *key, size_t key_len, const uint8_t *entry,
                            size_t entry_len, uint8_t *out, size_t cap, size_t *out_len,
                            transcode_error *err)
{
    out_t o = {out, cap, 0, TRANSCODE_OK};
    kv_entry e;
    int field;
    int status = parse_entry((span){entry, entry_len}, &e, &field);
    if (status != TRANSCODE_OK)
        return fail(err, status, field, 0, 0);
    put_byte(&o, '[');
    put_kv_object(&o, (span){key, key_len}, &e);
    put_byte(&o, ']');
    return finish(&o, out_len, err);
}

int transcode_keys_json(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                        size_t *out_len, transcode_error *err)
{
    out_t o = {out, cap, 0, TRANSCODE_OK};
    size_t off = 0, number = 0;
    put_byte(&o, '[');
    while (off < in_len && o.status == TRANSCODE_OK) {
        size_t start = off;
        record r;
        int status = next_record(in, in_len, &off, KEY_HEADER_SIZE, &r);
        if (status != TRANSCODE_OK)
            return fail(err, status, TRANSCODE_FIELD_NONE, number, start);
        if (number != 0)
            put_byte(&o, ',');
        put_json_string(&o, r.key);
        number++;
    }
    put_byte(&o, ']');
    return finish(&o, out_len, err);
}

static void put_kv_msgpack_record(out_t *o, size_t number, span key, span stored,
                                  const kv_entry *e)
{
    (void)number;
    (void)e;
    put_byte(o, 0x92); /* [key, entry] */
    put_msgpack_bin(o, key);
    put_bytes(o, stored.p, stored.n);
}

int transcode_kv_msgpack(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                         size_t *out_len, transcode_error *err)
{
    out_t o = {out, cap, 0, TRANSCODE_OK};
    size_t count;
    /* The array header comes first, so count (and validate) the records before writing. */
    out_t counter = {NULL, 0, 0, TRANSCODE_OK};
    int status = render_listing(in, in_len, &counter, NULL, &count, err);
    if (status != TRANSCODE_OK)
        return status;
    put_msgpack_array_header(&o, count);
    status = render_listing(in, in_len, &o, put_kv_msgpack_record, &count, err);
    if (status != TRANSCODE_OK)
        return status;
    return finish(&o, out_len, err);
}
