/* pickle_writer.c -- see pickle_writer.h. Opcodes as in CPython's Lib/pickle.py. */
#include "pickle_writer.h"
#include "byteorder.h" /* pickle's byte order for lengths and ints */

#include <string.h>

#define PK_PROTO '\x80'
#define PK_EMPTY_LIST ']'
#define PK_MARK '('
#define PK_APPENDS 'e'
#define PK_STOP '.'
#define PK_SHORT_BINBYTES 'C' /* 1-byte length */
#define PK_BINBYTES 'B'       /* 4-byte length */
#define PK_BININT 'J'         /* 4-byte signed int */
#define PK_LONG1 '\x8a'       /* 1-byte length, then a two's complement int */
#define PK_TUPLE3 '\x87'

char *pw_begin_list(char *p)
{
    *p++ = PK_PROTO;
    *p++ = 3;
    *p++ = PK_EMPTY_LIST;
    *p++ = PK_MARK;
    return p;
}

char *pw_end_list(char *p)
{
    *p++ = PK_APPENDS;
    *p++ = PK_STOP;
    return p;
}

char *pw_begin_bytes(char *p, size_t n)
{
    if (n < 256) {
        *p++ = PK_SHORT_BINBYTES;
        *p++ = (char)(unsigned char)n;
        return p;
    }
    *p++ = PK_BINBYTES;
    return store_le32(p, (uint32_t)n);
}

char *pw_append_bytes(char *p, const void *data, size_t n)
{
    p = pw_begin_bytes(p, n);
    if (n)
        memcpy(p, data, n);
    return p + n;
}

char *pw_append_uint(char *p, uint64_t v)
{
    if (v < 0x80000000u) {
        *p++ = PK_BININT;
        return store_le32(p, (uint32_t)v);
    }
    /* LONG1: two's complement little-endian; a ninth byte keeps it positive. */
    unsigned n = v < 0x8000000000000000u ? 8 : 9;
    *p++ = PK_LONG1;
    *p++ = (char)n;
    p = store_le64(p, v);
    if (n == 9)
        *p++ = 0;
    return p;
}

char *pw_build_tuple3(char *p)
{
    *p++ = PK_TUPLE3;
    return p;
}
