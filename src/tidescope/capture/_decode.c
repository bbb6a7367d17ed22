/* The trace decoder in C: _tsformat.decode_body's twin, for the reader (issue 10).
 *
 *   decode_body(body, node, pid, mode[, fold_ns]) -> (kind, seq, (written, dropped, errors), content)
 *
 * gives what _tsformat.decode_body gives (the pure decoder is the specification), as a
 * plain tuple the reader makes a Chunk of. `mode` 0: an EVENTS chunk's content is the list
 * of 13-field envelope tuples, as the pure decoder's; 1: the same, then the reader's
 * per-event type check (reader._check) applied to every tuple; 2: checked, and each event
 * an Event built as Event(*t) would build it (its slots set directly); 3: checked, and each
 * event the dict reader._record(t) gives (values through events.jsonable: the scalars,
 * dicts with str keys, lists, tuples and sets here, everything else by calling it).
 * `mode | 4` (LEAN): the same, with each call's arguments and return value left undecoded
 * (None in `args` and `return_value`), as _tsformat.decode_body(lean=True), and the
 * entries of one site (and arity) sharing one data dict, to be read only; the OTLP
 * exporter, which never exports them, reads so (half the decoding, measured).
 * `mode | 8` (FOLD, with `mode` 1 | 4 or 0 | 4, and a fifth argument `fold_ns`): as lean,
 * checked as mode 1 checks, and each call whose exit follows its entry, lasted less than
 * `fold_ns` (an int duration) and did not raise becomes no record: a run of such calls of
 * one site with the same envelope (thread, task, correlation, parent, ast id) becomes one
 * record, the first entry's envelope with the last exit's timestamp and wall time, the
 * type _tsformat.FOLDED_CALLS and the data (module, function, calls, total duration), as
 * _tsformat.decode_body(fold_ns=...) gives. The OTLP exporter, which only counts such
 * calls, reads so: a short call is never made into objects at all.
 *
 * Nothing in a body can crash it: every read is bounded by the body's length, every
 * count by the bytes left, recursion by MAX_NEST, and every table index is checked.
 * Malformed input raises _tsformat.FormatError with the pure decoder's message; the errors
 * the pure decoder maps (IndexError, ValueError, TypeError, OverflowError, RecursionError,
 * raised by a constructor such as datetime.fromisoformat) are mapped the same way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

int ts_decode_add(PyObject *module);
PyObject *ts_attr_of(const char *module, const char *name); /* _values.c */

#define MAX_DEPTH 64
/* Past this nesting the pure decoder fails too: containers stop at MAX_DEPTH, and the
 * children that restart at depth 0 (a range's bounds, a timezone's name, an unsupported
 * value's text) fail unless they are scalars. */
#define MAX_NEST 200
#define ID_SHIFT 22
#define NFIELDS 13
#define LEAN 4 /* a flag of `mode`: see the top of this file */
#define FOLD 8 /* likewise */

enum {
    V_NONE, V_FALSE, V_TRUE, V_INT, V_BIGINT, V_FLOAT, V_STR, V_BYTES, V_BYTEARRAY,
    V_TUPLE, V_LIST, V_SET, V_FROZENSET, V_SHAPED, V_DICT, V_TRUNCATED, V_OBJECT,
    V_REDACTED, V_COMPLEX, V_ELLIPSIS, V_NOTIMPLEMENTED, V_RANGE, V_DATETIME, V_DATE,
    V_TIME, V_TIMEDELTA, V_TIMEZONE, V_UUID, V_EVENT_TYPE, V_REF,
    V_UNSUPPORTED = 0x1F,
    V_SMALL = 0x80,
};
enum { K_ENTRY = 1, K_EXIT, K_OTHER, K_WHOLE };
enum { CHUNK_HEADER = 1, CHUNK_EVENTS, CHUNK_CLOSE, CHUNK_NOTES };

static int g_ready = 0;
static PyObject *g_FormatError, *g_event_types, *g_entry, *g_exit, *g_Event, *g_Truncated;
static PyObject *g_ObjectSnapshot, *g_Redacted, *g_Unsupported, *g_datetime_iso, *g_ObjectRef;
static PyObject *g_date_iso, *g_time_iso, *g_timedelta, *g_timezone, *g_UUID;
static PyObject *g_from_bytes, *g_little, *g_kw_signed, *g_kw_bytes, *g_keys[8];
static PyObject *g_jsonable, *g_EventType, *g_entry_value, *g_exit_value, *g_fields[13];
static PyObject *g_record; /* a record's keys, in order, each None: copied for each record */
static PyObject *g_folded, *g_empty; /* FOLD: the folded calls' type; a folded exit's data */
static Py_ssize_t g_slot[NFIELDS]; /* the offset of each Event slot, in field order */

static const char *FIELDS[NFIELDS] = {
    "event_id", "timestamp", "wall_time", "node", "pid", "thread_id", "task_id",
    "correlation_id", "parent_id", "call_id", "ast_node_id", "event_type", "data"};

static PyObject *
method_of(PyObject *type, const char *name)
{
    return type == NULL ? NULL : PyObject_GetAttrString(type, name);
}

/* Import what the values are made of, once (at the first decode: the module itself is
 * imported before tidescope.events and the export package are). */
static int
ready(void)
{
    if (g_ready) return 0;
    PyObject *dt = NULL, *date = NULL, *time = NULL;
    if (!(g_FormatError = ts_attr_of("tidescope.export._tsformat", "FormatError")) ||
        !(g_event_types = ts_attr_of("tidescope.export._tsformat", "_EVENT_TYPES")) ||
        !(g_folded = ts_attr_of("tidescope.export._tsformat", "FOLDED_CALLS")) ||
        !(g_empty = PyDict_New()) ||
        !(g_entry = ts_attr_of("tidescope.export._tsformat", "_FUNCTION_ENTRY")) ||
        !(g_exit = ts_attr_of("tidescope.export._tsformat", "_FUNCTION_EXIT")) ||
        !(g_Event = ts_attr_of("tidescope.events", "Event")) ||
        !(g_jsonable = ts_attr_of("tidescope.events", "jsonable")) ||
        !(g_EventType = ts_attr_of("tidescope.events", "EventType")) ||
        !(g_Truncated = ts_attr_of("tidescope.events", "Truncated")) ||
        !(g_ObjectSnapshot = ts_attr_of("tidescope.events", "ObjectSnapshot")) ||
        !(g_Redacted = ts_attr_of("tidescope.events", "Redacted")) ||
        !(g_ObjectRef = ts_attr_of("tidescope.events", "ObjectRef")) ||
        !(g_Unsupported = ts_attr_of("tidescope.events", "Unsupported")) ||
        !(dt = ts_attr_of("datetime", "datetime")) || !(date = ts_attr_of("datetime", "date")) ||
        !(time = ts_attr_of("datetime", "time")) ||
        !(g_datetime_iso = method_of(dt, "fromisoformat")) ||
        !(g_date_iso = method_of(date, "fromisoformat")) ||
        !(g_time_iso = method_of(time, "fromisoformat")) ||
        !(g_timedelta = ts_attr_of("datetime", "timedelta")) ||
        !(g_timezone = ts_attr_of("datetime", "timezone")) ||
        !(g_UUID = ts_attr_of("uuid", "UUID")) ||
        !(g_from_bytes = method_of((PyObject *)&PyLong_Type, "from_bytes")) ||
        !(g_little = PyUnicode_InternFromString("little")) ||
        !(g_kw_signed = Py_BuildValue("(s)", "signed")) ||
        !(g_kw_bytes = Py_BuildValue("(s)", "bytes")) || !PyDict_Check(g_event_types) ||
        !PyType_Check(g_Event)) {
        Py_XDECREF(dt);
        Py_XDECREF(date);
        Py_XDECREF(time);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "decode_body: bad setup");
        return -1;
    }
    Py_DECREF(dt);
    Py_DECREF(date);
    Py_DECREF(time);
    static const char *keys[8] = {"module", "function", "arity", "args", "return_value",
                                  "exception", "duration_ns", "exit_reason"};
    for (int k = 0; k < 8; k++)
        if (!(g_keys[k] = PyUnicode_InternFromString(keys[k]))) return -1;
    if (!(g_record = PyDict_New())) return -1;
    for (int f = 0; f < NFIELDS; f++)
        if (!(g_fields[f] = PyUnicode_InternFromString(FIELDS[f])) ||
            PyDict_SetItem(g_record, g_fields[f], Py_None) < 0)
            return -1;
    if (!(g_entry_value = PyObject_GetAttrString(g_entry, "_value_")) ||
        !(g_exit_value = PyObject_GetAttrString(g_exit, "_value_")))
        return -1;
    /* Event has __slots__: find each slot's offset so mode 2 fills them as __init__ does */
    PyTypeObject *ev = (PyTypeObject *)g_Event;
    for (int f = 0; f < NFIELDS; f++) {
        PyObject *d = PyDict_GetItemString(ev->tp_dict, FIELDS[f]); /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "Event has no slot %s", FIELDS[f]);
            return -1;
        }
        g_slot[f] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    g_ready = 1;
    return 0;
}

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len, pos;
    PyObject **strings; /* owned */
    Py_ssize_t nstr, capstr;
    PyObject **sites; /* two a site, borrowed from strings */
    Py_ssize_t nsite, capsite;
    Py_ssize_t *shapes; /* two a shape: first key, number of keys */
    Py_ssize_t nshape, capshape;
    PyObject **keys; /* borrowed from strings */
    Py_ssize_t nkey, capkey;
    Py_ssize_t last_site;   /* the index of the site site() read last */
    PyObject **entry_data;  /* LEAN: owned, by site: its entries' data (lean_entry) */
    Py_ssize_t ndata, capdata;
} Dec;

static int
fail(const char *msg)
{
    PyErr_SetString(g_FormatError, msg);
    return -1;
}

static int
past_end(void)
{
    return fail("IndexError: index out of range"); /* as the pure decoder's buf[pos] */
}

static int
grow(void **arr, Py_ssize_t *cap, Py_ssize_t need, size_t size)
{
    if (need <= *cap) return 0;
    Py_ssize_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *p = PyMem_Realloc(*arr, (size_t)n * size);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *arr = p;
    *cap = n;
    return 0;
}

static inline int
byte(Dec *d, unsigned *out)
{
    if (d->pos >= d->len) return past_end();
    *out = d->buf[d->pos++];
    return 0;
}

static int
uv(Dec *d, uint64_t *out)
{
    unsigned x;
    if (byte(d, &x) < 0) return -1;
    if (x < 0x80) {
        *out = x;
        return 0;
    }
    uint64_t n = x & 0x7F;
    for (int shift = 7;; shift += 7) {
        if (byte(d, &x) < 0) return -1;
        if (shift == 63) {
            if (x & 0x80) return fail("a varint longer than 10 bytes");
            if (x > 1) return fail("a varint past 64 bits");
            n |= (uint64_t)x << 63;
            break;
        }
        n |= (uint64_t)(x & 0x7F) << shift;
        if (x < 0x80) break;
    }
    *out = n;
    return 0;
}

static inline int
sv(Dec *d, int64_t *out)
{
    uint64_t z;
    if (uv(d, &z) < 0) return -1;
    *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    return 0;
}

static int
count(Dec *d, Py_ssize_t *out)
{
    uint64_t n;
    if (uv(d, &n) < 0) return -1;
    if (n > (uint64_t)(d->len - d->pos)) /* every item takes a byte at least */
        return fail("a count past the end of the chunk");
    *out = (Py_ssize_t)n;
    return 0;
}

static int
take(Dec *d, const unsigned char **p, Py_ssize_t *n)
{
    uint64_t k;
    if (uv(d, &k) < 0) return -1;
    if (k > (uint64_t)(d->len - d->pos)) return fail("a length past the end of the chunk");
    *p = d->buf + d->pos;
    *n = (Py_ssize_t)k;
    d->pos += (Py_ssize_t)k;
    return 0;
}

static int
take_n(Dec *d, Py_ssize_t n, const unsigned char **p)
{
    if (n > d->len - d->pos) return fail("a length past the end of the chunk");
    *p = d->buf + d->pos;
    d->pos += n;
    return 0;
}

/* A string ref: a borrowed reference (the table holds it). */
static PyObject *
string(Dec *d)
{
    uint64_t k;
    if (uv(d, &k) < 0) return NULL;
    if (k) {
        if (k > (uint64_t)d->nstr) {
            fail("IndexError: list index out of range");
            return NULL;
        }
        return d->strings[k - 1];
    }
    const unsigned char *p;
    Py_ssize_t n;
    if (take(d, &p, &n) < 0) return NULL;
    if (grow((void **)&d->strings, &d->capstr, d->nstr + 1, sizeof(PyObject *)) < 0)
        return NULL;
    PyObject *s = PyUnicode_DecodeUTF8((const char *)p, n, "surrogatepass");
    if (s == NULL) return NULL;
    d->strings[d->nstr++] = s;
    return s;
}

static int
site(Dec *d, PyObject **module, PyObject **function)
{
    uint64_t k;
    if (uv(d, &k) < 0) return -1;
    if (k) {
        if (k > (uint64_t)d->nsite) return fail("IndexError: list index out of range");
        *module = d->sites[2 * (k - 1)];
        *function = d->sites[2 * (k - 1) + 1];
        d->last_site = (Py_ssize_t)k - 1;
        return 0;
    }
    if (!(*module = string(d)) || !(*function = string(d))) return -1;
    if (grow((void **)&d->sites, &d->capsite, 2 * (d->nsite + 1), sizeof(PyObject *)) < 0)
        return -1;
    d->sites[2 * d->nsite] = *module;
    d->sites[2 * d->nsite + 1] = *function;
    d->last_site = d->nsite++;
    return 0;
}

/* A shape ref: sets *first to the index of its first key in d->keys (which a nested
 * shape may move) and *n to its length. */
static int
shape(Dec *d, Py_ssize_t *first_key, Py_ssize_t *n)
{
    uint64_t k;
    if (uv(d, &k) < 0) return -1;
    if (k) {
        if (k > (uint64_t)d->nshape) return fail("IndexError: list index out of range");
        *n = d->shapes[2 * (k - 1) + 1];
        *first_key = d->shapes[2 * (k - 1)];
        return 0;
    }
    Py_ssize_t c;
    if (count(d, &c) < 0) return -1;
    Py_ssize_t first = d->nkey;
    if (grow((void **)&d->keys, &d->capkey, first + c, sizeof(PyObject *)) < 0) return -1;
    for (Py_ssize_t i = 0; i < c; i++) {
        PyObject *s = string(d);
        if (s == NULL) return -1;
        d->keys[d->nkey++] = s;
    }
    if (grow((void **)&d->shapes, &d->capshape, 2 * (d->nshape + 1), sizeof(Py_ssize_t)) < 0)
        return -1;
    d->shapes[2 * d->nshape] = first;
    d->shapes[2 * d->nshape + 1] = c;
    d->nshape++;
    *first_key = first;
    *n = c;
    return 0;
}

static PyObject *value(Dec *d, int depth, int nest);

static PyObject *
call3(PyObject *f, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[3] = {a, b, c};
    return PyObject_Vectorcall(f, args, c ? 3 : b ? 2 : 1, NULL);
}

static PyObject *
timedelta(Dec *d)
{
    int64_t v[3];
    for (int k = 0; k < 3; k++)
        if (sv(d, &v[k]) < 0) return NULL;
    PyObject *a = PyLong_FromLongLong(v[0]), *b = PyLong_FromLongLong(v[1]);
    PyObject *c = PyLong_FromLongLong(v[2]), *r = NULL;
    if (a && b && c) r = call3(g_timedelta, a, b, c);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    return r;
}

/* The rarer tags, as _Decoder.other. */
static PyObject *
other(Dec *d, unsigned tag, int nest)
{
    const unsigned char *p;
    PyObject *s, *a, *b, *c, *r;
    switch (tag) {
    case V_COMPLEX: {
        if (take_n(d, 16, &p) < 0) return NULL;
        double re = PyFloat_Unpack8((const char *)p, 1);
        double im = PyFloat_Unpack8((const char *)p + 8, 1);
        return PyComplex_FromDoubles(re, im);
    }
    case V_ELLIPSIS:
        return Py_NewRef(Py_Ellipsis);
    case V_NOTIMPLEMENTED:
        return Py_NewRef(Py_NotImplemented);
    case V_RANGE:
        if (!(a = value(d, 0, nest + 1))) return NULL;
        if (!(b = value(d, 0, nest + 1))) {
            Py_DECREF(a);
            return NULL;
        }
        if (!(c = value(d, 0, nest + 1))) {
            Py_DECREF(a);
            Py_DECREF(b);
            return NULL;
        }
        r = call3((PyObject *)&PyRange_Type, a, b, c);
        Py_DECREF(a);
        Py_DECREF(b);
        Py_DECREF(c);
        return r;
    case V_DATETIME:
    case V_DATE:
    case V_TIME:
        if (!(s = string(d))) return NULL;
        return call3(tag == V_DATETIME ? g_datetime_iso : tag == V_DATE ? g_date_iso : g_time_iso,
                     s, NULL, NULL);
    case V_TIMEDELTA:
        return timedelta(d);
    case V_TIMEZONE:
        if (!(a = timedelta(d))) return NULL;
        if (!(b = value(d, 0, nest + 1))) {
            Py_DECREF(a);
            return NULL;
        }
        r = call3(g_timezone, a, b == Py_None ? NULL : b, NULL);
        Py_DECREF(a);
        Py_DECREF(b);
        return r;
    case V_UUID: {
        if (take_n(d, 16, &p) < 0) return NULL;
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)p, 16);
        if (bytes == NULL) return NULL;
        PyObject *args[1] = {bytes};
        r = PyObject_Vectorcall(g_UUID, args, 0, g_kw_bytes);
        Py_DECREF(bytes);
        return r;
    }
    case V_EVENT_TYPE:
        if (!(s = string(d))) return NULL;
        r = PyDict_GetItemWithError(g_event_types, s);
        if (r == NULL && PyErr_Occurred()) return NULL;
        return Py_NewRef(r ? r : s);
    case V_UNSUPPORTED:
        if (!(s = string(d))) return NULL;
        if (!(a = value(d, 0, nest + 1))) return NULL;
        if (a != Py_None && !PyUnicode_CheckExact(a)) {
            Py_DECREF(a);
            fail("an unsupported value with a text that is no str");
            return NULL;
        }
        r = call3(g_Unsupported, s, a, NULL);
        Py_DECREF(a);
        return r;
    }
    PyErr_Format(g_FormatError, "an unknown value tag 0x%02x", tag);
    return NULL;
}

/* n values into a new list */
static PyObject *
items(Dec *d, Py_ssize_t n, int depth, int nest)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = value(d, depth, nest);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *
value(Dec *d, int depth, int nest)
{
    unsigned tag;
    if (byte(d, &tag) < 0) return NULL;
    if (tag >= V_SMALL) return PyLong_FromLong((long)(tag - V_SMALL));
    if (tag == V_STR) {
        PyObject *s = string(d);
        return s ? Py_NewRef(s) : NULL;
    }
    if (tag == V_INT) {
        int64_t v;
        return sv(d, &v) < 0 ? NULL : PyLong_FromLongLong(v);
    }
    if (tag == V_NONE) return Py_NewRef(Py_None);
    if (V_TUPLE <= tag && tag <= V_OBJECT && depth >= MAX_DEPTH) {
        fail("a value nested too deep");
        return NULL;
    }
    if (nest >= MAX_NEST) {
        fail("RecursionError: maximum recursion depth exceeded");
        return NULL;
    }
    PyObject *r, *a, *b, *c, *s;
    Py_ssize_t n;
    const unsigned char *p;
    switch (tag) {
    case V_SHAPED: {
        Py_ssize_t first;
        if (shape(d, &first, &n) < 0) return NULL;
        r = PyDict_New();
        if (r == NULL) return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = value(d, depth + 1, nest + 1);
            if (v == NULL || PyDict_SetItem(r, d->keys[first + i], v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(r);
                return NULL;
            }
            Py_DECREF(v);
        }
        return r;
    }
    case V_FALSE:
        return Py_NewRef(Py_False);
    case V_TRUE:
        return Py_NewRef(Py_True);
    case V_FLOAT:
        if (take_n(d, 8, &p) < 0) return NULL;
        return PyFloat_FromDouble(PyFloat_Unpack8((const char *)p, 1));
    case V_TUPLE:
    case V_LIST:
    case V_SET:
    case V_FROZENSET:
        if (count(d, &n) < 0) return NULL;
        if (!(a = items(d, n, depth + 1, nest + 1))) return NULL;
        if (tag == V_LIST) return a;
        r = tag == V_TUPLE ? PyList_AsTuple(a) : tag == V_SET ? PySet_New(a) : PyFrozenSet_New(a);
        Py_DECREF(a);
        return r;
    case V_DICT:
        if (count(d, &n) < 0) return NULL;
        if (!(r = PyDict_New())) return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!(a = value(d, depth + 1, nest + 1))) {
                Py_DECREF(r);
                return NULL;
            }
            if (!(b = value(d, depth + 1, nest + 1)) || PyDict_SetItem(r, a, b) < 0) {
                Py_DECREF(a);
                Py_XDECREF(b);
                Py_DECREF(r);
                return NULL;
            }
            Py_DECREF(a);
            Py_DECREF(b);
        }
        return r;
    case V_BIGINT: {
        if (take(d, &p, &n) < 0) return NULL;
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)p, n);
        if (bytes == NULL) return NULL;
        PyObject *args[3] = {bytes, g_little, Py_True};
        r = PyObject_Vectorcall(g_from_bytes, args, 2, g_kw_signed);
        Py_DECREF(bytes);
        return r;
    }
    case V_BYTES:
        if (take(d, &p, &n) < 0) return NULL;
        return PyBytes_FromStringAndSize((const char *)p, n);
    case V_BYTEARRAY:
        if (take(d, &p, &n) < 0) return NULL;
        return PyByteArray_FromStringAndSize((const char *)p, n);
    case V_TRUNCATED: {
        uint64_t size;
        if (!(s = string(d)) || uv(d, &size) < 0) return NULL;
        PyObject *reason = string(d);
        if (reason == NULL || !(a = PyLong_FromUnsignedLongLong(size))) return NULL;
        if (!(b = value(d, depth + 1, nest + 1))) {
            Py_DECREF(a);
            return NULL;
        }
        PyObject *args[4] = {s, a, reason, b};
        r = PyObject_Vectorcall(g_Truncated, args, 4, NULL);
        Py_DECREF(a);
        Py_DECREF(b);
        return r;
    }
    case V_OBJECT:
        if (!(s = string(d)) || !(a = value(d, depth + 1, nest + 1))) return NULL;
        if (!(b = value(d, depth + 1, nest + 1))) {
            Py_DECREF(a);
            return NULL;
        }
        if (!(c = value(d, depth + 1, nest + 1))) {
            Py_DECREF(a);
            Py_DECREF(b);
            return NULL;
        }
        {
            PyObject *args[4] = {s, a, b, c};
            r = PyObject_Vectorcall(g_ObjectSnapshot, args, 4, NULL);
        }
        Py_DECREF(a);
        Py_DECREF(b);
        Py_DECREF(c);
        return r;
    case V_REDACTED:
        if (!(s = string(d))) return NULL;
        return call3(g_Redacted, s, NULL, NULL);
    case V_REF: {
        uint64_t oid, n;
        if (!(s = string(d)) || uv(d, &oid) < 0 || uv(d, &n) < 0) return NULL;
        if (!(a = PyLong_FromUnsignedLongLong(oid))) return NULL;
        b = n == 0 ? Py_NewRef(Py_None) : PyLong_FromUnsignedLongLong(n - 1);
        if (b == NULL) {
            Py_DECREF(a);
            return NULL;
        }
        r = call3(g_ObjectRef, s, a, b);
        Py_DECREF(a);
        Py_DECREF(b);
        return r;
    }
    }
    return other(d, tag, nest);
}

static inline int
scalar(PyObject *o)
{
    return o == Py_None || PyLong_CheckExact(o) || PyUnicode_CheckExact(o) ||
           PyBool_Check(o) || PyFloat_CheckExact(o);
}

/* reader._check for one envelope: 0 if it passes */
static int
check(PyObject **f)
{
    if (!PyLong_CheckExact(f[1]) || !PyLong_CheckExact(f[2]) || !PyUnicode_Check(f[11]) ||
        !PyDict_CheckExact(f[12]) || !scalar(f[0]) || !scalar(f[3]) || !scalar(f[4]) ||
        !scalar(f[5]) || !scalar(f[6]) || !scalar(f[8]) || !scalar(f[9]) || !scalar(f[10]))
        return -1;
    return 0;
}

/* An Event of the envelope's fields, as Event(*f) makes it. */
static PyObject *
event_of(PyObject **f)
{
    PyTypeObject *type = (PyTypeObject *)g_Event;
    PyObject *ev = type->tp_alloc(type, 0);
    if (ev == NULL) return NULL;
    for (int k = 0; k < NFIELDS; k++) *(PyObject **)((char *)ev + g_slot[k]) = Py_NewRef(f[k]);
    return ev;
}

/* events.jsonable(v): here for what the data of events mostly holds, else by calling it.
 * With `own` (v was just decoded and nothing else refers to it: an event's data), its
 * dicts and lists are converted in place, where jsonable would copy them. */
static PyObject *
jsonable(PyObject *v, int own)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type || t == &PyLong_Type || v == Py_None || t == &PyBool_Type ||
        t == &PyFloat_Type)
        return Py_NewRef(v);
    if (t == &PyDict_Type) {
        PyObject *k, *item, *r;
        Py_ssize_t pos = 0;
        while (PyDict_Next(v, &pos, &k, &item))
            if (!PyUnicode_CheckExact(k)) return PyObject_CallOneArg(g_jsonable, v);
        if (!(r = own ? Py_NewRef(v) : PyDict_New())) return NULL;
        pos = 0;
        /* in place, only values change: the keys stay, so iterating on is safe */
        while (PyDict_Next(v, &pos, &k, &item)) {
            PyObject *j = jsonable(item, own);
            if (j == NULL || ((j != item || !own) && PyDict_SetItem(r, k, j) < 0)) {
                Py_XDECREF(j);
                Py_DECREF(r);
                return NULL;
            }
            Py_DECREF(j);
        }
        return r;
    }
    if (own && t == &PyList_Type) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
            PyObject *j = jsonable(PyList_GET_ITEM(v, i), own);
            if (j == NULL) return NULL;
            PyList_SetItem(v, i, j); /* steals j */
        }
        return Py_NewRef(v);
    }
    if (t == &PyList_Type || t == &PyTuple_Type || t == &PySet_Type || t == &PyFrozenSet_Type) {
        PyObject *seq = PySequence_Fast(v, "jsonable"), *r;
        if (seq == NULL) return NULL;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        if (!(r = PyList_New(n))) {
            Py_DECREF(seq);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *j = jsonable(PySequence_Fast_GET_ITEM(seq, i), own);
            if (j == NULL) {
                Py_DECREF(seq);
                Py_DECREF(r);
                return NULL;
            }
            PyList_SET_ITEM(r, i, j);
        }
        Py_DECREF(seq);
        return r;
    }
    return PyObject_CallOneArg(g_jsonable, v);
}

/* The record reader._record(f) gives for a checked envelope. */
static PyObject *
record_of(PyObject **fields)
{
    PyObject *r = PyDict_Copy(g_record); /* sized once, where 13 inserts would resize it twice */
    if (r == NULL) return NULL;
    for (int f = 0; f < NFIELDS; f++) {
        PyObject *v = fields[f], *j;
        if (f == 7 || f == 12) {
            j = jsonable(v, f == 12); /* a correlation id may be the last record's too */
        } else if (f == 11) {
            /* an EventType member as its value (a StrEnum member's text is its value) */
            j = v == g_entry                          ? Py_NewRef(g_entry_value)
                : v == g_exit                         ? Py_NewRef(g_exit_value)
                : Py_TYPE(v) == (PyTypeObject *)g_EventType ? PyUnicode_FromObject(v)
                                                      : Py_NewRef(v);
        } else {
            j = Py_NewRef(v);
        }
        if (j == NULL || PyDict_SetItem(r, g_fields[f], j) < 0) {
            Py_XDECREF(j);
            Py_DECREF(r);
            return NULL;
        }
        Py_DECREF(j);
    }
    return r;
}

static PyObject *
data4(int k0, PyObject *a, PyObject *b, PyObject *c, PyObject *e)
{
    PyObject *r = PyDict_New();
    if (r == NULL) return NULL;
    if (PyDict_SetItem(r, g_keys[k0], a) < 0 || PyDict_SetItem(r, g_keys[k0 + 1], b) < 0 ||
        PyDict_SetItem(r, g_keys[k0 + 2], c) < 0 || PyDict_SetItem(r, g_keys[k0 + 3], e) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* LEAN: the data of an entry of the site site() read last, whose args are None: one dict
 * shared by the site's entries of one arity, where a dict a call was a third of the
 * decoding (callgrind). A new reference. */
static PyObject *
lean_entry(Dec *d, PyObject *module, PyObject *function, PyObject *arity)
{
    Py_ssize_t k = d->last_site;
    if (grow((void **)&d->entry_data, &d->capdata, k + 1, sizeof(PyObject *)) < 0) return NULL;
    for (; d->ndata <= k; d->ndata++) d->entry_data[d->ndata] = NULL;
    PyObject *r = d->entry_data[k];
    if (r != NULL && PyDict_GetItemWithError(r, g_keys[2]) == arity) return Py_NewRef(r);
    if (PyErr_Occurred() || !(r = data4(0, module, function, arity, Py_None))) return NULL;
    Py_XSETREF(d->entry_data[k], Py_NewRef(r));
    return r;
}

/* A field's value `prev + delta` (mode 2). `*fast` says prev is `*v` (an int64); both are
 * kept for the value returned. */
static PyObject *
add(PyObject *prev, int64_t delta, int is_id, int *fast, int64_t *v)
{
    int64_t r;
    if (*fast && (!is_id || (delta <= (INT64_MAX >> ID_SHIFT) && delta >= (INT64_MIN >> ID_SHIFT))) &&
        !__builtin_add_overflow(*v, is_id ? delta * ((int64_t)1 << ID_SHIFT) : delta, &r)) {
        *v = r;
        return PyLong_FromLongLong(r);
    }
    *fast = 0;
    PyObject *d = PyLong_FromLongLong(delta), *s = NULL, *out = NULL;
    if (d == NULL) return NULL;
    if (is_id) {
        PyObject *shift = PyLong_FromLong(ID_SHIFT);
        if (shift) s = PyNumber_Lshift(d, shift);
        Py_XDECREF(shift);
    } else {
        s = Py_NewRef(d);
    }
    if (s) out = PyNumber_Add(prev, s);
    Py_DECREF(d);
    Py_XDECREF(s);
    return out;
}

static int
as_int64(PyObject *o, int64_t *v)
{
    if (!PyLong_CheckExact(o)) return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *v = x;
    return 1;
}

static const int IS_ID[8] = {1, 0, 0, 0, 1, 1, 1, 0};
/* where each of the 8 coded fields sits in the 13-field envelope */
/* Read past a value, building nothing for the common tags (LEAN): the strings and
 * shapes it defines still enter their tables, and it fails where value() would;
 * the rarer tags (and dicts and sets, whose keys must hash) go through value(). */
static int
skip(Dec *d, int depth, int nest)
{
    unsigned tag;
    Py_ssize_t n, first;
    const unsigned char *p;
    if (byte(d, &tag) < 0) return -1;
    if (tag >= V_SMALL || tag == V_NONE || tag == V_FALSE || tag == V_TRUE) return 0;
    if (tag == V_STR) return string(d) ? 0 : -1;
    if (tag == V_INT) {
        int64_t v;
        return sv(d, &v);
    }
    if (tag == V_FLOAT) return take_n(d, 8, &p);
    if (tag == V_SHAPED || tag == V_TUPLE || tag == V_LIST) {
        if (depth >= MAX_DEPTH) return fail("a value nested too deep");
        if (nest >= MAX_NEST) return fail("RecursionError: maximum recursion depth exceeded");
        if (tag == V_SHAPED ? shape(d, &first, &n) < 0 : count(d, &n) < 0) return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (skip(d, depth + 1, nest + 1) < 0) return -1;
        return 0;
    }
    d->pos--;
    PyObject *v = value(d, depth, nest);
    Py_XDECREF(v);
    return v ? 0 : -1;
}

static const int AT[8] = {0, 1, 5, 6, 7, 8, 9, 10};

/* The envelope's output for `mode`: a tuple (0, 1), an Event (2) or a record (3). */
static PyObject *
output(PyObject **f, int mode)
{
    if (mode == 2) return event_of(f);
    if (mode == 3) return record_of(f);
    PyObject *t = PyTuple_New(NFIELDS);
    if (t == NULL) return NULL;
    for (int k = 0; k < NFIELDS; k++) PyTuple_SET_ITEM(t, k, Py_NewRef(f[k]));
    return t;
}

/* Append the envelope's output to `out`. */
static int
append(PyObject *out, PyObject **f, int mode, int lean)
{
    PyObject *o = output(f, mode);
    /* Nothing decoded can refer back to a record's tuple, so it can be in no cycle:
     * untracked, the collections the consumer's allocations start do not walk thousands
     * of them (a tenth of the OTLP exporter's time, measured). */
    if (lean && o != NULL && PyTuple_CheckExact(o)) PyObject_GC_UnTrack(o);
    if (o == NULL || PyList_Append(out, o) < 0) {
        Py_XDECREF(o);
        return -1;
    }
    Py_DECREF(o);
    return 0;
}

/* FOLD: an entry whose exit may come next, or a run of folded calls. */
typedef struct {
    PyObject *f[NFIELDS];        /* owned */
    PyObject *module, *function; /* borrowed from the string table */
    int64_t n, ns;               /* a run's calls and their total duration */
    int on;
} Held;

static void
held_clear(Held *h)
{
    for (int k = 0; k < NFIELDS; k++) Py_CLEAR(h->f[k]);
    h->on = 0;
}

static inline int
same(PyObject *a, PyObject *b)
{
    return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

/* 1 if the call entered in `e` continues the run `r`: its site and envelope (all but
 * its ids and clocks) the same; -1 on error. */
static int
continues(Held *r, Held *e)
{
    static const int KEY[7] = {3, 4, 5, 6, 7, 8, 10};
    int eq;
    if (!r->on) return 0;
    if ((eq = same(r->module, e->module)) <= 0 || (eq = same(r->function, e->function)) <= 0)
        return eq;
    for (int k = 0; k < 7; k++)
        if ((eq = same(r->f[KEY[k]], e->f[KEY[k]])) <= 0) return eq;
    return 1;
}

/* Append the run `r` (if any) as one record of type FOLDED_CALLS; ends it. */
static int
run_flush(Held *r, PyObject *out)
{
    if (!r->on) return 0;
    PyObject *data = Py_BuildValue("(OOLL)", r->module, r->function, (long long)r->n,
                                   (long long)r->ns);
    if (data == NULL) return -1;
    PyObject_GC_UnTrack(data);
    Py_XSETREF(r->f[11], Py_NewRef(g_folded));
    Py_XSETREF(r->f[12], data);
    int rc = append(out, r->f, 1, 1);
    held_clear(r);
    return rc;
}

/* FOLD: take the record `f` (its refs moved out of it): the pending entry and the run
 * are appended as they end; `folds` says `f` is the exit of the pending entry, a call of
 * `dur` ns to fold. */
static int
fold_in(PyObject *out, PyObject **f, int kind, PyObject *module, PyObject *function,
        int folds, int64_t dur, Held *pend, Held *run)
{
    if (folds) {
        int64_t sum;
        int eq = continues(run, pend);
        if (eq < 0) return -1;
        if (eq && !__builtin_add_overflow(run->ns, dur, &sum)) {
            run->n++;
            run->ns = sum;
            held_clear(pend);
        } else {
            if (run_flush(run, out) < 0) return -1;
            *run = *pend; /* moved: pend's references are now the run's */
            pend->on = 0;
            for (int k = 0; k < NFIELDS; k++) pend->f[k] = NULL;
            run->n = 1;
            run->ns = dur;
        }
        Py_SETREF(run->f[1], Py_NewRef(f[1]));
        Py_SETREF(run->f[2], Py_NewRef(f[2]));
        return 0;
    }
    if (pend->on) {
        if (run_flush(run, out) < 0 || append(out, pend->f, 1, 1) < 0) return -1;
        held_clear(pend);
    }
    if (kind == K_ENTRY) {
        for (int k = 0; k < NFIELDS; k++) {
            pend->f[k] = f[k];
            f[k] = NULL;
        }
        pend->module = module;
        pend->function = function;
        pend->on = 1;
        return 0;
    }
    if (run_flush(run, out) < 0 || append(out, f, 1, 1) < 0) return -1;
    return 0;
}

/* An EVENTS chunk's records, each made by output(); `*bad` is set if one fails the
 * check (modes 1-3), which the caller reports only once the whole body has decoded, as
 * the pure reader checks after decoding. */
static PyObject *
events(Dec *d, PyObject *node, PyObject *pid, int mode, int64_t fold_ns, int *bad)
{
    int lean = mode & LEAN, fold = mode & FOLD;
    mode &= ~(LEAN | FOLD);
    int64_t offset;
    Py_ssize_t n;
    if (sv(d, &offset) < 0 || count(d, &n) < 0) return NULL;
    PyObject *last[8], *f[NFIELDS] = {NULL}, *out = PyList_New(0);
    int64_t lastv[8];
    int fast[8] = {0};
    Held pend = {{NULL}}, run = {{NULL}};
    if (out == NULL) return NULL;
    for (int i = 0; i < 8; i++) last[i] = Py_NewRef(Py_None);
    for (Py_ssize_t e = 0; e < n; e++) {
        unsigned kind, lo, hi;
        if (byte(d, &kind) < 0 || byte(d, &lo) < 0 || byte(d, &hi) < 0) goto error;
        unsigned modes = lo | hi << 8;
        for (int i = 0; i < 8; i++) {
            unsigned mode2 = (modes >> (2 * i)) & 3;
            PyObject *v;
            if (mode2 == 0) continue;
            if (mode2 == 1) {
                v = Py_NewRef(Py_None);
                fast[i] = 0;
            } else if (mode2 == 2) {
                if (!PyLong_CheckExact(last[i])) {
                    fail("a delta from a field that is no int");
                    goto error;
                }
                int64_t delta;
                if (sv(d, &delta) < 0) goto error;
                v = add(last[i], delta, IS_ID[i], &fast[i], &lastv[i]);
                if (v == NULL) goto error;
                if (!fast[i]) fast[i] = as_int64(v, &lastv[i]);
            } else {
                if (!(v = value(d, 0, 0))) goto error;
                fast[i] = as_int64(v, &lastv[i]);
            }
            Py_SETREF(last[i], v);
        }
        for (int i = 0; i < 8; i++) f[AT[i]] = Py_NewRef(last[i]);
        PyObject *a, *b, *c, *s, *module = NULL, *function = NULL;
        int folds = 0;
        int64_t dur = 0;
        if (kind == K_ENTRY) {
            if (site(d, &module, &function) < 0 || !(a = value(d, 0, 0))) goto error_f;
            if (!(b = lean ? (skip(d, 0, 0) < 0 ? NULL : Py_NewRef(Py_None)) : value(d, 0, 0))) {
                Py_DECREF(a);
                goto error_f;
            }
            f[12] = lean ? lean_entry(d, module, function, a) : data4(0, module, function, a, b);
            Py_DECREF(a);
            Py_DECREF(b);
            f[11] = Py_NewRef(g_entry);
        } else if (kind == K_EXIT) {
            if (!(a = lean ? (skip(d, 0, 0) < 0 ? NULL : Py_NewRef(Py_None)) : value(d, 0, 0)))
                goto error_f;
            b = value(d, 0, 0);
            c = b ? value(d, 0, 0) : NULL;
            s = c ? string(d) : NULL;
            if (s && fold && pend.on && PyLong_CheckExact(c)) {
                /* a short call that did not raise, right after its entry: folded */
                int over;
                dur = PyLong_AsLongLongAndOverflow(c, &over);
                if (!over && !(dur == -1 && PyErr_Occurred()) && dur < fold_ns &&
                    PyUnicode_CompareWithASCIIString(s, "exception") != 0)
                    folds = same(f[9], pend.f[9]);
                if (folds < 0 || PyErr_Occurred()) s = NULL;
            }
            if (s) f[12] = folds ? Py_NewRef(g_empty) : data4(4, a, b, c, s);
            Py_DECREF(a);
            Py_XDECREF(b);
            Py_XDECREF(c);
            f[11] = Py_NewRef(g_exit);
        } else if (kind == K_OTHER || kind == K_WHOLE) {
            if (kind == K_WHOLE) {
                if (!(f[3] = value(d, 0, 0)) || !(f[4] = value(d, 0, 0)) ||
                    !(f[2] = value(d, 0, 0)))
                    goto error_f;
            }
            if (!(s = string(d))) goto error_f;
            a = PyDict_GetItemWithError(g_event_types, s);
            if (a == NULL && PyErr_Occurred()) goto error_f;
            f[11] = Py_NewRef(a ? a : s);
            f[12] = value(d, 0, 0);
        } else {
            PyErr_Format(g_FormatError, "an unknown record kind %u", kind);
            goto error_f;
        }
        if (f[12] == NULL) goto error_f;
        if (kind != K_WHOLE) {
            PyObject *ts = last[1];
            if (!PyLong_CheckExact(ts)) {
                fail("a timestamp that is no int");
                goto error_f;
            }
            int64_t w;
            if (fast[1] && !__builtin_add_overflow(lastv[1], offset, &w)) {
                f[2] = PyLong_FromLongLong(w);
            } else {
                PyObject *o = PyLong_FromLongLong(offset);
                f[2] = o ? PyNumber_Add(ts, o) : NULL;
                Py_XDECREF(o);
            }
            if (f[2] == NULL) goto error_f;
            f[3] = Py_NewRef(node);
            f[4] = Py_NewRef(pid);
        }
        if (mode > 0 && !*bad && check(f) < 0) *bad = 1;
        if (!*bad) { /* past a bad record, the rest is decoded only to find damage */
            if (fold ? fold_in(out, f, kind, module, function, folds, dur, &pend, &run) < 0
                     : append(out, f, mode, lean) < 0)
                goto error_f;
        }
        for (int k = 0; k < NFIELDS; k++) Py_CLEAR(f[k]);
    }
    if (fold && !*bad &&
        (run_flush(&run, out) < 0 || (pend.on && append(out, pend.f, 1, 1) < 0)))
        goto error;
    held_clear(&pend);
    held_clear(&run);
    for (int i = 0; i < 8; i++) Py_DECREF(last[i]);
    return out;
error_f:
    for (int k = 0; k < NFIELDS; k++) Py_CLEAR(f[k]);
error:
    held_clear(&pend);
    held_clear(&run);
    for (int i = 0; i < 8; i++) Py_DECREF(last[i]);
    Py_DECREF(out);
    return NULL;
}

static void
dec_free(Dec *d)
{
    for (Py_ssize_t i = 0; i < d->nstr; i++) Py_DECREF(d->strings[i]);
    PyMem_Free(d->strings);
    PyMem_Free(d->sites);
    PyMem_Free(d->shapes);
    PyMem_Free(d->keys);
    for (Py_ssize_t i = 0; i < d->ndata; i++) Py_XDECREF(d->entry_data[i]);
    PyMem_Free(d->entry_data);
}

static PyObject *
decode(Dec *d, PyObject *node, PyObject *pid, int mode, int64_t fold_ns)
{
    unsigned kind;
    uint64_t seq, c[3];
    int bad = 0;
    if (byte(d, &kind) < 0 || uv(d, &seq) < 0 || uv(d, &c[0]) < 0 || uv(d, &c[1]) < 0 ||
        uv(d, &c[2]) < 0)
        return NULL;
    PyObject *content;
    if (kind == CHUNK_EVENTS) {
        content = events(d, node, pid, mode, fold_ns, &bad);
    } else if (kind == CHUNK_HEADER || kind == CHUNK_CLOSE) {
        content = value(d, 0, 0);
        if (content && !PyDict_CheckExact(content)) {
            Py_CLEAR(content);
            fail("a header or stats that is no dict");
        }
    } else if (kind == CHUNK_NOTES) {
        content = value(d, 0, 0);
        int ok = content != NULL && PyList_CheckExact(content);
        for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(content); i++)
            ok = PyDict_CheckExact(PyList_GET_ITEM(content, i));
        if (content && !ok) {
            Py_CLEAR(content);
            fail("notes that are not a list of dicts");
        }
    } else {
        return Py_BuildValue("(IK(KKK)O)", kind, seq, c[0], c[1], c[2], Py_None);
    }
    if (content == NULL) return NULL;
    if (d->pos != d->len) {
        PyErr_Format(g_FormatError, "%zd bytes after the chunk's contents", d->len - d->pos);
        Py_DECREF(content);
        return NULL;
    }
    if (bad) {
        Py_DECREF(content);
        fail("a record of bad types");
        return NULL;
    }
    return Py_BuildValue("(IK(KKK)N)", kind, seq, c[0], c[1], c[2], content);
}

/* decode_body(body, node, pid, mode): see the top of this file. */
static PyObject *
decode_body(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 5 || !PyBytes_CheckExact(args[0]) || !PyLong_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_body(body: bytes, node, pid, mode: int[, fold_ns: int])");
        return NULL;
    }
    long mode = PyLong_AsLong(args[3]);
    if (mode == -1 && PyErr_Occurred()) return NULL;
    long long fold_ns = 0;
    if ((mode & FOLD) || nargs == 5) {
        if (mode != (1 | LEAN | FOLD) || nargs != 5 || !PyLong_Check(args[4])) {
            PyErr_SetString(PyExc_TypeError, "decode_body: fold_ns goes with mode 13 (1 | 4 | 8)");
            return NULL;
        }
        fold_ns = PyLong_AsLongLong(args[4]);
        if (fold_ns == -1 && PyErr_Occurred()) return NULL;
    }
    if (ready() < 0) return NULL;
    Dec d = {(const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), 0};
    /* A chunk makes thousands of containers that all outlive the call: a collection
     * every 700 of them finds nothing to free, and cost a third of the time (measured).
     * So collections wait for the end of the chunk; the allocation count carries over, so
     * the first allocation after it collects. No user code runs in between. */
    int gc_was_on = PyGC_Disable();
    PyObject *r = decode(&d, args[1], args[2], (int)mode, fold_ns);
    if (gc_was_on) PyGC_Enable();
    dec_free(&d);
    if (r == NULL && !PyErr_ExceptionMatches(g_FormatError) &&
        (PyErr_ExceptionMatches(PyExc_IndexError) || PyErr_ExceptionMatches(PyExc_ValueError) ||
         PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_OverflowError) ||
         PyErr_ExceptionMatches(PyExc_RecursionError))) {
        /* past the end, bad UTF-8, a bad date, an unhashable key...: as the pure decoder */
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (exc != NULL) PyErr_Format(g_FormatError, "%s: %S", Py_TYPE(exc)->tp_name, exc);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
    }
    return r;
}

static PyMethodDef decode_methods[] = {
    {"decode_body", (PyCFunction)(void (*)(void))decode_body, METH_FASTCALL,
     "decode_body(body, node, pid, mode, fold_ns=None)\n--\n\n"
     "_tsformat.decode_body's twin (_decode.c): (kind, seq, counts, content)."},
    {NULL, NULL, 0, NULL},
};

/* Add the decoder's functions to the module (called from PyInit__speedups). */
int
ts_decode_add(PyObject *module)
{
    return PyModule_AddFunctions(module, decode_methods);
}
