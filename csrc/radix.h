/* radix.h -- see the comment at the top of radix.c. */
#ifndef PYKVS_RADIX_H
#define PYKVS_RADIX_H

#include <stddef.h>
#include <stdint.h>

#endif
