/* test_httphead.c -- exact cases, then FUZZ_SECONDS of mutated heads under ASan/UBSan.
 *
 * The exact decisions against the front's former Python parser are tests/test_httphead.py's
 * (hypothesis); here each input is copied into a buffer of exactly its length, so a read
 * past the end is a sanitizer report, and every FAST answer is checked to point inside the
 * head: spans within [0, body_offset), body_offset just past the blank line.
 *
 *   test_httphead [FUZZ_SECONDS] [SEED]
 */
#include "httphead.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../check.h"

static int parse_exact(const char *text, size_t len, size_t max_head, httphead *out)
{
    uint8_t *copy = malloc(len ? len : 1); /* exactly len bytes: ASan sees any overread */
    CHECK(copy);
    memcpy(copy, text, len);
    int status = httphead_parse(copy, len, max_head, out);
    free(copy);
    return status;
}

static int parse(const char *text, httphead *out)
{
    return parse_exact(text, strlen(text), 8190, out);
}

static int span_is(const char *text, httphead_span span, const char *expected)
{
    if (!expected)
        return !span.present;
    return span.present && span.len == strlen(expected) &&
           memcmp(text + span.off, expected, span.len) == 0;
}

static void exact_cases(void)
{
    httphead h;
    const char *put = "PUT /v1/kv/a/b?flags=3&cas=0 HTTP/1.1\r\nHost: x\r\n"
                      "content-LENGTH: 0012\r\nX-Consul-Token: \t tok \r\n\r\nbody";
    CHECK(parse(put, &h) == HTTPHEAD_FAST);
    CHECK(h.method == HTTPHEAD_PUT && h.content_length == 12 && !h.close);
    CHECK(span_is(put, h.key, "a/b") && span_is(put, h.query, "flags=3&cas=0"));
    CHECK(span_is(put, h.token, "tok") && span_is(put, h.authorization, NULL));
    CHECK(h.body_offset == strlen(put) - 4);

    const char *get = "GET /v1/kv/ HTTP/1.1\r\nConnection: CLOSE\r\nhost: h\r\n"
                      "Authorization: Bearer x\r\n\r\n";
    CHECK(parse(get, &h) == HTTPHEAD_FAST);
    CHECK(h.method == HTTPHEAD_GET && h.close && h.content_length == 0);
    CHECK(span_is(get, h.key, "") && span_is(get, h.query, NULL));
    CHECK(span_is(get, h.authorization, "Bearer x"));

    CHECK(parse("DELETE /v1/kv/x? HTTP/1.1\r\nHost:\r\n\r\n", &h) == HTTPHEAD_FAST);
    CHECK(h.method == HTTPHEAD_DELETE && h.query.present && h.query.len == 0);
    CHECK(parse("GET /v1/kv/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999\r\n"
                "\r\n", &h) == HTTPHEAD_FAST);
    CHECK(h.content_length == 9999999999999999999ULL);

    static const char *incomplete[] = {"", "G", "DELETE /v1", "GET /v1/kv/a HTTP/1.1\r\n",
                                       "GET /v1/kv/a%20b HTTP/1.",
                                       "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nBad Na",
                                       "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r"};
    for (size_t i = 0; i < sizeof incomplete / sizeof *incomplete; i++)
        CHECK(parse(incomplete[i], &h) == HTTPHEAD_INCOMPLETE);

    static const char *other[] = {
        "POST /v1/kv/a HTTP/1.1\r\n\r\n", "GET /v1/kv/a HTTP/1.0\r\n\r\n",
        "GET /v1/kv/a%20 HTTP/1.1\r\n\r\n", "GET /v1/kv/a//b HTTP/1.1\r\n\r\n",
        "GET /v1/kv/a/.b HTTP/1.1\r\n\r\n", "GET /v1/kv/.a HTTP/1.1\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nContent-Length: \r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nUpgrade: x\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nContent-Encoding: gzip\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nName: a\x01b\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\nHost: x\r\n\r\n",
        /* a bare LF is another shape at once, before the head is complete */
        "GET /v1/kv/a HTTP/1.1\nHost: x\n\n", "GET /v1/kv/a HTTP/1.1\r\nHost: x\n",
        "\n", "GET /v1/kv/a HTTP/1.1\r\nHost: x\n\r\n",
        /* a head that cannot become a fast one is another shape before it is whole */
        "GEE", "X", "GET /v1/k/", "POST /v1/kv/a HTTP/1.1\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nHost x\r\n", "GET /v1/kv/a HTTP/1.1\r\nHost: \x01\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nHost: a\r\nhost: b\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
        /* HTTP/1.1 requires one Host */
        "GET /v1/kv/a HTTP/1.1\r\n\r\n", "PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET /v1/kv/a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof other / sizeof *other; i++)
        CHECK(parse(other[i], &h) == HTTPHEAD_OTHER);

    /* The head limit: the blank line may start at max_head, not after it. */
    const char *small = "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t blank = strlen(small) - 4;
    CHECK(parse_exact(small, strlen(small), blank, &h) == HTTPHEAD_FAST);
    CHECK(parse_exact(small, strlen(small), blank - 1, &h) == HTTPHEAD_OTHER);
    CHECK(parse_exact(small, blank, blank, &h) == HTTPHEAD_INCOMPLETE);
    CHECK(parse_exact(small, blank, blank - 1, &h) == HTTPHEAD_OTHER);
}

static httphead_json scan_of(const char *text, size_t max_depth)
{
    size_t len = strlen(text);
    uint8_t *copy = malloc(len ? len : 1); /* exactly len bytes: ASan sees any overread */
    CHECK(copy);
    memcpy(copy, text, len);
    httphead_json shape;
    httphead_json_scan(copy, len, max_depth, &shape);
    free(copy);
    return shape;
}

static size_t depth_of(const char *text, size_t max_depth)
{
    return scan_of(text, max_depth).depth;
}

static void json_scan_cases(void)
{
    CHECK(depth_of("", 64) == 0 && depth_of("1", 64) == 0 && depth_of("[]", 64) == 1);
    CHECK(depth_of("[{\"a\":[1,{}]},[]]", 64) == 4);
    CHECK(depth_of("[\"[[[[\\\"[[\"]", 64) == 1); /* brackets in a string are text */
    CHECK(depth_of("\"\\", 64) == 0 && depth_of("\"abc", 64) == 0); /* unterminated */
    CHECK(depth_of("]]]}}[", 64) == 1); /* unbalanced: the decoder refuses it after */
    CHECK(depth_of("[[[[", 2) == 3);    /* stops counting past the limit */
    CHECK(depth_of("[[[]]]", 3) == 3 && depth_of("[[[]]]", 2) == 3);
    httphead_json shape = scan_of("{\"a,b\":[1,2,{}],\"c\":[]}", 64);
    CHECK(shape.containers == 4 && shape.commas == 3 && shape.depth == 3);
}

static uint64_t rng_state;

static uint32_t next_random(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

static const char *const seeds[] = {
    "PUT /v1/kv/k?flags=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n"
    "X-Consul-Token: t\r\nAuthorization: Bearer b\r\n\r\nvalue",
    "GET /v1/kv/a/b/c?raw HTTP/1.1\r\nHost: h\r\n\r\n",
    "DELETE /v1/kv/x?recurse HTTP/1.1\r\nContent-Length: 0\r\nHOST: h\r\n\r\n",
};

static void check_answer(const uint8_t *buf, size_t len, size_t max_head, int status,
                         const httphead *h)
{
    CHECK(status == HTTPHEAD_INCOMPLETE || status == HTTPHEAD_OTHER ||
          status == HTTPHEAD_FAST);
    if (status == HTTPHEAD_INCOMPLETE) {
        CHECK(len <= max_head);
        for (size_t i = 0; i < len; i++) /* a bare LF is never waited on */
            CHECK(buf[i] != '\n' || (i > 0 && buf[i - 1] == '\r'));
    }
    if (status != HTTPHEAD_FAST)
        return;
    CHECK(h->body_offset >= 4 && h->body_offset <= len && h->body_offset - 4 <= max_head);
    CHECK(memcmp(buf + h->body_offset - 4, "\r\n\r\n", 4) == 0);
    const httphead_span spans[] = {h->key, h->query, h->token, h->authorization};
    for (size_t i = 0; i < 4; i++)
        if (spans[i].present)
            CHECK(spans[i].off + spans[i].len <= h->body_offset - 2);
    CHECK(h->method >= HTTPHEAD_GET && h->method <= HTTPHEAD_DELETE);
}

static void fuzz(double seconds)
{
    static const char alphabet[] = "\r\n :\t/?.=&aZ09-\x01\x7f\x80GETPUDLHTcontent-lgh";
    clock_t end = clock() + (clock_t)(seconds * CLOCKS_PER_SEC);
    unsigned long rounds = 0, fast = 0;
    while (clock() < end) {
        const char *seed = seeds[next_random() % (sizeof seeds / sizeof *seeds)];
        size_t len = strlen(seed);
        uint8_t work[512];
        memcpy(work, seed, len);
        for (int m = (int)(next_random() % 4); m > 0; m--) {
            size_t at = next_random() % (len + 1);
            switch (next_random() % 3) {
            case 0: /* replace a byte */
                if (at < len)
                    work[at] = (uint8_t)alphabet[next_random() % (sizeof alphabet - 1)];
                break;
            case 1: /* insert a byte */
                if (len < sizeof work) {
                    memmove(work + at + 1, work + at, len - at);
                    work[at] = (uint8_t)alphabet[next_random() % (sizeof alphabet - 1)];
                    len++;
                }
                break;
            default: /* cut the end */
                len = at;
            }
        }
        size_t max_head = next_random() % 2 ? 8190 : next_random() % (len + 8);
        uint8_t *copy = malloc(len ? len : 1);
        CHECK(copy);
        memcpy(copy, work, len);
        httphead h;
        int status = httphead_parse(copy, len, max_head, &h);
        check_answer(copy, len, max_head, status, &h);
        httphead_json shape;
        httphead_json_scan(copy, len, 3, &shape);
        CHECK(shape.depth <= 4 && shape.containers <= len && shape.commas <= len);
        httphead again;
        CHECK(httphead_parse(copy, len, max_head, &again) == status); /* no hidden state */
        free(copy);
        fast += status == HTTPHEAD_FAST;
        rounds++;
    }
    printf("test_httphead: fuzz %lu rounds (%lu fast), no failure\n", rounds, fast);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    exact_cases();
    json_scan_cases();
    printf("test_httphead: exact cases ok\n");
    fuzz(seconds);
    return 0;
}
