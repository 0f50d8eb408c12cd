#include "transcode.h"

/* Keeps the unit non-empty until its first function lands. */
typedef int transcode_unit_placeholder;
