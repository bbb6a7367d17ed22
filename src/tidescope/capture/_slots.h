/* The ring's slot protocol (the header of _ring.c), shared by the writers (_report.c), the
 * readers (_ring.c) and the trace encoder (_encode.c): the slot struct, the references it
 * holds, the storage object and the scan that both readers run over it. See _ring.c for
 * the ordering rules. */
#ifndef TIDESCOPE_SLOTS_H
#define TIDESCOPE_SLOTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { K_EVENT = 1, K_RECORD = 2, K_ENTRY = 3, K_EXIT = 4 };
/* raw bits: which of the seven integer fields and four data items hold raw integers */
enum { R_EID = 1, R_TS = 2, R_THREAD = 4, R_TASK = 8, R_CORR = 16, R_PARENT = 32,
       R_CALL = 64 };
/* draw bits: data item k is a raw integer (1 << k; an exit's duration is item 2); D_ARGS:
 * a site entry's data items are its arguments' values in the site's parameter order, its
 * module, function and arity read from the site and its args dict made when read */
enum { D_RAW2 = 4, D_ARGS = 16 };
#define SITE_ARGS 4 /* the most arguments a site entry keeps in its data items */

typedef union { int64_t i; PyObject *o; } Val;

/* A raw thread id is an unsigned 64-bit value stored in .i; every other raw field is a
 * signed 64-bit integer. K_EVENT keeps the written object in d[0]; K_RECORD keeps the
 * event type in d[0] and the data in d[1]; K_ENTRY / K_EXIT keep their four data items. */
typedef struct {
    uint64_t stamp; /* 0 empty; 2*pos+1 being written; 2*pos+2 holds position pos */
    uint8_t kind;
    uint8_t raw;
    uint8_t draw;
    int32_t site; /* -1, or the site (_sites.table) of a call's entry or exit */
    Val eid, ts, thread, task, corr, parent, call;
    PyObject *ast;
    Val d[4];
} Slot;

/* A site-registered call's slot carries its site id, not strings: its ast node id and, for
 * an entry, its module and function (d[0], d[1]) are read from the site table (left NULL
 * in the slot: no references to take and release per event). */
extern PyObject *g_sites; /* _speedups.c: _sites.table, which only grows */

/* Item k (0 module, 1 function, 2 ast_node_id) of site `site`, borrowed: the table only
 * grows and its tuples stay, so a site id written to a slot stays readable. */
static inline PyObject *
site_item(int32_t site, int k)
{
    PyObject *t = g_sites;
    if (t == NULL || site >= PyList_GET_SIZE(t)) return Py_None;
    t = PyList_GET_ITEM(t, site);
    return PyTuple_Check(t) && PyTuple_GET_SIZE(t) > k ? PyTuple_GET_ITEM(t, k) : Py_None;
}

/* The slot's ast node id, borrowed (NULL: None). */
static inline PyObject *
slot_ast(Slot *c)
{
    return c->site >= 0 ? site_item(c->site, 2) : c->ast;
}

/* Data item k of an entry or exit (an entry's module and function from its site). */
static inline Val
slot_d(Slot *c, int k)
{
    if (k < 2 && c->site >= 0 && c->kind == K_ENTRY) return (Val){.o = site_item(c->site, k)};
    return c->d[k];
}

/* The parameter names of a D_ARGS entry's site (borrowed; an exact tuple of exact str, at
 * most SITE_ARGS, as report_site_entry checked), or NULL. */
static inline PyObject *
slot_params(Slot *c)
{
    PyObject *names = site_item(c->site, 3);
    return PyTuple_CheckExact(names) && PyTuple_GET_SIZE(names) <= SITE_ARGS ? names : NULL;
}

/* Data item k of an entry or exit as an object (new reference): what the pure ring's
 * 4-tuple holds (a D_ARGS entry's arity and args dict made here). */
static inline PyObject *
slot_item(Slot *c, int k)
{
    if (c->kind == K_ENTRY && (c->draw & D_ARGS)) {
        if (k < 2) return Py_NewRef(site_item(c->site, k));
        PyObject *names = slot_params(c);
        if (names == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "a site entry whose site changed");
            return NULL;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(names);
        if (k == 2) return PyLong_FromSsize_t(n);
        PyObject *d = PyDict_New();
        for (Py_ssize_t j = 0; d != NULL && j < n; j++) {
            PyObject *v = (c->draw & (1 << j)) ? PyLong_FromLongLong(c->d[j].i)
                                               : Py_NewRef(c->d[j].o);
            if (v == NULL || PyDict_SetItem(d, PyTuple_GET_ITEM(names, j), v) < 0) Py_CLEAR(d);
            Py_XDECREF(v);
        }
        return d;
    }
    Val v = slot_d(c, k);
    if (c->draw & (1 << k)) return PyLong_FromLongLong(v.i);
    return Py_NewRef(v.o != NULL ? v.o : Py_None);
}

/* Hold references outside the slot while it is rewritten: decrefs run after publishing. */
typedef struct { PyObject *o[12]; int n; } Garbage;

/* (n in a local: stores through g->o would otherwise reload and store g->n each time) */
#define GATHER_VAL(v, is_raw)                                                              \
    do {                                                                                   \
        PyObject *o_ = (v).o;                                                              \
        o[n] = o_; /* branch-free: the store is harmless when not counted (n <= 11) */     \
        n += !(is_raw) & (o_ != NULL);                                                     \
    } while (0)

/* The references a filled slot holds (the caller knows it is filled), added to g. */
static inline void
gather_slot(Garbage *g, Slot *s)
{
    unsigned raw = s->raw;
    PyObject **o = g->o;
    int n = g->n;
    GATHER_VAL(s->eid, raw & R_EID);
    GATHER_VAL(s->ts, raw & R_TS);
    GATHER_VAL(s->thread, raw & R_THREAD);
    GATHER_VAL(s->task, raw & R_TASK);
    GATHER_VAL(s->corr, raw & R_CORR);
    GATHER_VAL(s->parent, raw & R_PARENT);
    GATHER_VAL(s->call, raw & R_CALL);
    GATHER_VAL(((Val){.o = s->ast}), 0);
    unsigned draw = s->draw; /* item k raw: 1 << k (a D_ARGS entry's values, a duration) */
    GATHER_VAL(s->d[0], draw & 1);
    GATHER_VAL(s->d[1], draw & 2);
    GATHER_VAL(s->d[2], draw & 4);
    GATHER_VAL(s->d[3], draw & 8);
    g->n = n;
}
#undef GATHER_VAL

static inline void
release(Garbage *g)
{
    for (int k = 0; k < g->n; k++) Py_DECREF(g->o[k]);
}

/* Take new references to what a copy of a slot holds (no allocation, no Python code):
 * `held` gets them, for release() once the copy is done with. */
static inline void
hold_slot(Slot *copy, Garbage *held)
{
    held->n = 0;
    gather_slot(held, copy);
    for (int k = 0; k < held->n; k++) Py_INCREF(held->o[k]);
}

/* ---- the writer's side of the protocol (see _ring.c for the ordering rules) ---- */

/* Take the slot for pos: 1 when taken (stamp odd, old contents moved to g), 0 when a
 * newer position is there (the writer was lapped: nothing stored). */
static inline int
take_slot(Slot *s, uint64_t pos, Garbage *g)
{
    uint64_t want = 2 * pos + 1;
    uint64_t old = __atomic_load_n(&s->stamp, __ATOMIC_ACQUIRE);
    for (;;) {
        if (old >= want) return 0;
        if (old & 1) { /* an older writer is mid-store (only without the GIL) */
            old = __atomic_load_n(&s->stamp, __ATOMIC_ACQUIRE);
            continue;
        }
        if (__atomic_compare_exchange_n(&s->stamp, &old, want, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    }
    if (old) gather_slot(g, s);
    s->raw = 0;
    s->draw = 0;
    s->site = -1;
    s->ast = NULL;
    return 1;
}

static inline void
publish(Slot *s, uint64_t pos)
{
    __atomic_store_n(&s->stamp, 2 * pos + 2, __ATOMIC_RELEASE);
}

/* An exact int of at most two digits (|v| < 2**60 with 30-bit digits) read straight from
 * its digits: 1 and *out set, or 0 (the caller takes the general path). Ids are two
 * digits, so this skips the general conversion's loop for every id and most values. */
static inline int
small_long(PyObject *o, int64_t *out)
{
#if PYLONG_BITS_IN_DIGIT == 30
    PyLongObject *l = (PyLongObject *)o;
#if PY_VERSION_HEX >= 0x030C0000
    uintptr_t tag = l->long_value.lv_tag;
    uintptr_t n = tag >> 3; /* digit count; the low bits: 0 positive, 1 zero, 2 negative */
    const digit *d = l->long_value.ob_digit;
    int neg = (tag & 3) == 2;
#else
    Py_ssize_t size = Py_SIZE(l);
    uintptr_t n = (uintptr_t)(size < 0 ? -size : size);
    const digit *d = l->ob_digit;
    int neg = size < 0;
#endif
    int64_t v;
    if (n == 0) v = 0;
    else if (n == 1) v = (int64_t)d[0];
    else if (n == 2) v = (int64_t)d[0] | ((int64_t)d[1] << 30);
    else return 0;
    *out = neg ? -v : v;
    return 1;
#else
    (void)o;
    (void)out;
    return 0;
#endif
}

/* A Python object as a slot value: exact ints in range are kept raw. Steals nothing. */
static inline void
put_val(Slot *s, Val *v, PyObject *o, uint8_t bit)
{
    if (PyLong_CheckExact(o)) {
        int64_t x64;
        if (small_long(o, &x64)) {
            v->i = x64;
            s->raw |= bit;
            return;
        }
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred())) {
            v->i = x;
            s->raw |= bit;
            return;
        }
        PyErr_Clear();
    }
    v->o = Py_NewRef(o);
}

typedef struct {
    PyObject_HEAD
    Slot *slots;
    uint64_t size;
    uint64_t mask;
    uint64_t claim; /* positions claimed by drop_oldest writers: atomic */
    char fast;      /* drop_oldest and not destroyed: claim here without the Python lock */
    uint64_t wake_at; /* the writer that claims this position calls `wake` (the drain's) */
    PyObject *wake;
    uint64_t wait_at;           /* then the writer that claims this one waits for a pass */
    char stage;                 /* 1: wake_at is the wake-up; 2: it is the wait */
    char waiting;               /* a writer waits on `passed` (both under the GIL) */
    long long wait_us;
    PyThread_type_lock passed;  /* held; _set_wake releases it for a waiting writer */
} RingStorage;

/* Called by scan_slots for each current slot (a copy, and its position): 0 to go on,
 * 1 to stop after this slot, 2 to stop before it (it is read next time), -1 on an error
 * (set; the scan stops and the caller consumes nothing). */
typedef int (*slot_visitor)(void *ctx, Slot *copy, uint64_t pos);

/* _ring.c */
extern PyTypeObject RingStorage_Type;
/* The writer that claimed the drain's wake-up position wakes it (or waits for its pass). */
void high_water(RingStorage *self, uint64_t pos);

/* _ring.c: visit up to `count` current slots from *p (the pure _scan's walk); *p ends
 * after the last slot taken, *got counts the visited, *abandoned the abandoned ones. With
 * `hold`, the visitor's copy holds new references to its objects; without, it borrows
 * them, and the visitor must take them (hold_slot) before anything that may run Python
 * code: until then nothing can overwrite the slot (see _ring.c). */
int ts_scan_slots(RingStorage *self, uint64_t *p, Py_ssize_t count, Py_ssize_t *got,
                  Py_ssize_t *abandoned, slot_visitor visit, void *ctx, int hold);

/* _snap.c: count the exception set as an internal error (_pure.count_error) and clear
 * it: 1; or 0 when it is no Exception (KeyboardInterrupt, SystemExit: left set). */
int swallow_error(void);

/* _speedups.c: the objects the encoder compares with (set by attach()). */
extern PyTypeObject *g_event_class;   /* tidescope.events.Event */
extern Py_ssize_t g_event_offsets[13]; /* where each of its 13 slots lives */
extern PyObject *g_entry_type, *g_exit_type; /* EventType.FUNCTION_ENTRY / _EXIT */

/* _encode.c */
PyObject *ts_scan_encoded(RingStorage *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *ts_encode_events_chunk(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames);
PyObject *ts_frame_events_chunk(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames);
PyObject *ts_crc32(PyObject *m, PyObject *const *args, Py_ssize_t nargs);

#endif
