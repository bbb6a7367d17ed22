/* The trace encoder: ring records as EVENTS chunks of docs/trace-format.md, in C.
 *
 * The twin of export/_tsformat.py's encoder (the specification): the same records give the
 * same bytes. Two ways in:
 *
 *   RingStorage._scan_encoded   the ring's published slots straight into a chunk's
 *                               records: the raw integers of a slot (ids, clocks, thread,
 *                               task, correlation, parent, call, an exit's duration) are
 *                               written without a Python object; referenced values
 *                               (arguments, return values, snapshots) are walked under
 *                               the GIL. frame_events_chunk() then puts the chunk's head
 *                               (running counts, taken after the read) and its frame on.
 *   encode_events_chunk         records given as tuples (RingBuffer.drain_records()).
 *
 * Never crashes: allocation failures raise MemoryError, a value nested past MAX_DEPTH or
 * of a type the format has no tag for is written as tag 0x1F, and Python code the
 * encoder runs (isoformat(), str() of a few types) failing gives the same fallback as
 * the pure encoder. CRC-32 is computed here (slicing by 8), without zlib.
 */
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
    T_TIMEDELTA, T_TIMEZONE, T_UUID, T_EVENT_TYPE, T_UNSUPPORTED = 0x1F, T_SMALL = 0x80
};
/* the id fields' deltas are in units of 2**22 (ids are (sequence << 22) | pid) */
static const int ID_FIELD[8] = {1, 0, 0, 0, 1, 1, 1, 0};

typedef __int128 i128;

/* --------------------------------------------------------------------------------- */
/* CRC-32 (IEEE, zlib's), slicing by 8                                                */

static uint32_t crc_table[8][256];
static int crc_ready = 0;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    crc_ready = 1;
}

static uint32_t
crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    if (!crc_ready) crc_init();
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        a = __builtin_bswap32(a);
        b = __builtin_bswap32(b);
#endif
        a ^= crc;
        crc = crc_table[7][a & 0xFF] ^ crc_table[6][(a >> 8) & 0xFF] ^
              crc_table[5][(a >> 16) & 0xFF] ^ crc_table[4][a >> 24] ^
              crc_table[3][b & 0xFF] ^ crc_table[2][(b >> 8) & 0xFF] ^
              crc_table[1][(b >> 16) & 0xFF] ^ crc_table[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

/* crc32(data, value=0): zlib.crc32's twin, for tests and benchmarks. */
PyObject *
ts_crc32(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32(data, value=0)");
        return NULL;
    }
    unsigned long start = 0;
    if (nargs == 2) {
        start = PyLong_AsUnsignedLongMask(args[1]);
        if (start == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t crc;
    if (!crc_ready) crc_init(); /* before other threads can run */
    Py_BEGIN_ALLOW_THREADS
    crc = crc32_update((uint32_t)start, view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

/* --------------------------------------------------------------------------------- */
/* the output buffer                                                                  */

typedef struct { uint8_t *p; size_t len, cap; } Buf;

static int
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
/* the Python objects the encoder compares with (looked up once)                      */

static PyObject *g_truncated, *g_snapshot, *g_redacted, *g_event_type;
static PyObject *g_datetime, *g_date, *g_time, *g_timedelta, *g_timezone, *g_uuid;
static PyObject *g_enum, *g_decimal, *g_fraction, *g_purepath, *g_type_name;
static PyObject *g_entry_keys, *g_exit_keys; /* the data dicts' keys, as tuples */
static PyObject *g_zero, *g_signed_kw;
static PyObject *s_type_name, *s_size, *s_reason, *s_kept, *s_object_id, *s_attrs, *s_repr;
static PyObject *s_start, *s_stop, *s_step, *s_isoformat, *s_days, *s_seconds,
    *s_microseconds, *s_utcoffset, *s_tzname, *s_bytes, *s_value_, *s_name_, *s_bit_length,
    *s_to_bytes, *s_little;
static int enc_ready = 0;

static PyObject *
attr_of(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) return NULL;
    PyObject *v = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return v;
}

static int
enc_init(void)
{
    if (enc_ready) return 0;
    struct { PyObject **slot; const char *module, *name; } objs[] = {
        {&g_truncated, "tidescope.events", "Truncated"},
        {&g_snapshot, "tidescope.events", "ObjectSnapshot"},
        {&g_redacted, "tidescope.events", "Redacted"},
        {&g_event_type, "tidescope.events", "EventType"},
        {&g_datetime, "datetime", "datetime"},
        {&g_date, "datetime", "date"},
        {&g_time, "datetime", "time"},
        {&g_timedelta, "datetime", "timedelta"},
        {&g_timezone, "datetime", "timezone"},
        {&g_uuid, "uuid", "UUID"},
        {&g_enum, "enum", "Enum"},
        {&g_decimal, "decimal", "Decimal"},
        {&g_fraction, "fractions", "Fraction"},
        {&g_purepath, "pathlib", "PurePath"},
        {&g_type_name, "tidescope.capture._snapshot", "type_name"},
        {NULL, NULL, NULL},
    };
    for (int k = 0; objs[k].slot; k++) {
        if (*objs[k].slot) continue;
        PyObject *v = attr_of(objs[k].module, objs[k].name);
        if (v == NULL) return -1;
        *objs[k].slot = v;
    }
    struct { PyObject **slot; const char *s; } names[] = {
        {&s_type_name, "type_name"}, {&s_size, "size"}, {&s_reason, "reason"},
        {&s_kept, "kept"}, {&s_object_id, "object_id"}, {&s_attrs, "attrs"},
        {&s_repr, "repr"}, {&s_start, "start"}, {&s_stop, "stop"}, {&s_step, "step"},
        {&s_isoformat, "isoformat"}, {&s_days, "days"}, {&s_seconds, "seconds"},
        {&s_microseconds, "microseconds"}, {&s_utcoffset, "utcoffset"},
        {&s_tzname, "tzname"}, {&s_bytes, "bytes"}, {&s_value_, "_value_"},
        {&s_name_, "_name_"}, {&s_bit_length, "bit_length"}, {&s_to_bytes, "to_bytes"},
        {&s_little, "little"}, {NULL, NULL},
    };
    for (int k = 0; names[k].slot; k++) {
        if (*names[k].slot) continue;
        *names[k].slot = PyUnicode_InternFromString(names[k].s);
        if (*names[k].slot == NULL) return -1;
    }
    if (g_entry_keys == NULL)
        g_entry_keys = Py_BuildValue("(ssss)", "module", "function", "arity", "args");
    if (g_exit_keys == NULL)
        g_exit_keys = Py_BuildValue("(ssss)", "return_value", "exception", "duration_ns",
                                    "exit_reason");
    if (g_zero == NULL) g_zero = PyLong_FromLong(0);
    if (g_signed_kw == NULL) g_signed_kw = Py_BuildValue("(s)", "signed");
    if (!g_entry_keys || !g_exit_keys || !g_zero || !g_signed_kw) return -1;
    if (!crc_ready) crc_init();
    enc_ready = 1;
    return 0;
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
    Py_ssize_t nsites, nshapes;
    Last last[8];
    SiteHit site_hits[SITE_CACHE];
    ShapeHit shape_hits[SHAPE_CACHE];
} Enc;

static int
enc_open(Enc *e)
{
    memset(e, 0, sizeof(*e));
    e->strings = PyDict_New();
    e->sites = PyDict_New();
    e->shapes = PyDict_New();
    if (!e->strings || !e->sites || !e->shapes) return -1;
    return 0;
}

static void
enc_close(Enc *e)
{
    Py_CLEAR(e->strings);
    Py_CLEAR(e->sites);
    Py_CLEAR(e->shapes);
    for (int i = 0; i < 8; i++) Py_CLEAR(e->last[i].o);
    for (int i = 0; i < SITE_CACHE; i++) {
        Py_CLEAR(e->site_hits[i].a);
        Py_CLEAR(e->site_hits[i].b);
        Py_CLEAR(e->site_hits[i].k);
    }
    for (int i = 0; i < SHAPE_CACHE; i++) {
        for (Py_ssize_t j = 0; j < e->shape_hits[i].n; j++) Py_CLEAR(e->shape_hits[i].keys[j]);
        e->shape_hits[i].n = 0;
        Py_CLEAR(e->shape_hits[i].k);
    }
    PyMem_Free(e->out.p);
    e->out.p = NULL;
}

/* A string ref: the k of a string seen in this chunk, or 0 and the string. */
static int
put_string(Enc *e, PyObject *s)
{
    PyObject *k = PyDict_GetItemWithError(e->strings, s);
    if (k != NULL) return put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(k));
    if (PyErr_Occurred()) return -1;
    PyObject *tmp = NULL;
    const char *utf8;
    Py_ssize_t n;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) return -1; /* a legacy string, on 3.11 */
#endif
    if (PyUnicode_IS_ASCII(s)) {
        utf8 = (const char *)PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    }
    else {
        /* not AsUTF8AndSize: it would keep a UTF-8 copy in the object, and fails on lone
         * surrogates, which the format passes through */
        tmp = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
        if (tmp == NULL) return -1;
        utf8 = PyBytes_AS_STRING(tmp);
        n = PyBytes_GET_SIZE(tmp);
    }
    int r = put_u8(&e->out, 0) < 0 || put_uv(&e->out, (uint64_t)n) < 0 ||
                    put_bytes(&e->out, utf8, (size_t)n) < 0
                ? -1
                : 0;
    Py_XDECREF(tmp);
    if (r < 0) return -1;
    PyObject *ref = PyLong_FromSsize_t(PyDict_GET_SIZE(e->strings) + 1);
    if (ref == NULL) return -1;
    r = PyDict_SetItem(e->strings, s, ref);
    Py_DECREF(ref);
    return r;
}

static inline unsigned
addr_hash(const void *a, const void *b)
{
    uint64_t h = ((uint64_t)(uintptr_t)a * 0x9E3779B97F4A7C15ULL) ^
                 ((uint64_t)(uintptr_t)b * 0xC2B2AE3D27D4EB4FULL);
    return (unsigned)(h >> 40);
}

/* A site ref for (module, function), both exact str. */
static int
put_site(Enc *e, PyObject *a, PyObject *b)
{
    SiteHit *h = &e->site_hits[addr_hash(a, b) % SITE_CACHE];
    if (h->a == a && h->b == b) return put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(h->k));
    PyObject *key = PyTuple_Pack(2, a, b);
    if (key == NULL) return -1;
    PyObject *k = PyDict_GetItemWithError(e->sites, key);
    if (k != NULL) {
        Py_INCREF(k);
        if (put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(k)) < 0) goto fail;
    }
    else {
        if (PyErr_Occurred()) goto fail;
        k = PyLong_FromSsize_t(++e->nsites);
        if (k == NULL || PyDict_SetItem(e->sites, key, k) < 0 || put_u8(&e->out, 0) < 0 ||
            put_string(e, a) < 0 || put_string(e, b) < 0)
            goto fail;
    }
    Py_DECREF(key);
    Py_XSETREF(h->a, Py_NewRef(a));
    Py_XSETREF(h->b, Py_NewRef(b));
    Py_XSETREF(h->k, k);
    return 0;
fail:
    Py_DECREF(key);
    Py_XDECREF(k);
    return -1;
}

/* A shape ref for the n keys (exact str) of a dict. */
static int
put_shape(Enc *e, PyObject **keys, Py_ssize_t n)
{
    ShapeHit *h = NULL;
    if (n <= SHAPE_KEYS) {
        uint64_t acc = (uint64_t)n;
        for (Py_ssize_t j = 0; j < n; j++) acc = acc * 31 + (uint64_t)(uintptr_t)keys[j];
        h = &e->shape_hits[addr_hash((void *)(uintptr_t)acc, NULL) % SHAPE_CACHE];
        if (h->k != NULL && h->n == n) {
            Py_ssize_t j = 0;
            while (j < n && h->keys[j] == keys[j]) j++;
            if (j == n) return put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(h->k));
        }
    }
    PyObject *key = PyTuple_New(n);
    if (key == NULL) return -1;
    for (Py_ssize_t j = 0; j < n; j++) PyTuple_SET_ITEM(key, j, Py_NewRef(keys[j]));
    PyObject *k = PyDict_GetItemWithError(e->shapes, key);
    if (k != NULL) {
        Py_INCREF(k);
        if (put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(k)) < 0) goto fail;
    }
    else {
        if (PyErr_Occurred()) goto fail;
        k = PyLong_FromSsize_t(++e->nshapes);
        if (k == NULL || PyDict_SetItem(e->shapes, key, k) < 0 || put_u8(&e->out, 0) < 0 ||
            put_uv(&e->out, (uint64_t)n) < 0)
            goto fail;
        for (Py_ssize_t j = 0; j < n; j++)
            if (put_string(e, keys[j]) < 0) goto fail;
    }
    Py_DECREF(key);
    if (h != NULL) {
        for (Py_ssize_t j = 0; j < h->n; j++) Py_CLEAR(h->keys[j]);
        for (Py_ssize_t j = 0; j < n; j++) h->keys[j] = Py_NewRef(keys[j]);
        h->n = n;
        Py_XSETREF(h->k, k);
    }
    else {
        Py_DECREF(k);
    }
    return 0;
fail:
    Py_DECREF(key);
    Py_XDECREF(k);
    return -1;
}

/* --------------------------------------------------------------------------------- */
/* values                                                                             */

static int put_value(Enc *e, PyObject *v, int depth);

/* An int of the i128 range as a value (tags 0x80+n, 0x03, 0x04). */
static int
put_int(Enc *e, i128 v)
{
    if (v >= 0 && v < 128) return put_u8(&e->out, (uint8_t)(T_SMALL + v));
    if (v >= INT64_MIN && v <= INT64_MAX)
        return put_u8(&e->out, T_INT) < 0 ? -1 : put_uv(&e->out, zigzag((int64_t)v));
    i128 m = v < 0 ? ~v : v;
    int bits = 0;
    while (m) {
        bits++;
        m >>= 1;
    }
    int n = (bits + 8) / 8;
    if (put_u8(&e->out, T_BIGINT) < 0 || put_uv(&e->out, (uint64_t)n) < 0 ||
        buf_grow(&e->out, (size_t)n) < 0)
        return -1;
    for (int j = 0; j < n; j++) e->out.p[e->out.len++] = (uint8_t)(v >> (8 * j));
    return 0;
}

/* An exact int as an i128 when |v| < 2**64: 1 (and *out), 0 when it is bigger, -1. */
static int
long_i128(PyObject *v, i128 *out)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (!overflow) {
        *out = x;
        return 1;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear();
            return 0;
        }
        *out = (i128)u;
        return 1;
    }
    return 0;
}

/* An int outside the i128 window: tag 0x04 through int.to_bytes (rare). */
static int
put_bigint(Enc *e, PyObject *v)
{
    int neg = PyObject_RichCompareBool(v, g_zero, Py_LT);
    if (neg < 0) return -1;
    PyObject *m = neg ? PyNumber_Invert(v) : Py_NewRef(v);
    if (m == NULL) return -1;
    PyObject *bits = PyObject_CallMethodNoArgs(m, s_bit_length);
    Py_DECREF(m);
    if (bits == NULL) return -1;
    Py_ssize_t nbits = PyLong_AsSsize_t(bits);
    Py_DECREF(bits);
    if (nbits == -1 && PyErr_Occurred()) return -1;
    PyObject *n = PyLong_FromSsize_t((nbits + 8) / 8);
    if (n == NULL) return -1;
    PyObject *argv[4] = {v, n, s_little, Py_True}; /* to_bytes(n, "little", signed=True) */
    PyObject *b = PyObject_VectorcallMethod(s_to_bytes, argv, 3, g_signed_kw);
    Py_DECREF(n);
    if (b == NULL) return -1;
    int r = put_u8(&e->out, T_BIGINT) < 0 ||
                    put_uv(&e->out, (uint64_t)PyBytes_GET_SIZE(b)) < 0 ||
                    put_bytes(&e->out, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)) < 0
                ? -1
                : 0;
    Py_DECREF(b);
    return r;
}

static int
put_long(Enc *e, PyObject *v)
{
    i128 x;
    int r = long_i128(v, &x);
    if (r < 0) return -1;
    return r ? put_int(e, x) : put_bigint(e, v);
}

/* Clear an exception of the kinds the pure encoder's `except Exception` catches: 0, or -1
 * (a BaseException that is not an Exception stays set). */
static int
swallow(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyErr_Clear();
    return 0;
}

/* The text an unsupported value keeps (_tsformat._text_of): a new str, or None. */
static PyObject *
text_of(PyObject *v, PyTypeObject *t)
{
    PyObject *text = NULL;
    int sub = PyObject_IsSubclass((PyObject *)t, g_enum);
    if (sub < 0) goto fail;
    if (sub) {
        text = PyObject_GetAttr(v, s_name_);
    }
    else {
        if ((PyObject *)t != g_decimal && (PyObject *)t != g_fraction) {
            sub = PyObject_IsSubclass((PyObject *)t, g_purepath);
            if (sub < 0) goto fail;
            if (!sub) Py_RETURN_NONE;
        }
        text = PyObject_Str(v);
    }
    if (text == NULL) goto fail;
    if (!PyUnicode_CheckExact(text)) {
        Py_DECREF(text);
        Py_RETURN_NONE;
    }
    return text;
fail:
    if (swallow() < 0) return NULL;
    Py_RETURN_NONE;
}

/* Tag 0x1F: the type's module.qualname (capture._snapshot.type_name), then its text. */
static int
put_unsupported(Enc *e, PyObject *v, int with_text)
{
    PyTypeObject *t = Py_TYPE(v);
    PyObject *name = PyObject_CallOneArg(g_type_name, (PyObject *)t);
    if (name == NULL) return -1;
    if (!PyUnicode_CheckExact(name)) { /* type_name() always gives a str */
        Py_DECREF(name);
        name = PyUnicode_FromString("<unknown type>");
        if (name == NULL) return -1;
    }
    int r = put_u8(&e->out, T_UNSUPPORTED) < 0 || put_string(e, name) < 0 ? -1 : 0;
    Py_DECREF(name);
    if (r < 0) return -1;
    if (!with_text) return put_u8(&e->out, T_NONE);
    PyObject *text = text_of(v, t);
    if (text == NULL) return -1;
    r = put_value(e, text, 0);
    Py_DECREF(text);
    return r;
}

/* A fixed list of items (new references) taken from a container before any is written:
 * writing may run Python code (isoformat(), str()) that changes the container. */
typedef struct { PyObject **items; Py_ssize_t n; PyObject *small[16]; } Items;

static int
items_alloc(Items *it, Py_ssize_t n)
{
    it->n = 0;
    it->items = it->small;
    if (n > 16) {
        it->items = PyMem_Calloc((size_t)n, sizeof(PyObject *));
        if (it->items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void
items_free(Items *it)
{
    for (Py_ssize_t j = 0; j < it->n; j++) Py_DECREF(it->items[j]);
    if (it->items != it->small) PyMem_Free(it->items);
}

static int
put_items(Enc *e, PyObject *const *items, Py_ssize_t n, int depth)
{
    for (Py_ssize_t j = 0; j < n; j++)
        if (put_value(e, items[j], depth) < 0) return -1;
    return 0;
}

static int
put_dict(Enc *e, PyObject *v, int depth)
{
    Py_ssize_t n = PyDict_GET_SIZE(v), pos = 0, j = 0;
    PyObject *key, *val;
    Items it;
    if (items_alloc(&it, 2 * n) < 0) return -1;
    int all_str = 1;
    while (j < n && PyDict_Next(v, &pos, &key, &val)) {
        all_str &= PyUnicode_CheckExact(key);
        it.items[j] = Py_NewRef(key);
        it.items[n + j] = Py_NewRef(val);
        j++;
    }
    if (j < n) { /* cannot happen under the GIL: nothing above runs Python code */
        for (Py_ssize_t q = 0; q < j; q++) {
            Py_DECREF(it.items[q]);
            Py_DECREF(it.items[n + q]);
        }
        if (it.items != it.small) PyMem_Free(it.items);
        PyErr_SetString(PyExc_RuntimeError, "dict changed size during encoding");
        return -1;
    }
    it.n = 2 * n;
    int r = -1;
    if (all_str) {
        if (put_u8(&e->out, T_SHAPED) < 0 || put_shape(e, it.items, n) < 0 ||
            put_items(e, it.items + n, n, depth + 1) < 0)
            goto done;
    }
    else {
        if (put_u8(&e->out, T_DICT) < 0 || put_uv(&e->out, (uint64_t)n) < 0) goto done;
        for (j = 0; j < n; j++)
            if (put_value(e, it.items[j], depth + 1) < 0 ||
                put_value(e, it.items[n + j], depth + 1) < 0)
                goto done;
    }
    r = 0;
done:
    items_free(&it);
    return r;
}

static int
put_sequence(Enc *e, PyObject *v, uint8_t tag, int depth)
{
    int r = -1;
    if (PyTuple_CheckExact(v)) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (put_u8(&e->out, tag) < 0 || put_uv(&e->out, (uint64_t)n) < 0) return -1;
        return put_items(e, ((PyTupleObject *)v)->ob_item, n, depth + 1);
    }
    if (PyList_CheckExact(v)) {
        Items it;
        Py_ssize_t n = PyList_GET_SIZE(v);
        if (items_alloc(&it, n) < 0) return -1;
        for (Py_ssize_t j = 0; j < n; j++) it.items[j] = Py_NewRef(PyList_GET_ITEM(v, j));
        it.n = n;
        if (put_u8(&e->out, tag) >= 0 && put_uv(&e->out, (uint64_t)n) >= 0 &&
            put_items(e, it.items, n, depth + 1) >= 0)
            r = 0;
        items_free(&it);
        return r;
    }
    PyObject *t = PySequence_Tuple(v); /* a set or frozenset, in iteration order */
    if (t == NULL) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    if (put_u8(&e->out, tag) >= 0 && put_uv(&e->out, (uint64_t)n) >= 0 &&
        put_items(e, ((PyTupleObject *)t)->ob_item, n, depth + 1) >= 0)
        r = 0;
    Py_DECREF(t);
    return r;
}

/* The attributes of a marker, new references, or -1. */
static int
get_attrs(PyObject *v, PyObject **names, PyObject **out, int n)
{
    for (int j = 0; j < n; j++) {
        out[j] = PyObject_GetAttr(v, names[j]);
        if (out[j] == NULL) {
            while (j--) Py_CLEAR(out[j]);
            return -1;
        }
    }
    return 0;
}

static int
put_truncated(Enc *e, PyObject *v, int depth)
{
    PyObject *names[4] = {s_type_name, s_size, s_reason, s_kept}, *a[4];
    if (get_attrs(v, names, a, 4) < 0) return -1;
    int r = -1, ok = depth < MAX_DEPTH && PyUnicode_CheckExact(a[0]) &&
                     PyLong_CheckExact(a[1]) && PyUnicode_CheckExact(a[2]);
    unsigned long long size = 0;
    if (ok) {
        size = PyLong_AsUnsignedLongLong(a[1]);
        if (size == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) goto done;
            PyErr_Clear();
            ok = 0;
        }
    }
    if (!ok) {
        r = put_unsupported(e, v, 0);
        goto done;
    }
    if (put_u8(&e->out, T_TRUNCATED) < 0 || put_string(e, a[0]) < 0 ||
        put_uv(&e->out, size) < 0 || put_string(e, a[2]) < 0 ||
        put_value(e, a[3], depth + 1) < 0)
        goto done;
    r = 0;
done:
    for (int j = 0; j < 4; j++) Py_DECREF(a[j]);
    return r;
}

static int
put_snapshot(Enc *e, PyObject *v, int depth)
{
    PyObject *names[4] = {s_type_name, s_object_id, s_attrs, s_repr}, *a[4];
    if (get_attrs(v, names, a, 4) < 0) return -1;
    int r;
    if (depth >= MAX_DEPTH || !PyUnicode_CheckExact(a[0]))
        r = put_unsupported(e, v, 0);
    else
        r = put_u8(&e->out, T_OBJECT) < 0 || put_string(e, a[0]) < 0 ||
                    put_value(e, a[1], depth + 1) < 0 || put_value(e, a[2], depth + 1) < 0 ||
                    put_value(e, a[3], depth + 1) < 0
                ? -1
                : 0;
    for (int j = 0; j < 4; j++) Py_DECREF(a[j]);
    return r;
}

/* A timedelta's days, seconds, microseconds as zigzags. */
static int
put_timedelta(Enc *e, PyObject *v)
{
    PyObject *names[3] = {s_days, s_seconds, s_microseconds}, *a[3];
    if (get_attrs(v, names, a, 3) < 0) return -1;
    int r = 0;
    for (int j = 0; j < 3 && r == 0; j++) {
        long long x = PyLong_AsLongLong(a[j]);
        r = (x == -1 && PyErr_Occurred()) || put_uv(&e->out, zigzag(x)) < 0 ? -1 : 0;
    }
    for (int j = 0; j < 3; j++) Py_DECREF(a[j]);
    return r;
}

/* The rarer tags (_tsformat._Encoder.other). */
static int
put_other(Enc *e, PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    PyObject *o = (PyObject *)t;
    if (t == &PyComplex_Type) {
        uint8_t b[16];
        Py_complex c = ((PyComplexObject *)v)->cval;
        if (PyFloat_Pack8(c.real, (char *)b, 1) < 0 || PyFloat_Pack8(c.imag, (char *)b + 8, 1) < 0)
            return -1;
        return put_u8(&e->out, T_COMPLEX) < 0 ? -1 : put_bytes(&e->out, b, 16);
    }
    if (v == Py_Ellipsis) return put_u8(&e->out, T_ELLIPSIS);
    if (v == Py_NotImplemented) return put_u8(&e->out, T_NOTIMPLEMENTED);
    if (t == &PyRange_Type) {
        PyObject *names[3] = {s_start, s_stop, s_step}, *a[3];
        if (get_attrs(v, names, a, 3) < 0) return -1;
        int r = put_u8(&e->out, T_RANGE) < 0 || put_value(e, a[0], 0) < 0 ||
                        put_value(e, a[1], 0) < 0 || put_value(e, a[2], 0) < 0
                    ? -1
                    : 0;
        for (int j = 0; j < 3; j++) Py_DECREF(a[j]);
        return r;
    }
    if (o == g_datetime || o == g_date || o == g_time) {
        /* a user tzinfo's utcoffset() runs here, and may fail */
        PyObject *text = PyObject_CallMethodNoArgs(v, s_isoformat);
        if (text == NULL && swallow() < 0) return -1;
        if (text == NULL || !PyUnicode_CheckExact(text)) {
            Py_XDECREF(text);
            return put_unsupported(e, v, 0);
        }
        uint8_t tag = o == g_datetime ? T_DATETIME : o == g_date ? T_DATE : T_TIME;
        int r = put_u8(&e->out, tag) < 0 || put_string(e, text) < 0 ? -1 : 0;
        Py_DECREF(text);
        return r;
    }
    if (o == g_timedelta) return put_u8(&e->out, T_TIMEDELTA) < 0 ? -1 : put_timedelta(e, v);
    if (o == g_timezone) {
        PyObject *off = PyObject_CallMethodOneArg(v, s_utcoffset, Py_None);
        if (off == NULL) return -1;
        int r = put_u8(&e->out, T_TIMEZONE) < 0 || put_timedelta(e, off) < 0 ? -1 : 0;
        Py_DECREF(off);
        if (r < 0) return -1;
        PyObject *name = PyObject_CallMethodOneArg(v, s_tzname, Py_None);
        if (name == NULL) return -1;
        r = put_value(e, name, 0);
        Py_DECREF(name);
        return r;
    }
    if (o == g_uuid) {
        PyObject *b = PyObject_GetAttr(v, s_bytes);
        if (b == NULL) return -1;
        int r = !PyBytes_Check(b) ? (PyErr_SetString(PyExc_TypeError, "UUID.bytes"), -1)
                : put_u8(&e->out, T_UUID) < 0
                    ? -1
                    : put_bytes(&e->out, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
        Py_DECREF(b);
        return r;
    }
    if (o == g_event_type) {
        PyObject *value = PyObject_GetAttr(v, s_value_);
        if (value == NULL) return -1;
        int r = PyUnicode_CheckExact(value)
                    ? (put_u8(&e->out, T_EVENT_TYPE) < 0 ? -1 : put_string(e, value))
                    : put_unsupported(e, v, 0);
        Py_DECREF(value);
        return r;
    }
    return put_unsupported(e, v, 1);
}

static int
put_value(Enc *e, PyObject *v, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type) return put_long(e, v);
    if (t == &PyUnicode_Type) return put_u8(&e->out, T_STR) < 0 ? -1 : put_string(e, v);
    if (v == Py_None) return put_u8(&e->out, T_NONE);
    if (t == &PyBool_Type) return put_u8(&e->out, v == Py_True ? T_TRUE : T_FALSE);
    if (t == &PyFloat_Type) {
        uint8_t b[8];
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(v), (char *)b, 1) < 0) return -1;
        return put_u8(&e->out, T_FLOAT) < 0 ? -1 : put_bytes(&e->out, b, 8);
    }
    uint8_t seq = t == &PyTuple_Type       ? T_TUPLE
                  : t == &PyList_Type      ? T_LIST
                  : t == &PySet_Type       ? T_SET
                  : t == &PyFrozenSet_Type ? T_FROZENSET
                                           : 0;
    if (seq || t == &PyDict_Type) {
        if (depth >= MAX_DEPTH) return put_unsupported(e, v, 0);
        /* the depth above bounds this recursion, but a C stack is not Python's */
        if (Py_EnterRecursiveCall(" while encoding a trace value")) return -1;
        int r = seq ? put_sequence(e, v, seq, depth) : put_dict(e, v, depth);
        Py_LeaveRecursiveCall();
        return r;
    }
    PyObject *o = (PyObject *)t;
    if (o == g_truncated) return put_truncated(e, v, depth);
    if (o == g_snapshot) return put_snapshot(e, v, depth);
    if (o == g_redacted) {
        PyObject *name = PyObject_GetAttr(v, s_type_name);
        if (name == NULL) return -1;
        int r = PyUnicode_CheckExact(name)
                    ? (put_u8(&e->out, T_REDACTED) < 0 ? -1 : put_string(e, name))
                    : put_unsupported(e, v, 1);
        Py_DECREF(name);
        return r;
    }
    if (t == &PyBytes_Type || t == &PyByteArray_Type) {
        int b = t == &PyBytes_Type;
        Py_ssize_t n = b ? PyBytes_GET_SIZE(v) : PyByteArray_GET_SIZE(v);
        const char *p = b ? PyBytes_AS_STRING(v) : PyByteArray_AS_STRING(v);
        return put_u8(&e->out, b ? T_BYTES : T_BYTEARRAY) < 0 ||
                       put_uv(&e->out, (uint64_t)n) < 0 || put_bytes(&e->out, p, (size_t)n) < 0
                   ? -1
                   : 0;
    }
    return put_other(e, v);
}

/* --------------------------------------------------------------------------------- */
/* records                                                                            */

/* An envelope field as the encoder sees it: None, an integer (|v| < 2**64), or an
 * object (any other value, a borrowed reference). */
enum { F_NONE, F_INT, F_OBJ };
typedef struct { int kind; i128 i; PyObject *o; } Field;

static inline void
field_raw(Field *f, int64_t i)
{
    f->kind = F_INT;
    f->i = i;
}

static int
field_obj(Field *f, PyObject *o)
{
    if (o == NULL || o == Py_None) {
        f->kind = F_NONE;
        return 0;
    }
    if (PyLong_CheckExact(o)) {
        int r = long_i128(o, &f->i);
        if (r < 0) return -1;
        if (r) {
            f->kind = F_INT;
            return 0;
        }
    }
    f->kind = F_OBJ;
    f->o = o;
    return 0;
}

static inline void
set_last(Last *l, int kind, i128 i, PyObject *o)
{
    PyObject *old = l->o;
    l->kind = kind;
    l->i = i;
    l->o = o ? Py_NewRef(o) : NULL;
    Py_XDECREF(old);
}

static PyObject *
i128_long(i128 v)
{
    if (v >= INT64_MIN && v <= INT64_MAX) return PyLong_FromLongLong((long long)v);
    return PyLong_FromUnsignedLongLong((unsigned long long)v);
}

/* Mode 2 or 3 for an int field where the value or the last one is outside the i128
 * window: the pure encoder's arithmetic, on Python ints. */
static int
big_delta(Enc *e, int idx, PyObject *v, PyObject *prev, int *mode)
{
    PyObject *d = PyNumber_Subtract(v, prev), *q = NULL;
    if (d == NULL) return -1;
    int r = -1, overflow;
    long long dd = PyLong_AsLongLongAndOverflow(d, &overflow);
    if (dd == -1 && PyErr_Occurred()) goto done;
    if (!overflow && dd == 0) {
        *mode = 0;
        r = 0;
        goto done;
    }
    if (ID_FIELD[idx]) {
        PyObject *mask = PyLong_FromLong(ID_MASK), *shift = PyLong_FromLong(ID_SHIFT);
        PyObject *low = mask ? PyNumber_And(d, mask) : NULL;
        q = shift && low ? PyNumber_Rshift(d, shift) : NULL;
        Py_XDECREF(mask);
        Py_XDECREF(shift);
        if (q == NULL) {
            Py_XDECREF(low);
            goto done;
        }
        int zero = PyObject_Not(low);
        Py_DECREF(low);
        if (zero < 0) goto done;
        long long qq = PyLong_AsLongLongAndOverflow(q, &overflow);
        if (qq == -1 && PyErr_Occurred()) goto done;
        if (zero && !overflow) {
            *mode = 2;
            r = put_uv(&e->out, zigzag(qq));
            goto done;
        }
    }
    else if (!overflow) {
        *mode = 2;
        r = put_uv(&e->out, zigzag(dd));
        goto done;
    }
    *mode = 3;
    r = put_value(e, v, 0);
done:
    Py_DECREF(d);
    Py_XDECREF(q);
    return r;
}

/* One envelope field: its payload written, its mode returned (or -1). */
static int
put_field(Enc *e, int idx, Field *f)
{
    Last *l = &e->last[idx];
    int mode;
    if (f->kind == F_NONE) {
        mode = l->kind == L_NONE ? 0 : 1;
        set_last(l, L_NONE, 0, NULL);
        return mode;
    }
    if (f->kind == F_INT) {
        i128 v = f->i;
        if (l->kind == L_INT) {
            i128 d = v - l->i;
            if (d == 0) mode = 0;
            else if (ID_FIELD[idx]) {
                if ((d & ID_MASK) == 0) { /* |d| < 2**65: d >> 22 fits 64 bits */
                    mode = 2;
                    if (put_uv(&e->out, zigzag((int64_t)(d >> ID_SHIFT))) < 0) return -1;
                }
                else {
                    mode = 3;
                    if (put_int(e, v) < 0) return -1;
                }
            }
            else if (d >= INT64_MIN && d <= INT64_MAX) {
                mode = 2;
                if (put_uv(&e->out, zigzag((int64_t)d)) < 0) return -1;
            }
            else {
                mode = 3;
                if (put_int(e, v) < 0) return -1;
            }
        }
        else if (l->kind == L_BIG) {
            PyObject *o = i128_long(v);
            if (o == NULL) return -1;
            int r = big_delta(e, idx, o, l->o, &mode);
            Py_DECREF(o);
            if (r < 0) return -1;
        }
        else {
            mode = 3;
            if (put_int(e, v) < 0) return -1;
        }
        set_last(l, L_INT, v, NULL);
        return mode;
    }
    PyObject *v = f->o;
    if (PyLong_CheckExact(v)) { /* outside the i128 window */
        if (l->kind == L_INT || l->kind == L_BIG) {
            PyObject *prev = l->kind == L_INT ? i128_long(l->i) : Py_NewRef(l->o);
            if (prev == NULL) return -1;
            int r = big_delta(e, idx, v, prev, &mode);
            Py_DECREF(prev);
            if (r < 0) return -1;
        }
        else {
            mode = 3;
            if (put_bigint(e, v) < 0) return -1;
        }
        set_last(l, L_BIG, 0, v);
        return mode;
    }
    if (PyUnicode_CheckExact(v)) {
        int same = 0;
        if (l->kind == L_STR) {
            same = l->o == v ? 1 : PyUnicode_Compare(v, l->o) == 0;
            if (PyErr_Occurred()) return -1;
        }
        if (same) mode = 0;
        else {
            mode = 3;
            if (put_value(e, v, 0) < 0) return -1;
        }
        set_last(l, L_STR, 0, v);
        return mode;
    }
    if (put_value(e, v, 0) < 0) return -1;
    set_last(l, L_OTHER, 0, NULL);
    return 3;
}

/* The record's kind, modes and the eight fields' payloads. */
static int
put_fields(Enc *e, uint8_t kind, Field *f)
{
    if (put_u8(&e->out, kind) < 0 || buf_grow(&e->out, 2) < 0) return -1;
    size_t at = e->out.len;
    e->out.len += 2;
    unsigned modes = 0;
    for (int i = 0; i < 8; i++) {
        int m = put_field(e, i, &f[i]);
        if (m < 0) return -1;
        modes |= (unsigned)m << (2 * i);
    }
    e->out.p[at] = (uint8_t)(modes & 0xFF);
    e->out.p[at + 1] = (uint8_t)(modes >> 8);
    return 0;
}

static int
put_event_type(Enc *e, PyObject *etype)
{
    if (PyUnicode_CheckExact(etype)) return put_string(e, etype);
    PyObject *s = PyObject_Str(etype);
    if (s == NULL) return -1;
    int r = PyUnicode_CheckExact(s) ? put_string(e, s) : -1;
    if (r < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "str() gave no str");
    Py_DECREF(s);
    return r;
}

/* The body of a record of event type `etype` and 4-tuple data `d` (entry or exit items):
 * kind 1 or 2 when its strings are exact str, else kind 3 with the data as its dict.
 * Writes the fields too. */
static int
put_call_record(Enc *e, Field *f, PyObject *etype, PyObject **d)
{
    if (etype == g_entry_type && PyUnicode_CheckExact(d[0]) && PyUnicode_CheckExact(d[1])) {
        return put_fields(e, REC_ENTRY, f) < 0 || put_site(e, d[0], d[1]) < 0 ||
                       put_value(e, d[2], 0) < 0 || put_value(e, d[3], 0) < 0
                   ? -1
                   : 0;
    }
    if (etype == g_exit_type && PyUnicode_CheckExact(d[3])) {
        return put_fields(e, REC_EXIT, f) < 0 || put_value(e, d[0], 0) < 0 ||
                       put_value(e, d[1], 0) < 0 || put_value(e, d[2], 0) < 0 ||
                       put_string(e, d[3]) < 0
                   ? -1
                   : 0;
    }
    /* as the ring's reader builds it (capture/_ring.py, _event_from_record) */
    PyObject *keys = etype == g_entry_type ? g_entry_keys : g_exit_keys;
    if (put_fields(e, REC_OTHER, f) < 0 || put_event_type(e, etype) < 0 ||
        put_u8(&e->out, T_SHAPED) < 0 ||
        put_shape(e, ((PyTupleObject *)keys)->ob_item, 4) < 0)
        return -1;
    return put_items(e, d, 4, 1);
}

/* An Event object (kind 4): 0, or 1 when `ev` is no Event (nothing written), or -1. */
static int
put_whole(Enc *e, PyObject *ev)
{
    if (g_event_class == NULL || Py_TYPE(ev) != g_event_class) return 1;
    PyObject *v[13];
    for (int k = 0; k < 13; k++) {
        v[k] = *(PyObject **)((char *)ev + g_event_offsets[k]);
        if (v[k] == NULL) {
            PyErr_SetString(PyExc_AttributeError, "an Event with a field unset");
            return -1;
        }
    }
    /* event_id, timestamp, wall_time, node, pid, thread_id, task_id, correlation_id,
     * parent_id, call_id, ast_node_id, event_type, data */
    static const int order[8] = {0, 1, 5, 6, 7, 8, 9, 10};
    Field f[8];
    for (int i = 0; i < 8; i++)
        if (field_obj(&f[i], v[order[i]]) < 0) return -1;
    /* the Event's own references, held: writing may run Python code */
    for (int k = 0; k < 13; k++) Py_INCREF(v[k]);
    int r = put_fields(e, REC_WHOLE, f) < 0 || put_value(e, v[3], 0) < 0 ||
                    put_value(e, v[4], 0) < 0 || put_value(e, v[2], 0) < 0 ||
                    put_event_type(e, v[11]) < 0 || put_value(e, v[12], 0) < 0
                ? -1
                : 0;
    for (int k = 0; k < 13; k++) Py_DECREF(v[k]);
    return r;
}

/* One ring record tuple (drain_records()): 0, 1 when it is no event (TypeError set), -1. */
static int
put_record(Enc *e, PyObject *r)
{
    if (!PyTuple_Check(r)) {
        PyErr_SetString(PyExc_TypeError, "a ring record that is no tuple");
        return 1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(r);
    PyObject **it = ((PyTupleObject *)r)->ob_item;
    if (n != 11) {
        if (n != 2) {
            PyErr_Format(PyExc_TypeError, "a ring record of %zd items", n);
            return 1;
        }
        int w = put_whole(e, it[1]);
        if (w == 1)
            PyErr_Format(PyExc_TypeError, "a ring record holding a %s, not an Event",
                         Py_TYPE(it[1])->tp_name);
        return w;
    }
    Field f[8];
    for (int i = 0; i < 8; i++)
        if (field_obj(&f[i], it[1 + i]) < 0) return -1;
    PyObject *etype = it[9], *data = it[10];
    if (PyTuple_CheckExact(data) && PyTuple_GET_SIZE(data) == 4)
        return put_call_record(e, f, etype, ((PyTupleObject *)data)->ob_item);
    return put_fields(e, REC_OTHER, f) < 0 || put_event_type(e, etype) < 0 ||
                   put_value(e, data, 0) < 0
               ? -1
               : 0;
}

/* One held slot: 0, 1 when it holds no event (nothing written), -1. */
static int
put_slot(Enc *e, Slot *c)
{
    if (c->kind == K_EVENT) return put_whole(e, c->d[0].o);
    Field f[8];
    Val *vals[7] = {&c->eid, &c->ts, &c->thread, &c->task, &c->corr, &c->parent, &c->call};
    for (int i = 0; i < 7; i++) {
        if (c->raw & (1 << i)) {
            field_raw(&f[i], vals[i]->i);
            if (i == 2) f[i].i = (i128)(uint64_t)vals[i]->i; /* thread ids are unsigned */
        }
        else if (field_obj(&f[i], vals[i]->o) < 0) {
            return -1;
        }
    }
    if (field_obj(&f[7], c->ast) < 0) return -1;
    if (c->kind == K_RECORD) {
        PyObject *etype = c->d[0].o, *data = c->d[1].o;
        if (PyTuple_CheckExact(data) && PyTuple_GET_SIZE(data) == 4)
            return put_call_record(e, f, etype, ((PyTupleObject *)data)->ob_item);
        return put_fields(e, REC_OTHER, f) < 0 || put_event_type(e, etype) < 0 ||
                       put_value(e, data, 0) < 0
                   ? -1
                   : 0;
    }
    PyObject *d[4], *dur = NULL;
    for (int k = 0; k < 4; k++) d[k] = c->d[k].o;
    if (c->draw & D_RAW2) {
        dur = PyLong_FromLongLong(c->d[2].i);
        if (dur == NULL) return -1;
        d[2] = dur;
    }
    int r = put_call_record(e, f, c->kind == K_ENTRY ? g_entry_type : g_exit_type, d);
    Py_XDECREF(dur);
    return r;
}

/* --------------------------------------------------------------------------------- */
/* chunks                                                                             */

/* The framed EVENTS chunk: head (kind, seq, counts, offset, n) + records. */
static PyObject *
frame_chunk(const uint8_t *records, size_t len, uint64_t n, uint64_t seq, uint64_t written,
            uint64_t dropped, uint64_t errors, int64_t offset)
{
    Buf head = {0};
    PyObject *out = NULL;
    if (put_u8(&head, CHUNK_EVENTS) < 0 || put_uv(&head, seq) < 0 ||
        put_uv(&head, written) < 0 || put_uv(&head, dropped) < 0 ||
        put_uv(&head, errors) < 0 || put_uv(&head, zigzag(offset)) < 0 ||
        put_uv(&head, n) < 0)
        goto done;
    size_t body = head.len + len;
    if (body > MAX_BODY) {
        PyErr_Format(PyExc_ValueError, "a chunk body of %zu bytes (at most %d)", body,
                     MAX_BODY);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(12 + body));
    if (out == NULL) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    memcpy(p + 12, head.p, head.len);
    if (len) memcpy(p + 12 + head.len, records, len);
    uint32_t crc = crc32_update(0, p + 12, body);
    uint32_t L = (uint32_t)body;
    memcpy(p, "TSCK", 4);
    for (int j = 0; j < 4; j++) {
        p[4 + j] = (uint8_t)(L >> (8 * j));
        p[8 + j] = (uint8_t)(crc >> (8 * j));
    }
done:
    PyMem_Free(head.p);
    return out;
}

/* The keyword-only counts of both chunk functions. */
typedef struct { uint64_t seq, written, dropped, errors; int64_t offset; } Counts;

static int
parse_counts(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t npos, PyObject *kwnames,
             Counts *c, const char *fname)
{
    static const char *names[5] = {"seq", "events_written", "dropped_events",
                                   "internal_errors", "wall_offset_ns"};
    PyObject *v[5] = {NULL};
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments", fname, npos);
        return -1;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int j = 0;
        while (j < 5 && PyUnicode_CompareWithASCIIString(name, names[j]) != 0) j++;
        if (j == 5) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname,
                         name);
            return -1;
        }
        v[j] = args[nargs + k];
    }
    uint64_t *dst[4] = {&c->seq, &c->written, &c->dropped, &c->errors};
    for (int j = 0; j < 5; j++) {
        if (v[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing keyword argument '%s'", fname,
                         names[j]);
            return -1;
        }
        if (j < 4) {
            *dst[j] = PyLong_AsUnsignedLongLong(v[j]);
            if (*dst[j] == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        }
        else {
            c->offset = PyLong_AsLongLong(v[j]);
            if (c->offset == -1 && PyErr_Occurred()) return -1;
        }
    }
    return 0;
}

/* encode_events_chunk(records, *, seq, events_written, dropped_events, internal_errors,
 * wall_offset_ns) -> bytes: _tsformat.encode_events_chunk's twin. */
PyObject *
ts_encode_events_chunk(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    Counts c;
    if (parse_counts(args, nargs, 1, kwnames, &c, "encode_events_chunk") < 0) return NULL;
    if (enc_init() < 0) return NULL;
    PyObject *seq = PySequence_Fast(args[0], "records must be iterable");
    if (seq == NULL) return NULL;
    Enc e;
    PyObject *out = NULL;
    if (enc_open(&e) < 0) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *r = PySequence_Fast_GET_ITEM(seq, k);
        Py_INCREF(r);
        int w = put_record(&e, r);
        Py_DECREF(r);
        if (w != 0) goto done; /* 1: a TypeError, as the pure encoder raises */
        if (PySequence_Fast_GET_SIZE(seq) != n) {
            PyErr_SetString(PyExc_RuntimeError, "records changed size during encoding");
            goto done;
        }
    }
    out = frame_chunk(e.out.p, e.out.len, (uint64_t)n, c.seq, c.written, c.dropped,
                      c.errors, c.offset);
done:
    enc_close(&e);
    Py_DECREF(seq);
    return out;
}

/* frame_events_chunk(records, n, *, seq, events_written, dropped_events, internal_errors,
 * wall_offset_ns) -> bytes: the EVENTS chunk of n records encoded by _scan_encoded. */
PyObject *
ts_frame_events_chunk(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    Counts c;
    if (parse_counts(args, nargs, 2, kwnames, &c, "frame_events_chunk") < 0) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = frame_chunk(view.buf, (size_t)view.len, (uint64_t)n, c.seq, c.written,
                                c.dropped, c.errors, c.offset);
    PyBuffer_Release(&view);
    return out;
}

typedef struct { Enc e; Py_ssize_t written; } ScanEnc;

/* A slot whose values fail to encode (a marker with a field unset, a failing __str__ of an
 * EventType subclass...) must not wedge the drain on it: it is dropped and counted as an
 * internal error. Its partial record may have added to the chunk's tables, so it is only
 * dropped as the first record of a chunk (with the encoder started afresh); after other
 * records the chunk ends before it, and the next one starts with it. */
static int
encode_visit(void *ctx, Slot *copy, uint64_t Py_UNUSED(pos))
{
    ScanEnc *s = ctx;
    size_t at = s->e.out.len;
    int w = put_slot(&s->e, copy);
    if (w >= 0) {
        s->written += w == 0;
        return s->e.out.len > SOFT_BODY;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    if (at > 0) {
        PyErr_Clear();
        s->e.out.len = at;
        return 2;
    }
    swallow_error();
    enc_close(&s->e);
    return enc_open(&s->e) < 0 ? -1 : 0;
}

/* _scan_encoded(p, count) -> (records, n, new_position, consumed): up to count current
 * slots from p encoded as an EVENTS chunk's records (fresh tables), n of them written
 * (a slot holding an object that is no Event is consumed, not written). */
PyObject *
ts_scan_encoded(RingStorage *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_scan_encoded(position, count)");
        return NULL;
    }
    unsigned long long p = PyLong_AsUnsignedLongLong(args[0]);
    if (p == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if (count == -1 && PyErr_Occurred()) return NULL;
    if (enc_init() < 0) return NULL;
    ScanEnc s = {.written = 0};
    PyObject *out = NULL;
    if (enc_open(&s.e) < 0) goto done;
    uint64_t pos = p;
    Py_ssize_t got, abandoned;
    if (ts_scan_slots(self, &pos, count, &got, &abandoned, encode_visit, &s) < 0) goto done;
    PyObject *records = PyBytes_FromStringAndSize((const char *)s.e.out.p,
                                                  (Py_ssize_t)s.e.out.len);
    if (records == NULL) goto done;
    out = Py_BuildValue("(NnKn)", records, s.written, (unsigned long long)pos, got);
done:
    enc_close(&s.e);
    return out;
}
