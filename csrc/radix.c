#include "radix.h"

/* Keeps the unit non-empty until its first function lands. */
typedef int radix_unit_placeholder;
