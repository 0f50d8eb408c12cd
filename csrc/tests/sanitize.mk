# Shared by the C units' test Makefiles (transcode, httphead): the compiler, the sanitizer
# flags and the sanitizer options that make a report fail the run. Set HERE (the including
# Makefile's directory) before including this.

CSRC := $(abspath $(HERE)/../..)
BUILD ?= $(HERE)build
FUZZ_SECONDS ?= 2
FUZZ_SEED ?= 1
CC = gcc

CFLAGS = -std=c11 -Wall -Wextra -Werror -g -O1 -fno-omit-frame-pointer \
         -fsanitize=address,undefined -fno-sanitize-recover=all -I$(CSRC)

# Sanitizer reports fail the run (exit status) instead of scrolling by.
export ASAN_OPTIONS = detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
