/* httphead.c -- see httphead.h for the contract. One pass over the head, no allocation. */
#include "httphead.h"

#include <string.h>

/* Character classes of the grammar in httphead.h, one bit each. */
enum { C_KEY = 1, C_QUERY = 2, C_TOKEN = 4, C_VALUE = 8 };

static unsigned char char_class(unsigned char c)
{
    unsigned char k = 0;
    int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alnum || (c && strchr("_.~/:@!$'()*,-", c)))
        k |= C_KEY | C_QUERY;
    if (c == '=' || c == '&')
        k |= C_QUERY;
    if (alnum || (c && strchr("!#$%&'*+.^_`|~-", c)))
        k |= C_TOKEN;
    if ((c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t')
        k |= C_VALUE;
    return k;
}

static unsigned char classes[256];
static int classes_ready;

static void init_classes(void)
{
    /* Idempotent: two threads racing here store the same bytes. */
    for (int c = 0; c < 256; c++)
        classes[c] = char_class((unsigned char)c);
    classes_ready = 1;
}

static int is_space(uint8_t c) { return c == ' ' || c == '\t'; }

static uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

/* buf[off .. off+len) equals the lower-case ASCII string s, ignoring case. */
static int equals_nocase(const uint8_t *buf, size_t off, size_t len, const char *s)
{
    if (strlen(s) != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (lower(buf[off + i]) != (uint8_t)s[i])
            return 0;
    return 1;
}

/* Offset of the first CRLFCRLF in buf[0 .. limit); limit when there is none; BARE_LF when an
 * LF before it is not preceded by a CR (a head aiohttp answers at once, complete or not). */
#define BARE_LF SIZE_MAX
static size_t find_blank_line(const uint8_t *buf, size_t limit)
{
    const uint8_t *p = buf, *end = buf + limit;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        size_t i = (size_t)(p - buf);
        if (i == 0 || buf[i - 1] != '\r')
            return BARE_LF;
        if (i >= 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i - 3;
        p++;
    }
    return limit;
}

/* The headers the front reads; a second one of any of them makes another shape. */
enum { H_CONTENT_LENGTH, H_TOKEN, H_AUTHORIZATION, H_CONNECTION, H_HOST, H_READ };
/* header_kind's other answers: a header the front ignores, or one that makes another shape. */
enum { H_IGNORED = -1, H_REFUSED = -2 };

static int request_line(const uint8_t *buf, size_t end, httphead *out, size_t *pos)
{
    static const struct { const char *text; int method; } methods[] = {
        {"GET /v1/kv/", HTTPHEAD_GET}, {"PUT /v1/kv/", HTTPHEAD_PUT},
        {"DELETE /v1/kv/", HTTPHEAD_DELETE}};
    size_t i = 0;
    int found = 0;
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        size_t n = strlen(methods[m].text);
        if (end >= n && memcmp(buf, methods[m].text, n) == 0) {
            out->method = methods[m].method;
            i = n;
            found = 1;
            break;
        }
    }
    if (!found)
        return 0;
    out->key.off = i;
    out->key.present = 1;
    while (i < end && (classes[buf[i]] & C_KEY))
        i++;
    out->key.len = i - out->key.off;
    out->query.present = 0;
    out->query.off = out->query.len = 0;
    if (i < end && buf[i] == '?') {
        out->query.off = ++i;
        out->query.present = 1;
        while (i < end && (classes[buf[i]] & C_QUERY))
            i++;
        out->query.len = i - out->query.off;
    }
    static const char version[] = " HTTP/1.1\r\n";
    size_t n = sizeof version - 1;
    if (end - i < n || memcmp(buf + i, version, n) != 0)
        return 0;
    /* Path normalisation is aiohttp's to decide: no ".x" at the start, no "//" or "/.". */
    const uint8_t *key = buf + out->key.off;
    size_t klen = out->key.len;
    if (klen && key[0] == '.')
        return 0;
    for (size_t k = 0; k + 1 < klen; k++)
        if (key[k] == '/' && (key[k + 1] == '/' || key[k + 1] == '.'))
            return 0;
    *pos = i + n;
    return 1;
}

/* One header line at buf[*pos .. end): NAME ":" VALUE CRLF. 0 when the line is not of that
 * shape; else 1, *name and *value (SP/HT trimmed) say where its parts are, *pos is past it. */
static int header_line(const uint8_t *buf, size_t end, size_t *pos, httphead_span *name,
                       httphead_span *value)
{
    size_t i = *pos;
    while (i < end && (classes[buf[i]] & C_TOKEN))
        i++;
    *name = (httphead_span){*pos, i - *pos, 1};
    if (name->len == 0 || i >= end || buf[i] != ':')
        return 0;
    size_t from = ++i;
    while (i < end && (classes[buf[i]] & C_VALUE))
        i++;
    /* Every line of the head ends in CRLF (the head ends with the last one). */
    if (i + 2 > end || buf[i] != '\r' || buf[i + 1] != '\n')
        return 0;
    size_t to = i;
    *pos = i + 2;
    while (from < to && is_space(buf[from]))
        from++;
    while (to > from && is_space(buf[to - 1]))
        to--;
    *value = (httphead_span){from, to - from, 1};
    return 1;
}

/* Which header the name is: one the front reads (H_CONTENT_LENGTH ...), H_REFUSED for one
 * that makes another shape, H_IGNORED for any other. */
static int header_kind(const uint8_t *buf, httphead_span name)
{
    size_t at = name.off, n = name.len;
    switch (lower(buf[at])) { /* a cheap first cut: most headers are none of these */
    case 'c':
        if (equals_nocase(buf, at, n, "content-length"))
            return H_CONTENT_LENGTH;
        if (equals_nocase(buf, at, n, "connection"))
            return H_CONNECTION;
        return equals_nocase(buf, at, n, "content-encoding") ? H_REFUSED : H_IGNORED;
    case 'x':
        return equals_nocase(buf, at, n, "x-consul-token") ? H_TOKEN : H_IGNORED;
    case 'h':
        return equals_nocase(buf, at, n, "host") ? H_HOST : H_IGNORED;
    case 'a':
        return equals_nocase(buf, at, n, "authorization") ? H_AUTHORIZATION : H_IGNORED;
    case 't':
        return equals_nocase(buf, at, n, "transfer-encoding") ? H_REFUSED : H_IGNORED;
    case 'e':
        return equals_nocase(buf, at, n, "expect") ? H_REFUSED : H_IGNORED;
    case 'u':
        return equals_nocase(buf, at, n, "upgrade") ? H_REFUSED : H_IGNORED;
    default:
        return H_IGNORED;
    }
}

/* The header lines from pos to end: seen[H_*] receives the value of each header the front
 * reads. 0 when a line is malformed, a header is refused or a read one comes twice. */
static int read_headers(const uint8_t *buf, size_t pos, size_t end, httphead_span seen[H_READ])
{
    memset(seen, 0, H_READ * sizeof seen[0]);
    while (pos < end) {
        httphead_span name, value;
        if (!header_line(buf, end, &pos, &name, &value))
            return 0;
        int which = header_kind(buf, name);
        if (which == H_REFUSED)
            return 0;
        if (which == H_IGNORED)
            continue;
        if (seen[which].present)
            return 0;
        seen[which] = value;
    }
    return 1;
}

/* Content-Length: 1 to 19 decimal digits (19 fit in 64 bits; a longer length is over any
 * limit). 0 when the value is not that. */
static int parse_content_length(const uint8_t *buf, httphead_span v, uint64_t *length)
{
    if (v.len == 0 || v.len > 19)
        return 0;
    uint64_t n = 0;
    for (size_t k = 0; k < v.len; k++) {
        uint8_t digit = buf[v.off + k];
        if (digit < '0' || digit > '9')
            return 0;
        n = n * 10 + (uint64_t)(digit - '0');
    }
    *length = n;
    return 1;
}

/* Connection: "close" (*closing = 1) or "keep-alive", in any case. 0 for another value. */
static int parse_connection(const uint8_t *buf, httphead_span v, int *closing)
{
    if (equals_nocase(buf, v.off, v.len, "close"))
        *closing = 1;
    else if (!equals_nocase(buf, v.off, v.len, "keep-alive"))
        return 0;
    return 1;
}

/* Whether buf[0 .. len), a head whose blank line has not come (and without a bare LF), may
 * still be a fast shape: the start of its request line, or its whole lines, are of the grammar.
 * When not, the front hands it to aiohttp at once, which answers a malformed line at once
 * ("GEE", "Host x") instead of waiting for the rest. */
static int may_be_fast(const uint8_t *buf, size_t len)
{
    static const char *const starts[] = {"GET /v1/kv/", "PUT /v1/kv/", "DELETE /v1/kv/"};
    if (!memchr(buf, '\n', len)) { /* the request line so far: a fast method's start */
        for (size_t m = 0; m < sizeof starts / sizeof starts[0]; m++) {
            size_t n = strlen(starts[m]);
            if (memcmp(buf, starts[m], len < n ? len : n) == 0)
                return 1;
        }
        return 0;
    }
    size_t whole = len; /* the whole lines: up to the last LF (each after its CR) */
    while (buf[whole - 1] != '\n')
        whole--;
    httphead h;
    size_t pos;
    httphead_span seen[H_READ];
    return request_line(buf, whole, &h, &pos) && read_headers(buf, pos, whole, seen);
}

int httphead_parse(const uint8_t *buf, size_t len, size_t max_head, httphead *out)
{
    if (!classes_ready)
        init_classes();
    /* The blank line must start within max_head bytes (the head's lines and their CRLFs). */
    size_t limit = len < max_head + 4 ? len : max_head + 4;
    size_t blank = find_blank_line(buf, limit);
    if (blank == BARE_LF)
        return HTTPHEAD_OTHER;
    if (blank == limit)
        return len > max_head || !may_be_fast(buf, len) ? HTTPHEAD_OTHER : HTTPHEAD_INCOMPLETE;
    if (blank > max_head)
        return HTTPHEAD_OTHER;
    size_t end = blank + 2; /* the head: every line with its CRLF */
    httphead h;
    size_t i;
    httphead_span seen[H_READ];
    if (!request_line(buf, end, &h, &i) || !read_headers(buf, i, end, seen) ||
        !seen[H_HOST].present) /* HTTP/1.1 requires Host: aiohttp answers 400 without */
        return HTTPHEAD_OTHER;
    h.content_length = 0;
    if (seen[H_CONTENT_LENGTH].present &&
        !parse_content_length(buf, seen[H_CONTENT_LENGTH], &h.content_length))
        return HTTPHEAD_OTHER;
    h.close = 0;
    if (seen[H_CONNECTION].present && !parse_connection(buf, seen[H_CONNECTION], &h.close))
        return HTTPHEAD_OTHER;
    h.token = seen[H_TOKEN];
    h.authorization = seen[H_AUTHORIZATION];
    h.body_offset = blank + 4;
    *out = h;
    return HTTPHEAD_FAST;
}

void httphead_json_scan(const uint8_t *buf, size_t len, size_t max_depth, httphead_json *out)
{
    size_t depth = 0;
    *out = (httphead_json){0, 0, 0};
    for (size_t i = 0; i < len; i++) {
        uint8_t c = buf[i];
        if (c == '"') { /* skip the string: its brackets and commas are text */
            for (i++; i < len && buf[i] != '"'; i++)
                if (buf[i] == '\\')
                    i++;
        } else if (c == '[' || c == '{') {
            out->containers++;
            if (++depth > out->depth && (out->depth = depth) > max_depth)
                return;
        } else if ((c == ']' || c == '}') && depth) {
            depth--;
        } else if (c == ',') {
            out->commas++;
        }
    }
}
