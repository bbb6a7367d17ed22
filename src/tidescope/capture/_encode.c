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
 * the pure encoder. Values and tables are in _values.c, CRC-32 in _crc32.c.
 */
#include "_encode.h"

/* the id fields' deltas are in units of 2**22 (ids are (sequence << 22) | pid) */
static const int ID_FIELD[8] = {1, 0, 0, 0, 1, 1, 1, 0};

/* --------------------------------------------------------------------------------- */
/* records                                                                            */

/* An envelope field as the encoder sees it: None, an integer (|v| < 2**64), or an
 * object (any other value, a borrowed reference). */
enum { F_NONE, F_INT, F_OBJ, F_SLOT };
typedef struct { int kind; i128 i; PyObject *o; } Field;
/* F_SLOT, in the first of a record's eight Fields: the eight are a slot's (put_slot),
 * read by put_fields from the slot itself. */
typedef struct { int kind; Slot *slot; } SlotFields;

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

/* The last value of field idx (the int64 copy in last64 kept with it). */
static inline void
set_last(Enc *e, int idx, int kind, i128 i, PyObject *o)
{
    Last *l = &e->last[idx];
    PyObject *old = l->o;
    l->kind = kind;
    l->i = i;
    l->o = o ? Py_NewRef(o) : NULL;
    if (kind == L_INT && i >= INT64_MIN && i <= INT64_MAX) {
        e->fast |= 1u << idx;
        e->last64[idx] = (int64_t)i;
    }
    else {
        e->fast &= ~(1u << idx);
    }
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
    if (e->fast & (1u << idx)) l->i = e->last64[idx]; /* put_slot_fields keeps only last64 */
    if (f->kind == F_NONE) {
        mode = l->kind == L_NONE ? 0 : 1;
        set_last(e, idx, L_NONE, 0, NULL);
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
        set_last(e, idx, L_INT, v, NULL);
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
        set_last(e, idx, L_BIG, 0, v);
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
        set_last(e, idx, L_STR, 0, v);
        return mode;
    }
    if (put_value(e, v, 0) < 0) return -1;
    set_last(e, idx, L_OTHER, 0, NULL);
    return 3;
}

/* The most a field's payload takes on the fast paths of put_fields: a mode 2 varint (10
 * bytes) or a mode 3 int of the i128 window (tag, length, 17 bytes). */
#define FIELD_ROOM 20

/* The record's kind, modes and the eight fields' payloads. The common cases take no
 * reference and no call: an int after an int (a delta, or the same value), None after
 * None, the same str object as before (an ast node id from the site table); the room for
 * them is reserved once. The rest goes through put_field. */
/* Field i of a slot through put_field: its mode, or -1. */
static int
put_slot_field(Enc *e, int i, Slot *c, Val *v)
{
    Field f;
    if (i < 7 && (c->raw & (1u << i))) {
        f.kind = F_INT;
        f.i = i == 2 ? (i128)(uint64_t)v->i : (i128)v->i; /* thread ids are unsigned */
    }
    else if (field_obj(&f, i < 7 ? v->o : slot_ast(c)) < 0) {
        return -1;
    }
    return put_field(e, i, &f);
}

/* A slot's eight fields (see put_fields), read from the slot: a raw int after an int of
 * the int64 range is a delta in int64 arithmetic (the i128 path when it overflows), None
 * after None and a str after the same str object (the site's ast node id) are mode 0,
 * with no Field built; the rest goes through put_field. */
static int
put_slot_fields(Enc *e, uint8_t kind, Slot *c)
{
    Buf *b = &e->out;
    if (b->cap - b->len < 3 + 8 * FIELD_ROOM && buf_grow(b, 3 + 8 * FIELD_ROOM) < 0) return -1;
    uint8_t *o = b->p + b->len;
    size_t at = b->len + 1;
    *o = kind;
    o += 3;
    unsigned modes = 0, raw = c->raw, fast = raw & e->fast;
    Val *vals[7] = {&c->eid, &c->ts, &c->thread, &c->task, &c->corr, &c->parent, &c->call};
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        unsigned bit = 1u << i;
        int m = -1;
        if (i < 7 && (fast & bit) && (i != 2 || vals[i]->i >= 0)) {
            int64_t x = vals[i]->i, d;
            if (__builtin_sub_overflow(x, e->last64[i], &d) || (ID_FIELD[i] && (d & ID_MASK))) {
                m = -1; /* the general path */
            }
            else if (d == 0) {
                m = 0;
            }
            else {
                uint64_t z = zigzag(ID_FIELD[i] ? d >> ID_SHIFT : d);
                while (z > 0x7F) {
                    *o++ = (uint8_t)((z & 0x7F) | 0x80);
                    z >>= 7;
                }
                *o++ = (uint8_t)z;
                e->last64[i] = x; /* last[i].i is brought up to date by put_field */
                m = 2;
            }
        }
        else if (i == 7 || !(raw & bit)) {
            PyObject *obj = i < 7 ? vals[i]->o : slot_ast(c);
            Last *l = &e->last[i];
            if (obj == NULL || obj == Py_None ? l->kind == L_NONE
                                              : l->kind == L_STR && l->o == obj)
                m = 0;
        }
        if (m < 0) {
            b->len = (size_t)(o - b->p);
            m = put_slot_field(e, i, c, i < 7 ? vals[i] : NULL);
            if (m < 0 || buf_grow(b, (size_t)(7 - i) * FIELD_ROOM) < 0) return -1;
            o = b->p + b->len;
        }
        modes |= (unsigned)m << (2 * i);
    }
    b->len = (size_t)(o - b->p);
    b->p[at] = (uint8_t)(modes & 0xFF);
    b->p[at + 1] = (uint8_t)(modes >> 8);
    return 0;
}

static int
put_fields(Enc *e, uint8_t kind, Field *f)
{
    if (f[0].kind == F_SLOT) return put_slot_fields(e, kind, ((SlotFields *)f)->slot);
    if (buf_grow(&e->out, 3 + 8 * FIELD_ROOM) < 0) return -1;
    Buf *b = &e->out;
    b->p[b->len] = kind;
    size_t at = b->len + 1;
    b->len += 3;
    unsigned modes = 0;
    for (int i = 0; i < 8; i++) {
        Last *l = &e->last[i];
        int m;
        if (e->fast & (1u << i)) l->i = e->last64[i];
        if (f[i].kind == F_INT && l->kind == L_INT) {
            i128 d = f[i].i - l->i;
            if (d == 0) {
                m = 0;
            }
            else if (ID_FIELD[i] ? (d & ID_MASK) == 0 : d >= INT64_MIN && d <= INT64_MAX) {
                m = 2;
                uint64_t z = zigzag((int64_t)(ID_FIELD[i] ? d >> ID_SHIFT : d));
                uint8_t *o = b->p + b->len;
                while (z > 0x7F) {
                    *o++ = (uint8_t)((z & 0x7F) | 0x80);
                    z >>= 7;
                }
                *o++ = (uint8_t)z;
                b->len = (size_t)(o - b->p);
            }
            else {
                m = 3;
                if (put_int(e, f[i].i) < 0) return -1;
            }
            set_last(e, i, L_INT, f[i].i, NULL);
        }
        else if (f[i].kind == F_NONE && l->kind == L_NONE) {
            m = 0;
        }
        else if (f[i].kind == F_OBJ && l->kind == L_STR && l->o == f[i].o) {
            m = 0;
        }
        else {
            m = put_field(e, i, &f[i]);
            if (m < 0 || buf_grow(b, (size_t)(7 - i) * FIELD_ROOM) < 0) return -1;
        }
        modes |= (unsigned)m << (2 * i);
    }
    b->p[at] = (uint8_t)(modes & 0xFF);
    b->p[at + 1] = (uint8_t)(modes >> 8);
    return 0;
}

static int
put_event_type(Enc *e, PyObject *etype)
{
    if (PyUnicode_CheckExact(etype)) return put_string(e, etype);
    enc_pin(e);
    PyObject *s = PyObject_Str(etype);
    if (s == NULL) return -1;
    int r = PyUnicode_CheckExact(s) ? put_string(e, s) : -1;
    if (r < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "str() gave no str");
    Py_DECREF(s);
    return r;
}

/* The body of a record of event type `etype` and 4-tuple data `d` (entry or exit items):
 * kind 1 or 2 when its strings are exact str, else kind 3 with the data as its dict.
 * Writes the fields too. `site`: the site id of d[0] and d[1] (from a slot), or -1. */
static int
put_call_record(Enc *e, Field *f, PyObject *etype, PyObject **d, int32_t site)
{
    if (etype == g_entry_type && PyUnicode_CheckExact(d[0]) && PyUnicode_CheckExact(d[1])) {
        return put_fields(e, REC_ENTRY, f) < 0 || put_site_id(e, site, d[0], d[1]) < 0 ||
                       put_value(e, d[2], 0) < 0 || put_value(e, d[3], 0) < 0
                   ? -1
                   : 0;
    }
    if (etype == g_exit_type && PyUnicode_CheckExact(d[3])) {
        return put_fields(e, REC_EXIT, f) < 0 || put_value(e, d[0], 0) < 0 ||
                       put_value(e, d[1], 0) < 0 || put_value(e, d[2], 0) < 0 ||
                       put_reason(e, d[3]) < 0
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
        return put_call_record(e, f, etype, ((PyTupleObject *)data)->ob_item, -1);
    return put_fields(e, REC_OTHER, f) < 0 || put_event_type(e, etype) < 0 ||
                   put_value(e, data, 0) < 0
               ? -1
               : 0;
}

/* A site entry whose arguments are in its data items (D_ARGS): the record of the entry
 * with its args dict, the site's parameter names as the keys, written without the dict. */
static int
put_site_args(Enc *e, Field *f, Slot *c)
{
    PyObject *names = slot_params(c);
    if (names == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a site entry whose site changed");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (put_fields(e, REC_ENTRY, f) < 0 ||
        put_site_id(e, c->site, site_item(c->site, 0), site_item(c->site, 1)) < 0 ||
        put_int(e, n) < 0 || put_u8(&e->out, T_SHAPED) < 0 ||
        put_shape(e, ((PyTupleObject *)names)->ob_item, n) < 0)
        return -1;
    for (Py_ssize_t j = 0; j < n; j++) {
        int r = (c->draw & (1 << j)) ? put_int(e, c->d[j].i) : put_value(e, c->d[j].o, 1);
        if (r < 0) return -1;
    }
    return 0;
}

/* One held slot: 0, 1 when it holds no event (nothing written), -1. */
static int
put_slot(Enc *e, Slot *c)
{
    if (c->kind != K_ENTRY && c->kind != K_EXIT) enc_pin(e); /* write()'s objects */
    if (c->kind == K_EVENT) return put_whole(e, c->d[0].o);
    Field f[8];
    ((SlotFields *)f)->kind = F_SLOT;
    ((SlotFields *)f)->slot = c;
    if (c->kind == K_RECORD) {
        PyObject *etype = c->d[0].o, *data = c->d[1].o;
        if (PyTuple_CheckExact(data) && PyTuple_GET_SIZE(data) == 4)
            return put_call_record(e, f, etype, ((PyTupleObject *)data)->ob_item, -1);
        return put_fields(e, REC_OTHER, f) < 0 || put_event_type(e, etype) < 0 ||
                       put_value(e, data, 0) < 0
                   ? -1
                   : 0;
    }
    if (c->kind == K_ENTRY && (c->draw & D_ARGS)) return put_site_args(e, f, c);
    if (c->kind == K_EXIT && (c->draw & D_RAW2) && PyUnicode_CheckExact(c->d[3].o)) {
        /* put_call_record's exit, with the raw duration written as the int it stands for */
        return put_fields(e, REC_EXIT, f) < 0 || put_value(e, c->d[0].o, 0) < 0 ||
                       put_value(e, c->d[1].o, 0) < 0 || put_int64(e, c->d[2].i) < 0 ||
                       put_reason(e, c->d[3].o) < 0
                   ? -1
                   : 0;
    }
    PyObject *d[4], *dur = NULL;
    for (int k = 0; k < 4; k++) d[k] = slot_d(c, k).o;
    if (c->draw & D_RAW2) {
        dur = PyLong_FromLongLong(c->d[2].i);
        if (dur == NULL) return -1;
        d[2] = dur;
    }
    int r = put_call_record(e, f, c->kind == K_ENTRY ? g_entry_type : g_exit_type, d, c->site);
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
    s->e.slot = copy; /* its objects borrowed: see enc_pin */
    s->e.held.n = -1;
    int w = put_slot(&s->e, copy);
    s->e.slot = NULL;
    if (s->e.held.n > 0) release(&s->e.held);
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
    /* the slots' objects are borrowed until something may run Python code (enc_pin): no
     * collection, whose finalizers would run some, while the chunk is encoded */
    int gc_was_on = PyGC_Disable();
    int r = ts_scan_slots(self, &pos, count, &got, &abandoned, encode_visit, &s, 0);
    if (gc_was_on) PyGC_Enable();
    if (r < 0) goto done;
    PyObject *records = PyBytes_FromStringAndSize((const char *)s.e.out.p,
                                                  (Py_ssize_t)s.e.out.len);
    if (records == NULL) goto done;
    out = Py_BuildValue("(NnKn)", records, s.written, (unsigned long long)pos, got);
done:
    enc_close(&s.e);
    return out;
}
