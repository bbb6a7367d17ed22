/* The trace encoder's shared parts (docs/trace-format.md): the output buffer, one chunk's
 * encoder state, and what _values.c (tables, values), _crc32.c and _encode.c (records,
 * chunks) give each other. */
#ifndef TIDESCOPE_ENCODE_H
#define TIDESCOPE_ENCODE_H

#include "_slots.h"
#include <string.h>

#define MAX_BODY (64 << 20)
/* _scan_encoded stops taking slots past this many bytes of records, so that a chunk stays
 * under MAX_BODY (a record is bounded by the snapshot limits, far below the rest). */
#define SOFT_BODY (32 << 20)
#define MAX_DEPTH 64
#define ID_SHIFT 22
#define ID_MASK ((1 << ID_SHIFT) - 1)

enum { CHUNK_EVENTS = 2 };
enum { REC_ENTRY = 1, REC_EXIT = 2, REC_OTHER = 3, REC_WHOLE = 4 };
enum {
    T_NONE, T_FALSE, T_TRUE, T_INT, T_BIGINT, T_FLOAT, T_STR, T_BYTES, T_BYTEARRAY, T_TUPLE,
    T_LIST, T_SET, T_FROZENSET, T_SHAPED, T_DICT, T_TRUNCATED, T_OBJECT, T_REDACTED,
    T_COMPLEX, T_ELLIPSIS, T_NOTIMPLEMENTED, T_RANGE, T_DATETIME, T_DATE, T_TIME,
    T_TIMEDELTA, T_TIMEZONE, T_UUID, T_EVENT_TYPE, T_REF, T_UNSUPPORTED = 0x1F, T_SMALL = 0x80
};

typedef __int128 i128;
/* --------------------------------------------------------------------------------- */
/* the output buffer                                                                  */

typedef struct { uint8_t *p; size_t len, cap; } Buf;

static inline int
buf_grow(Buf *b, size_t more)
{
    size_t need = b->len + more;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    uint8_t *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int
put_u8(Buf *b, uint8_t x)
{
    if (b->len == b->cap && buf_grow(b, 1) < 0) return -1;
    b->p[b->len++] = x;
    return 0;
}

static inline int
put_bytes(Buf *b, const void *src, size_t n)
{
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static inline int
put_uv(Buf *b, uint64_t n)
{
    if (b->cap - b->len < 10 && buf_grow(b, 10) < 0) return -1;
    uint8_t *o = b->p + b->len;
    while (n > 0x7F) {
        *o++ = (uint8_t)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *o++ = (uint8_t)n;
    b->len = (size_t)(o - b->p);
    return 0;
}

static inline uint64_t
zigzag(int64_t n)
{
    return ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
}

/* --------------------------------------------------------------------------------- */
/* one chunk's encoder: its tables and field registers                                */

/* A register's last value: None, an integer held as i128 (|v| < 2**64), any other exact
 * int (o), an exact str (o), or anything else (no value needed: never compared). */
enum { L_NONE, L_INT, L_BIG, L_STR, L_OTHER };
typedef struct { int kind; i128 i; PyObject *o; } Last;

#define SITE_CACHE 64
#define SHAPE_CACHE 32
#define SHAPE_KEYS 8
/* In front of the tables (keyed by value, as the pure encoder's dicts): caches keyed by
 * the objects' addresses, which hold references so that an address is never reused. */
typedef struct { PyObject *a, *b; PyObject *k; } SiteHit;
typedef struct { Py_ssize_t n; PyObject *keys[SHAPE_KEYS]; PyObject *k; } ShapeHit;

typedef struct {
    Buf out;
    PyObject *strings, *sites, *shapes; /* value -> its ref (an int) */
    Last last[8];
    int64_t last64[8]; /* last[i].i, for each bit i of `fast` ... */
    unsigned fast;     /* ... set when last[i] is an int of the int64 range */
    SiteHit site_hits[SITE_CACHE];
    ShapeHit shape_hits[SHAPE_CACHE];
    uint64_t *site_refs; /* site id -> its site ref in this chunk (0: not yet written) */
    Py_ssize_t n_site_refs;
    PyObject *reason; /* the last exit reason written, and its string ref */
    uint64_t reason_ref;
    Slot *slot;   /* the copy of a slot being encoded, its objects borrowed until... */
    Garbage held; /* ... enc_pin() takes them here (n < 0: not yet) */
} Enc;

/* Before anything that may run Python code (a marker's attributes, str(), type_name(),
 * isoformat()...): the slot being encoded takes references to its objects, which another
 * thread's writes could otherwise release (see _ring.c). Nothing else the encoder does
 * runs Python code, the collector being off during the scan. */
static inline void
enc_pin(Enc *e)
{
    if (e->slot != NULL && e->held.n < 0) hold_slot(e->slot, &e->held);
}

/* _crc32.c */
uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n);
void crc_init(void);

/* _values.c: the objects compared with (enc_init() looks them up once), the chunk's
 * encoder, its tables and values */
extern PyObject *g_entry_keys, *g_exit_keys; /* the data dicts' keys, as tuples */
int enc_init(void);
PyObject *ts_attr_of(const char *module, const char *name);
int enc_open(Enc *e);
void enc_close(Enc *e);
int put_string(Enc *e, PyObject *s);
int put_site(Enc *e, PyObject *a, PyObject *b);
int put_site_id(Enc *e, int32_t site, PyObject *a, PyObject *b);
int put_reason(Enc *e, PyObject *s);
int put_shape(Enc *e, PyObject **keys, Py_ssize_t n);
/* An int64 as a value (tags 0x80+n, 0x03): put_int's common case, inline. */
static inline int
put_int64(Enc *e, int64_t v)
{
    Buf *b = &e->out;
    if (b->cap - b->len < 11 && buf_grow(b, 11) < 0) return -1;
    uint8_t *o = b->p + b->len;
    if ((uint64_t)v < 128) {
        *o++ = (uint8_t)(T_SMALL + v);
    }
    else {
        *o++ = T_INT;
        uint64_t z = zigzag(v);
        while (z > 0x7F) {
            *o++ = (uint8_t)((z & 0x7F) | 0x80);
            z >>= 7;
        }
        *o++ = (uint8_t)z;
    }
    b->len = (size_t)(o - b->p);
    return 0;
}

int put_value_any(Enc *e, PyObject *v, int depth);

/* A value: None, a bool or an int of at most two digits inline, the rest by put_value_any. */
__attribute__((always_inline)) static inline int
put_value(Enc *e, PyObject *v, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    int64_t x;
    if (t == &PyLong_Type && small_long(v, &x)) return put_int64(e, x);
    if (v == Py_None) return put_u8(&e->out, T_NONE);
    if (t == &PyBool_Type) return put_u8(&e->out, v == Py_True ? T_TRUE : T_FALSE);
    return put_value_any(e, v, depth);
}
int put_items(Enc *e, PyObject *const *items, Py_ssize_t n, int depth);
int put_int(Enc *e, i128 v);

int put_bigint(Enc *e, PyObject *v);
int long_i128(PyObject *v, i128 *out);

#endif
