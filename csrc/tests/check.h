/* check.h -- CHECK(cond) for the C test drivers and fuzz targets: print where and abort, so
 * the sanitizers' reports and the failing condition end up in the same output. */
#ifndef PYKVS_TESTS_CHECK_H
#define PYKVS_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#endif
