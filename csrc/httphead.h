/* httphead.h -- the fast HTTP front's request-head check (pykvs/http/front.py).
 *
 * The front serves a few request shapes itself and hands every other connection to aiohttp.
 * httphead_parse decides, for the first request in a buffer, which of the two it is, and
 * for a fast shape where its parts are. A fast-shape head is exactly:
 *
 *   ("GET" | "PUT" | "DELETE") " /v1/kv/" KEY ["?" QUERY] " HTTP/1.1" CRLF
 *   *(NAME ":" VALUE CRLF) CRLF
 *
 *   KEY    *( ALNUM | one of _.~/:@!$'()*,- )  not starting with ".", without "//" or "/."
 *   QUERY  *( ALNUM | one of _.~/:@!$'()*,=&- )
 *   NAME   1*( ALNUM | one of !#$%&'*+.^_`|~- )        (an RFC 9110 token)
 *   VALUE  *( 0x21-0x7e | SP | HT )
 *
 * where the head (request line and headers, up to the blank line) is at most max_head bytes;
 * among the headers, one Host, none of Transfer-Encoding, Expect, Upgrade or Content-Encoding,
 * none of the headers read below twice (names compare case-insensitively); Content-Length, when
 * present, 1 to 19 decimal digits; Connection, when present, "keep-alive" or "close" (any
 * case). Header values are read with leading and trailing SP/HT removed. Anything else is
 * another shape: aiohttp's to parse and answer (an error, or a request the front does not
 * serve). The body, the query's parameters and the server's limits are the caller's.
 * A head not yet whole is another shape at once when it cannot become a fast one: an LF not
 * preceded by CR, a request line that does not start as one, or a whole line (the request line
 * or a header) outside the grammar. aiohttp answers such heads at once; the front must not
 * wait for more bytes (a head only waited on is cut off by the front's read deadline).
 *
 * httphead_json_scan is the HTTP API's bound on JSON bodies, checked before a decoder that
 * recurses and allocates sees them: how deep arrays and objects nest, how many there are and
 * how many values they hold (brackets and commas inside strings are text).
 */
#ifndef PYKVS_HTTPHEAD_H
#define PYKVS_HTTPHEAD_H

#include <stddef.h>
#include <stdint.h>

enum httphead_status {
    HTTPHEAD_INCOMPLETE = 0, /* no blank line yet, and the buffer is within max_head */
    HTTPHEAD_OTHER = 1,      /* not a fast shape (or the head is over max_head) */
    HTTPHEAD_FAST = 2        /* a fast shape: *out says where its parts are */
};

enum httphead_method { HTTPHEAD_GET = 0, HTTPHEAD_PUT = 1, HTTPHEAD_DELETE = 2 };

/* A part of the buffer: buf[off .. off + len). present is 0 when the part is absent. */
typedef struct httphead_span {
    size_t off;
    size_t len;
    int present;
} httphead_span;

typedef struct httphead {
    int method;            /* enum httphead_method */
    httphead_span key;     /* after "/v1/kv/" (present, possibly empty) */
    httphead_span query;   /* after "?" (absent without "?") */
    httphead_span token;   /* the X-Consul-Token value */
    httphead_span authorization;
    uint64_t content_length; /* 0 without the header */
    int close;             /* Connection: close */
    size_t body_offset;    /* bytes of the head, blank line included: where the body starts */
} httphead;

/* Returns an enum httphead_status; *out is written only for HTTPHEAD_FAST. */
int httphead_parse(const uint8_t *buf, size_t len, size_t max_head, httphead *out);

/* What httphead_json_scan counts in buf[0 .. len), outside strings. The brackets need not
 * balance nor the JSON be valid: the decoder judges the grammar after. */
typedef struct httphead_json {
    size_t depth;      /* the deepest nesting of arrays and objects (max_depth + 1 at most:
                          the scan stops there) */
    size_t containers; /* arrays and objects */
    size_t commas;     /* commas: every value but the first of each array or object */
} httphead_json;

void httphead_json_scan(const uint8_t *buf, size_t len, size_t max_depth, httphead_json *out);

#ifdef Py_PYTHON_H /* in the cffi extension module only: see httphead_py.h */
#include "httphead_py.h"
#endif

#endif
