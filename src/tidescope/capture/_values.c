/* The trace encoder's values and tables (docs/trace-format.md, "Values" and "Per-chunk
 * state"): the twin of _tsformat._Encoder.value and its string, site and shape tables. */
#include "_encode.h"

/* --------------------------------------------------------------------------------- */
/* the Python objects the encoder compares with (looked up once)                      */

static PyObject *g_truncated, *g_snapshot, *g_redacted, *g_event_type, *g_ref;
static PyObject *g_datetime, *g_date, *g_time, *g_timedelta, *g_timezone, *g_uuid;
static PyObject *g_enum, *g_decimal, *g_fraction, *g_purepath, *g_type_name;
PyObject *g_entry_keys, *g_exit_keys; /* the data dicts' keys, as tuples */
static PyObject *g_zero, *g_signed_kw;
static PyObject *s_type_name, *s_size, *s_reason, *s_kept, *s_object_id, *s_attrs, *s_repr,
    *s_length;
static PyObject *s_start, *s_stop, *s_step, *s_isoformat, *s_days, *s_seconds,
    *s_microseconds, *s_utcoffset, *s_tzname, *s_bytes, *s_value_, *s_name_, *s_bit_length,
    *s_to_bytes, *s_little;
static int enc_ready = 0;

/* module.name, imported (new reference); shared with _decode.c */
PyObject *
ts_attr_of(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) return NULL;
    PyObject *v = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return v;
}

int
enc_init(void)
{
    if (enc_ready) return 0;
    struct { PyObject **slot; const char *module, *name; } objs[] = {
        {&g_truncated, "tidescope.events", "Truncated"},
        {&g_snapshot, "tidescope.events", "ObjectSnapshot"},
        {&g_redacted, "tidescope.events", "Redacted"},
        {&g_ref, "tidescope.events", "ObjectRef"},
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
        PyObject *v = ts_attr_of(objs[k].module, objs[k].name);
        if (v == NULL) return -1;
        *objs[k].slot = v;
    }
    struct { PyObject **slot; const char *s; } names[] = {
        {&s_type_name, "type_name"}, {&s_size, "size"}, {&s_reason, "reason"},
        {&s_kept, "kept"}, {&s_object_id, "object_id"}, {&s_attrs, "attrs"},
        {&s_repr, "repr"}, {&s_length, "length"}, {&s_start, "start"}, {&s_stop, "stop"}, {&s_step, "step"},
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
    crc_init();
    enc_ready = 1;
    return 0;
}

int
enc_open(Enc *e)
{
    memset(e, 0, sizeof(*e));
    e->strings = PyDict_New();
    e->sites = PyDict_New();
    e->shapes = PyDict_New();
    if (!e->strings || !e->sites || !e->shapes) return -1;
    return 0;
}

void
enc_close(Enc *e)
{
    Py_CLEAR(e->strings);
    Py_CLEAR(e->sites);
    Py_CLEAR(e->shapes);
    Py_CLEAR(e->reason);
    PyMem_Free(e->site_refs);
    e->site_refs = NULL;
    e->n_site_refs = 0;
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
int
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

/* The ref of `key` in `table` (a dict of key -> its number, 1 up): written when the key
 * is known (1), else a 0 is written and the key numbered next (0: the caller writes its
 * definition); -1 on error. *ref: a new reference to its number. */
static int
table_ref(Enc *e, PyObject *table, PyObject *key, PyObject **ref)
{
    PyObject *k = PyDict_GetItemWithError(table, key);
    if (k != NULL) {
        *ref = Py_NewRef(k);
        return put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(k)) < 0 ? -1 : 1;
    }
    if (PyErr_Occurred()) return -1;
    if ((k = PyLong_FromSsize_t(PyDict_GET_SIZE(table) + 1)) == NULL) return -1;
    if (PyDict_SetItem(table, key, k) < 0 || put_u8(&e->out, 0) < 0) {
        Py_DECREF(k);
        return -1;
    }
    *ref = k;
    return 0;
}

/* A site ref for (module, function), both exact str. */
int
put_site(Enc *e, PyObject *a, PyObject *b)
{
    SiteHit *h = &e->site_hits[addr_hash(a, b) % SITE_CACHE];
    if (h->a == a && h->b == b) return put_uv(&e->out, (uint64_t)PyLong_AsSsize_t(h->k));
    PyObject *key = PyTuple_Pack(2, a, b), *k = NULL;
    if (key == NULL) return -1;
    int known = table_ref(e, e->sites, key, &k);
    Py_DECREF(key);
    if (known < 0 || (!known && (put_string(e, a) < 0 || put_string(e, b) < 0))) {
        Py_XDECREF(k);
        return -1;
    }
    Py_XSETREF(h->a, Py_NewRef(a));
    Py_XSETREF(h->b, Py_NewRef(b));
    Py_XSETREF(h->k, k);
    return 0;
}

/* A site ref for (module, function), both exact str, of site `site` (or -1): a site
 * seen in this chunk costs an array index. */
int
put_site_id(Enc *e, int32_t site, PyObject *a, PyObject *b)
{
    if (site < 0) return put_site(e, a, b);
    if (site < e->n_site_refs && e->site_refs[site]) return put_uv(&e->out, e->site_refs[site]);
    if (put_site(e, a, b) < 0) return -1;
    /* put_site left the site's ref in its cache entry */
    Py_ssize_t k = PyLong_AsSsize_t(e->site_hits[addr_hash(a, b) % SITE_CACHE].k);
    if (k < 0) return -1;
    if (site >= e->n_site_refs) {
        Py_ssize_t n = e->n_site_refs ? e->n_site_refs : 64;
        while (n <= site) n *= 2;
        uint64_t *p = PyMem_Realloc(e->site_refs, (size_t)n * sizeof(uint64_t));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(p + e->n_site_refs, 0, (size_t)(n - e->n_site_refs) * sizeof(uint64_t));
        e->site_refs = p;
        e->n_site_refs = n;
    }
    e->site_refs[site] = (uint64_t)k;
    return 0;
}

/* An exit's reason (an exact str), as put_string: the same string object as the last
 * exit's is its ref again without a lookup. */
int
put_reason(Enc *e, PyObject *s)
{
    if (s == e->reason) return put_uv(&e->out, e->reason_ref);
    if (put_string(e, s) < 0) return -1;
    PyObject *k = PyDict_GetItemWithError(e->strings, s);
    if (k == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t ref = PyLong_AsSsize_t(k);
    if (ref < 0) return -1;
    Py_XSETREF(e->reason, Py_NewRef(s));
    e->reason_ref = (uint64_t)ref;
    return 0;
}

/* A shape ref for the n keys (exact str) of a dict. */
int
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
    PyObject *key = PyTuple_New(n), *k = NULL;
    if (key == NULL) return -1;
    for (Py_ssize_t j = 0; j < n; j++) PyTuple_SET_ITEM(key, j, Py_NewRef(keys[j]));
    int known = table_ref(e, e->shapes, key, &k);
    if (known < 0 || (!known && put_uv(&e->out, (uint64_t)n) < 0)) goto fail;
    if (!known)
        for (Py_ssize_t j = 0; j < n; j++)
            if (put_string(e, keys[j]) < 0) goto fail;
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

/* An int of the i128 range as a value (tags 0x80+n, 0x03, 0x04). */
int
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
int
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
int
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
    enc_pin(e);
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

int
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

/* An exact int from 0 to 2**64 - 1 in *out: 1, 0 when it is not one, -1 error. */
static int
u64_of(PyObject *v, unsigned long long *out)
{
    if (!PyLong_CheckExact(v)) return 0;
    *out = PyLong_AsUnsignedLongLong(v);
    if (*out == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* ObjectRef: tag 0x1D, type_name, varint object_id, varint length + 1 (0: None). */
static int
put_ref(Enc *e, PyObject *v)
{
    PyObject *names[3] = {s_type_name, s_object_id, s_length}, *a[3];
    if (get_attrs(v, names, a, 3) < 0) return -1;
    unsigned long long oid = 0, n = 0;
    int r = -1, ok = PyUnicode_CheckExact(a[0]), got;
    if (ok && (got = u64_of(a[1], &oid)) <= 0) {
        if (got < 0) goto done;
        ok = 0;
    }
    if (ok && a[2] == Py_None)
        n = 0;
    else if (ok) {
        got = u64_of(a[2], &n);
        if (got < 0) goto done;
        if (got == 0 || n == ULLONG_MAX) ok = 0;
        else n += 1;
    }
    if (!ok)
        r = put_unsupported(e, v, 0);
    else
        r = put_u8(&e->out, T_REF) < 0 || put_string(e, a[0]) < 0 ||
                    put_uv(&e->out, oid) < 0 || put_uv(&e->out, n) < 0
                ? -1
                : 0;
done:
    for (int j = 0; j < 3; j++) Py_DECREF(a[j]);
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

int
put_value_any(Enc *e, PyObject *v, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type) {
        int64_t x;
        return small_long(v, &x) ? put_int64(e, x) : put_long(e, v);
    }
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
    if (t != &PyBytes_Type && t != &PyByteArray_Type) enc_pin(e); /* may run Python code */
    if (o == g_truncated) return put_truncated(e, v, depth);
    if (o == g_snapshot) return put_snapshot(e, v, depth);
    if (o == g_ref) return put_ref(e, v);
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
