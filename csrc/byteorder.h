/* byteorder.h -- little-endian loads and stores for the formats the C units share (the tree's
 * packed listings, the pickle writer's lengths and ints). A load reads the value at p; a store
 * writes v at p and returns p past it.
 *
 * On a little-endian host a plain copy. Byte stores would be portable everywhere, but GCC
 * merges those of neighbouring fields into one wide value built with shifts and ORs, a few
 * dozen instructions per packed record header instead of three moves.
 */
#ifndef PYKVS_BYTEORDER_H
#define PYKVS_BYTEORDER_H

#include <stdint.h>
#include <string.h>

static inline uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t load_le64(const unsigned char *p)
{
    return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

static inline char *store_le32(char *p, uint32_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 4);
#else
    unsigned char *q = (unsigned char *)p;
    q[0] = (unsigned char)v;
    q[1] = (unsigned char)(v >> 8);
    q[2] = (unsigned char)(v >> 16);
    q[3] = (unsigned char)(v >> 24);
#endif
    return p + 4;
}

static inline char *store_le64(char *p, uint64_t v)
{
    return store_le32(store_le32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

#endif
