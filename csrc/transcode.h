/* transcode.h -- see the comment at the top of transcode.c. */
#ifndef PYKVS_TRANSCODE_H
#define PYKVS_TRANSCODE_H

#include <stddef.h>
#include <stdint.h>

#endif
