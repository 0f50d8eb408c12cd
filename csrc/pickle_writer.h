/* pickle_writer.h -- writes a pickle stream (protocol 3) of one list whose items are bytes
 * objects, unsigned ints and 3-tuples of them, for pickle.loads to build at C speed.
 *
 * The listings of the radix tree (radix_scan's pickle formats) are written with it; pickle.loads
 * builds a list of a thousand tuples faster than any loop of Python calls over the tree.
 *
 * The writer never allocates. Each function writes at p and returns the end of what it wrote;
 * the caller makes room first: at most the PW_*_ROOM bytes its comment names.
 *
 *   p = pw_begin_list(p);                          the list, then its items:
 *   p = pw_append_bytes(p, key, klen);             a bytes item, or
 *   p = pw_begin_bytes(p, klen); (write klen bytes at p; p += klen)   the same, in pieces
 *   p = pw_append_uint(p, index);                  an int item
 *   p = pw_build_tuple3(p);                        the last three items become one tuple
 *   p = pw_end_list(p);                            closes the list and the stream
 */
#ifndef PYKVS_PICKLE_WRITER_H
#define PYKVS_PICKLE_WRITER_H

#include <stddef.h>
#include <stdint.h>

enum {
    PW_LIST_BEGIN_ROOM = 4,  /* pw_begin_list */
    PW_LIST_END_ROOM = 2,    /* pw_end_list */
    PW_BYTES_HEAD_ROOM = 5,  /* pw_begin_bytes; pw_append_bytes beyond the n bytes */
    PW_UINT_ROOM = 11,       /* pw_append_uint */
    PW_TUPLE3_ROOM = 1       /* pw_build_tuple3 */
};

/* The protocol header and an empty list, then a mark: the items up to pw_end_list go in it. */
char *pw_begin_list(char *p);
/* Appends the items since pw_begin_list to the list, and ends the stream. */
char *pw_end_list(char *p);

/* The head of a bytes item of n bytes; the caller writes the n bytes right after it. */
char *pw_begin_bytes(char *p, size_t n);
/* A bytes item: data[0:n] (data may be NULL when n is 0). n must be below 2**32. */
char *pw_append_bytes(char *p, const void *data, size_t n);
/* An int item of value v (any uint64_t: pickle.loads gives the same Python int). */
char *pw_append_uint(char *p, uint64_t v);
/* Makes the last three items one tuple item. */
char *pw_build_tuple3(char *p);

#endif
