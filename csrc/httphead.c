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

/* Offset of the first CRLFCRLF in buf[0 .. limit), or limit when there is none. */
static size_t find_blank_line(const uint8_t *buf, size_t limit)
{
    for (size_t i = 0; i + 4 <= limit; i++) {
        const uint8_t *p = memchr(buf + i, '\r', limit - i);
        if (!p)
            return limit;
        i = (size_t)(p - buf);
        if (i + 4 <= limit && p[1] == '\n' && p[2] == '\r' && p[3] == '\n')
            return i;
    }
    return limit;
}

/* The headers the front reads; a second one of any of them makes another shape. */
enum { H_CONTENT_LENGTH, H_TOKEN, H_AUTHORIZATION, H_CONNECTION, H_READ };

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

int httphead_parse(const uint8_t *buf, size_t len, size_t max_head, httphead *out)
{
    if (!classes_ready)
        init_classes();
    /* The blank line must start within max_head bytes (the head's lines and their CRLFs). */
    size_t limit = len < max_head + 4 ? len : max_head + 4;
    size_t blank = find_blank_line(buf, limit);
    if (blank == limit)
        return len > max_head ? HTTPHEAD_OTHER : HTTPHEAD_INCOMPLETE;
    if (blank > max_head)
        return HTTPHEAD_OTHER;
    size_t end = blank + 2; /* the head: every line with its CRLF */
    httphead h;
    size_t i;
    if (!request_line(buf, end, &h, &i))
        return HTTPHEAD_OTHER;
    httphead_span seen[H_READ];
    memset(seen, 0, sizeof seen);
    while (i < end) {
        size_t name = i;
        while (i < end && (classes[buf[i]] & C_TOKEN))
            i++;
        size_t name_len = i - name;
        if (name_len == 0 || i >= end || buf[i] != ':')
            return HTTPHEAD_OTHER;
        i++;
        size_t value = i;
        while (i < end && (classes[buf[i]] & C_VALUE))
            i++;
        /* Every line of the head ends in CRLF (the head ends with the last one). */
        if (i + 2 > end || buf[i] != '\r' || buf[i + 1] != '\n')
            return HTTPHEAD_OTHER;
        size_t value_end = i;
        i += 2;
        while (value < value_end && is_space(buf[value]))
            value++;
        while (value_end > value && is_space(buf[value_end - 1]))
            value_end--;
        int which = -1;
        switch (lower(buf[name])) { /* a cheap first cut: most headers are none of these */
        case 'c':
            if (equals_nocase(buf, name, name_len, "content-length"))
                which = H_CONTENT_LENGTH;
            else if (equals_nocase(buf, name, name_len, "connection"))
                which = H_CONNECTION;
            else if (equals_nocase(buf, name, name_len, "content-encoding"))
                return HTTPHEAD_OTHER;
            break;
        case 'x':
            if (equals_nocase(buf, name, name_len, "x-consul-token"))
                which = H_TOKEN;
            break;
        case 'a':
            if (equals_nocase(buf, name, name_len, "authorization"))
                which = H_AUTHORIZATION;
            break;
        case 't':
            if (equals_nocase(buf, name, name_len, "transfer-encoding"))
                return HTTPHEAD_OTHER;
            break;
        case 'e':
            if (equals_nocase(buf, name, name_len, "expect"))
                return HTTPHEAD_OTHER;
            break;
        case 'u':
            if (equals_nocase(buf, name, name_len, "upgrade"))
                return HTTPHEAD_OTHER;
            break;
        default:
            break;
        }
        if (which < 0)
            continue;
        if (seen[which].present)
            return HTTPHEAD_OTHER;
        seen[which].off = value;
        seen[which].len = value_end - value;
        seen[which].present = 1;
    }
    h.content_length = 0;
    if (seen[H_CONTENT_LENGTH].present) {
        const uint8_t *digits = buf + seen[H_CONTENT_LENGTH].off;
        size_t n = seen[H_CONTENT_LENGTH].len;
        if (n == 0 || n > 19) /* 19 digits fit in 64 bits; a longer length is over any limit */
            return HTTPHEAD_OTHER;
        for (size_t k = 0; k < n; k++) {
            if (digits[k] < '0' || digits[k] > '9')
                return HTTPHEAD_OTHER;
            h.content_length = h.content_length * 10 + (uint64_t)(digits[k] - '0');
        }
    }
    h.close = 0;
    if (seen[H_CONNECTION].present) {
        httphead_span c = seen[H_CONNECTION];
        if (equals_nocase(buf, c.off, c.len, "close"))
            h.close = 1;
        else if (!equals_nocase(buf, c.off, c.len, "keep-alive"))
            return HTTPHEAD_OTHER;
    }
    h.token = seen[H_TOKEN];
    h.authorization = seen[H_AUTHORIZATION];
    h.body_offset = blank + 4;
    *out = h;
    return HTTPHEAD_FAST;
}
