/* transcode.h -- stored KV entries -> Consul's JSON bodies and msgpack RPC replies.
 *
 * Input layouts (docs/ARCHITECTURE.md):
 *
 *   packed listing   records back to back, no header; each record is
 *                      key_len u32 LE | value_len u32 LE | index u64 LE | key | value
 *                    where value is a stored entry.
 *   stored entry     msgpack array of 6:
 *                      [Value bin, Flags uint, CreateIndex uint, ModifyIndex uint,
 *                       LockIndex uint, Session str or nil]
 *   packed keys      key_len u32 LE | key, back to back (for ?keys listings).
 *
 * Calling convention, the same for every function below: with out == NULL the function only
 * measures: it validates the whole input and stores the exact output size in *out_len.  With
 * out != NULL it renders into out[0 .. cap) and stores the number of bytes written.  Both modes
 * run the same code, so a write into a buffer of the measured size always fits; a smaller
 * buffer gives TRANSCODE_ERR_OUTPUT_SPACE, never an overflow.  On any error the function
 * returns the status (also stored in err->status), err says where, and *out_len is untouched.
 * err may be NULL when the caller only needs the status.
 */
#ifndef PYKVS_TRANSCODE_H
#define PYKVS_TRANSCODE_H

#include <stddef.h>
#include <stdint.h>

enum transcode_status {
    TRANSCODE_OK = 0,
    TRANSCODE_ERR_RECORD_HEADER = 1, /* fewer bytes left than a record (or key) header */
    TRANSCODE_ERR_RECORD_BODY = 2,   /* key_len (+ value_len) run past the end of the input */
    TRANSCODE_ERR_NOT_ENTRY = 3,     /* the stored entry is not a msgpack array of 6 items */
    TRANSCODE_ERR_FIELD_TYPE = 4,    /* entry item err->field has the wrong msgpack type */
    TRANSCODE_ERR_FIELD_TRUNCATED = 5, /* entry item err->field runs past the entry's end */
    TRANSCODE_ERR_TRAILING_BYTES = 6,  /* bytes follow the 6-item array in the entry */
    TRANSCODE_ERR_OUTPUT_SPACE = 7,  /* cap is smaller than the output */
    TRANSCODE_ERR_TOO_LARGE = 8      /* output size (or item count) does not fit the format */
};

/* Items of a stored entry, in stored order; err->field names one of them (or -1). */
enum transcode_field {
    TRANSCODE_FIELD_NONE = -1,
    TRANSCODE_FIELD_VALUE = 0,
    TRANSCODE_FIELD_FLAGS = 1,
    TRANSCODE_FIELD_CREATE_INDEX = 2,
    TRANSCODE_FIELD_MODIFY_INDEX = 3,
    TRANSCODE_FIELD_LOCK_INDEX = 4,
    TRANSCODE_FIELD_SESSION = 5
};

typedef struct transcode_error {
    int status;    /* enum transcode_status */
    int field;     /* enum transcode_field */
    size_t record; /* 0-based number of the bad record or key */
    size_t offset; /* byte offset of that record in the input */
} transcode_error;

/* Consul's `GET /v1/kv/<prefix>?recurse` body for a packed listing:
 * [{"LockIndex":0,"Key":"a","Flags":0,"Value":"YmFy","CreateIndex":5,"ModifyIndex":7},...]
 * Fields in Consul's order; Session only when set (not nil, not ""); Value base64 (standard
 * alphabet, padded) or null when empty; strings escaped as Go's encoding/json does by default
 * (HTML-safe, U+2028/U+2029 escaped, each byte of invalid UTF-8 as \ufffd).  An empty listing
 * renders as [] (Consul answers 404 instead; that is the HTTP layer's call). */
int transcode_kv_json(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                      size_t *out_len, transcode_error *err);

/* The same body for one key and its stored entry: a one-element array, as Consul returns for
 * a single-key GET. */
int transcode_kv_entry_json(const uint8_t *key, size_t key_len, const uint8_t *entry,
                            size_t entry_len, uint8_t *out, size_t cap, size_t *out_len,
                            transcode_error *err);

/* Consul's `?keys` body for packed keys: ["a/","a/b",...]. */
int transcode_keys_json(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                        size_t *out_len, transcode_error *err);

/* An RPC reply for a packed listing: a msgpack array with one [key (bin), entry] pair per
 * record, the entry being the stored bytes as they are (validated first, never re-encoded). */
int transcode_kv_msgpack(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                         size_t *out_len, transcode_error *err);

#endif
