/* tidescope.capture._speedups: the C twin of the capture core's hot path.
 *
 * Mirrors, name for name, the parts of _pure.py / _ring.py that run once per event:
 *
 *   RingStorage            the ring's slots and claim counter (_ring.RingBuffer's storage);
 *                          _ring.ring_class() puts the shared Python logic (checks, locks,
 *                          stats, block) on top of it
 *   report_function_entry  _pure.report_function_entry
 *   report_function_exit   _pure.report_function_exit
 *   Ids / reset_ids        the id counter ((sequence << 22) | pid) shared with Python
 *
 * The slot struct and the scan both readers share are in _slots.h; the trace encoder
 * (RingStorage._scan_encoded, encode_events_chunk) is in _encode.c.
 *
 * Everything else (snapshots of containers and objects, task ids, the context functions)
 * stays in Python and is called from here, so both cores give identical results; the
 * pure module is the specification.
 *
 * Slots. A slot is a fixed C struct: the ids, clocks and thread are stored as raw 64-bit
 * integers (no Python int per field), other values as references; an entry or exit keeps
 * its four data items inline and builds the data tuple only when it is read. 112 bytes a
 * slot, allocated once.
 *
 * Ordering. A writer claims a position with an atomic fetch-add (drop_oldest) or under the
 * Python lock (drop_newest, block), then takes the slot by a CAS of its stamp from an older
 * even value to 2*pos+1 (odd: being written), writes the fields and publishes with a
 * release store of 2*pos+2. A stamp holding a newer position means the writer was lapped:
 * its event is dropped and readers count it from the gap. Readers load the stamp with
 * acquire, copy, and check it again. Nothing between claim and publish allocates or runs
 * Python code, so with the GIL the sequence is also atomic as a whole. Without the GIL
 * (not supported: the module does not declare Py_mod_gil) readers would also need
 * deferred reclamation of the references a writer drops when it overwrites a slot, an
 * acquire fence between their loads of a slot and the second load of its stamp, and
 * per-field atomic loads instead of hold_slot()'s plain struct copy.
 */
#include "_slots.h"
#include "_deep.h"
#include <structmember.h>
#include <string.h>
#include <time.h>

#define PID_BITS 22

/* --------------------------------------------------------------------------------- */
/* state shared with _pure (attach() and sync() set it)                               */

static int g_enabled = 0;
static PyObject *g_buffer = NULL;     /* a RingStorage subclass instance, or NULL */
static PyObject *g_limits = NULL;     /* the Limits named tuple */
/* the fast paths' bounds: _pure._fast_limits() */
static Py_ssize_t g_max_items = 20;
static Py_ssize_t g_max_string = 256;
static Py_ssize_t g_top_string = 256;
static unsigned long long g_int_limit = 1ULL << 63;
static Py_ssize_t g_budget = 4096;
static Py_ssize_t g_depth = 3;
#define SMALL 8

static PyObject *g_stack_var = NULL;  /* the ContextVar of frames */
static PyObject *g_off = NULL;        /* _OFF */
static PyObject *g_count_error = NULL;
static PyObject *g_snap = NULL;       /* _pure._snap(value, limits) */
static PyObject *g_exc_snap = NULL;   /* _pure._exc_snap(value, limits) */
static PyObject *g_snap_ref = NULL;   /* _pure._snap_ref(value, limits, depth) */
static PyObject *g_ref_kinds = NULL;  /* _snapshot._REF_KINDS: type -> (name, length) */
static PyObject *g_ref_class = NULL;  /* tidescope.events.ObjectRef */
/* the value policy (_pure._apply_policy sets it through set_policy) */
static int g_by_ref = 0;
static PyObject *g_policy = NULL;     /* _pure._policy: key -> by reference, or NULL */
static PyObject *g_decide = NULL;     /* _pure._decide(key) */
static PyObject *g_loop_task_id = NULL;
static PyObject *g_get_running_loop = NULL;
PyObject *g_entry_type = NULL; /* EventType.FUNCTION_ENTRY (_slots.h) */
PyObject *g_exit_type = NULL;
static PyObject **g_keep = NULL;      /* KEEP_TYPES as an array of type pointers */
static Py_ssize_t g_nkeep = 0;
static PyObject *g_abandoned = NULL;  /* published by a writer interrupted after its claim */
PyTypeObject *g_event_class = NULL; /* tidescope.events.Event (_slots.h) */
Py_ssize_t g_event_offsets[13];     /* where each of its 13 slots lives */
static PyObject *g_clock_module = NULL;    /* the _clock module: wall_offset */
static PyObject *s_data_keys[8];           /* module, function, arity, args, return_value, ... */
static PyObject *s_node = NULL, *s_pid = NULL, *s_wall_offset = NULL;
static PyObject *s_normal = NULL, *s_put_slow = NULL;
static PyObject *s_ast_node_id = NULL, *s_call_id = NULL, *s_exit_reason = NULL,
                *s_duration_ns = NULL;

static int64_t g_seq = 0;             /* ids issued: atomic */
static int64_t g_pid_tag = 0;

static inline int64_t
new_id(void)
{
    int64_t seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    return (seq << PID_BITS) | g_pid_tag;
}

static inline int64_t
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* what time.monotonic_ns reads on Linux */
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* --------------------------------------------------------------------------------- */
/* slots                                                                              */

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

static inline PyObject *
get_val(Val v, int is_raw)
{
    if (is_raw) return PyLong_FromLongLong(v.i);
    return Py_NewRef(v.o);
}

/* A reader's small cache of ints it built: the ids of one thread, task, correlation and
 * call recur from event to event, so a batch shares their int objects. */
#define ICACHE 64
typedef struct { int64_t key[ICACHE]; PyObject *obj[ICACHE]; } IntCache;

static inline PyObject *
cached_int(IntCache *c, int64_t v)
{
    unsigned h = (unsigned)(((uint64_t)v * 0x9E3779B97F4A7C15ULL) >> 58);
    if (c->obj[h] != NULL && c->key[h] == v) return Py_NewRef(c->obj[h]);
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL) return NULL;
    Py_XSETREF(c->obj[h], Py_NewRef(o));
    c->key[h] = v;
    return o;
}

static inline PyObject *
get_val_cached(IntCache *c, Val v, int is_raw)
{
    if (is_raw) return cached_int(c, v.i);
    return Py_NewRef(v.o);
}

static void
icache_clear(IntCache *c)
{
    for (int k = 0; k < ICACHE; k++) Py_CLEAR(c->obj[k]);
}

/* --------------------------------------------------------------------------------- */
/* RingStorage                                                                        */


static PyTypeObject RingStorage_Type;

static void
free_slots(Slot *slots, uint64_t n)
{
    if (slots == NULL) return;
    for (uint64_t i = 0; i < n; i++) {
        Garbage g = {.n = 0};
        if (slots[i].stamp == 0) continue;
        gather_slot(&g, &slots[i]);
        release(&g);
    }
    PyMem_Free(slots);
}

/* The references in published slots, for the collector: an event in the ring may be part
 * of a cycle (an object whose attribute refers back to the buffer, say). A slot being
 * written (odd stamp) is skipped: with the GIL the collector never runs then (nothing
 * between claim and publish allocates), and a reference not visited only keeps its
 * object alive. Raw integers are not references. */
static int
RingStorage_traverse(RingStorage *self, visitproc visit, void *arg)
{
    Slot *slots = self->slots;
    for (uint64_t i = 0; slots != NULL && i < self->size; i++) {
        uint64_t st = __atomic_load_n(&slots[i].stamp, __ATOMIC_ACQUIRE);
        if (st == 0 || (st & 1)) continue;
        Garbage g = {.n = 0};
        gather_slot(&g, &slots[i]);
        for (int k = 0; k < g.n; k++) Py_VISIT(g.o[k]);
    }
    Py_VISIT(self->wake);
    return 0;
}

/* Break a cycle: detach the slots first (readers and writers then see no storage), then
 * release what they held, which may run finalizers. */
static int
RingStorage_clear(RingStorage *self)
{
    Slot *slots = self->slots;
    self->slots = NULL;
    self->fast = 0;
    self->wake_at = UINT64_MAX;
    Py_CLEAR(self->wake);
    free_slots(slots, self->size);
    return 0;
}

static void
RingStorage_dealloc(RingStorage *self)
{
    PyObject_GC_UnTrack(self);
    RingStorage_clear(self);
    if (self->passed != NULL) PyThread_free_lock(self->passed);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RingStorage_new_storage(RingStorage *self, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) return NULL;
    if (size <= 0 || (size & (size - 1))) {
        PyErr_SetString(PyExc_ValueError, "size must be a positive power of two");
        return NULL;
    }
    Slot *fresh = PyMem_Calloc((size_t)size, sizeof(Slot));
    if (fresh == NULL) return PyErr_NoMemory();
    Slot *old = self->slots;
    uint64_t oldn = self->size;
    self->slots = fresh;
    self->size = (uint64_t)size;
    self->mask = (uint64_t)size - 1;
    __atomic_store_n(&self->claim, 0, __ATOMIC_RELEASE);
    free_slots(old, oldn); /* may run finalizers: after the new storage is in place */
    Py_RETURN_NONE;
}

static PyObject *
RingStorage_wipe_storage(RingStorage *self, PyObject *Py_UNUSED(ignored))
{
    Slot *fresh = PyMem_Calloc((size_t)self->size, sizeof(Slot));
    if (fresh == NULL) return PyErr_NoMemory();
    Slot *old = self->slots;
    self->slots = fresh;
    free_slots(old, self->size);
    Py_RETURN_NONE;
}

static PyObject *
RingStorage_claimed(RingStorage *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->claim, __ATOMIC_ACQUIRE));
}

static PyObject *
RingStorage_claim_next(RingStorage *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(__atomic_fetch_add(&self->claim, 1, __ATOMIC_ACQ_REL));
}

/* 0 if payload has a shape the core builds and there is storage, else -1 (error set). */
static int
check_payload(RingStorage *self, PyObject *payload)
{
    if (!PyTuple_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "payload must be a tuple");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(payload);
    if (n != 1 && n != 10) {
        PyErr_Format(PyExc_ValueError, "payload must have 1 or 10 items, got %zd", n);
        return -1;
    }
    if (self->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ring storage not allocated");
        return -1;
    }
    return 0;
}

/* Store a payload tuple as the pure ring would store (pos, *payload). Returns 1 stored,
 * 0 lapped, -1 error (a payload of a shape the core never builds). */
static int
store_payload(RingStorage *self, uint64_t pos, PyObject *payload)
{
    if (check_payload(self, payload) < 0) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(payload);
    Slot *s = &self->slots[pos & self->mask];
    Garbage g = {.n = 0};
    if (!take_slot(s, pos, &g)) return 0;
    PyObject *const *it = ((PyTupleObject *)payload)->ob_item;
    if (n == 1) {
        s->kind = K_EVENT;
        s->d[0].o = Py_NewRef(it[0]);
        s->d[1].o = s->d[2].o = s->d[3].o = NULL;
        s->eid.o = s->ts.o = s->thread.o = s->task.o = NULL;
        s->corr.o = s->parent.o = s->call.o = NULL;
    }
    else {
        put_val(s, &s->eid, it[0], R_EID);
        put_val(s, &s->ts, it[1], R_TS);
        put_val(s, &s->thread, it[2], R_THREAD);
        put_val(s, &s->task, it[3], R_TASK);
        put_val(s, &s->corr, it[4], R_CORR);
        put_val(s, &s->parent, it[5], R_PARENT);
        put_val(s, &s->call, it[6], R_CALL);
        s->ast = it[7] == Py_None ? NULL : Py_NewRef(it[7]);
        PyObject *etype = it[8], *data = it[9];
        if ((etype == g_entry_type || etype == g_exit_type) && PyTuple_CheckExact(data) &&
            PyTuple_GET_SIZE(data) == 4) {
            s->kind = etype == g_entry_type ? K_ENTRY : K_EXIT;
            for (int k = 0; k < 4; k++) s->d[k].o = Py_NewRef(PyTuple_GET_ITEM(data, k));
        }
        else {
            s->kind = K_RECORD;
            s->d[0].o = Py_NewRef(etype);
            s->d[1].o = Py_NewRef(data);
            s->d[2].o = s->d[3].o = NULL;
        }
    }
    publish(s, pos);
    release(&g);
    return 1;
}

static PyObject *
RingStorage_store(RingStorage *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_store(pos, payload)");
        return NULL;
    }
    unsigned long long pos = PyLong_AsUnsignedLongLong(args[0]);
    if (pos == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    int r = store_payload(self, pos, args[1]);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
RingStorage_store_abandoned(RingStorage *self, PyObject *arg)
{
    unsigned long long pos = PyLong_AsUnsignedLongLong(arg);
    if (pos == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyObject *payload = PyTuple_Pack(1, g_abandoned);
    if (payload == NULL) return NULL;
    int r = store_payload(self, pos, payload);
    Py_DECREF(payload);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* The writer that claimed the armed position (`wake_at`): at the first mark it wakes the
 * drain, at the second it waits for the drain's pass, at most `wait_us`, with the GIL
 * released. Called once the slot is published, with no error set. The drain's callback is
 * a lock's release (C, no Python code, so no signal handler runs in it); whatever it
 * raises is dropped. The wait runs no Python code either (signals wait for its end), and
 * happens once per arming: a drain that never comes back costs one wait. */
static void
high_water(RingStorage *self, uint64_t pos)
{
    if (self->stage == 1) {
        PyObject *wake = self->wake;
        self->stage = 0;
        if (self->wait_at != UINT64_MAX && self->wait_at > pos && self->passed != NULL) {
            self->stage = 2;
            __atomic_store_n(&self->wake_at, self->wait_at, __ATOMIC_RELEASE);
        }
        if (wake == NULL) return;
        Py_INCREF(wake);
        PyObject *r = PyObject_CallNoArgs(wake);
        if (r == NULL) PyErr_Clear();
        Py_XDECREF(r);
        Py_DECREF(wake);
        return;
    }
    if (self->stage != 2 || self->passed == NULL) return;
    self->stage = 0;
    self->waiting = 1;
    Py_INCREF(self);
    PyThread_type_lock passed = self->passed;
    long long us = self->wait_us;
    Py_BEGIN_ALLOW_THREADS
    if (PyThread_acquire_lock_timed(passed, us, 0) != PY_LOCK_ACQUIRED) us = -1;
    Py_END_ALLOW_THREADS
    self->waiting = 0;
    Py_DECREF(self);
}

/* _set_wake(position, callback, wait_position, wait_seconds): call callback() from the
 * writer that claims position, then have the writer that claims wait_position wait for
 * the next _set_wake (a negative position or None: never). Releases a waiting writer. */
static PyObject *
RingStorage_set_wake(RingStorage *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_set_wake(position, callback, wait_position, wait)");
        return NULL;
    }
    long long pos = PyLong_AsLongLong(args[0]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    long long wait_pos = PyLong_AsLongLong(args[2]);
    if (wait_pos == -1 && PyErr_Occurred()) return NULL;
    double wait = PyFloat_AsDouble(args[3]);
    if (wait == -1.0 && PyErr_Occurred()) return NULL;
    if (wait_pos >= 0 && self->passed == NULL) {
        PyThread_type_lock lock = PyThread_allocate_lock();
        if (lock == NULL) return PyErr_NoMemory();
        PyThread_acquire_lock(lock, WAIT_LOCK);
        self->passed = lock;
    }
    PyObject *wake = args[1] == Py_None ? NULL : Py_NewRef(args[1]);
    __atomic_store_n(&self->wake_at, UINT64_MAX, __ATOMIC_RELEASE);
    self->stage = 0;
    Py_XSETREF(self->wake, wake);
    self->wait_at = wait_pos >= 0 ? (uint64_t)wait_pos : UINT64_MAX;
    self->wait_us = wait > 0 ? (long long)(wait * 1e6) : 0;
    if (self->waiting) {
        self->waiting = 0;
        PyThread_release_lock(self->passed);
    }
    if (wake != NULL && pos >= 0) {
        self->stage = 1;
        __atomic_store_n(&self->wake_at, (uint64_t)pos, __ATOMIC_RELEASE);
    }
    Py_RETURN_NONE;
}

static PyObject *
RingStorage_put(RingStorage *self, PyObject *payload)
{
    if (self->fast) {
        /* checked before the claim: a rejected payload never leaves a claimed slot that
         * no writer fills (readers would wait on it until the ring wraps) */
        if (check_payload(self, payload) < 0) return NULL;
        uint64_t pos = __atomic_fetch_add(&self->claim, 1, __ATOMIC_ACQ_REL);
        if (store_payload(self, pos, payload) < 0) return NULL;
        if (pos == self->wake_at) high_water(self, pos);
        Py_RETURN_TRUE;
    }
    return PyObject_CallMethodOneArg((PyObject *)self, s_put_slow, payload);
}

static PyObject *
RingStorage_write(RingStorage *self, PyObject *event)
{
    PyObject *payload = PyTuple_Pack(1, event);
    if (payload == NULL) return NULL;
    PyObject *r = RingStorage_put(self, payload);
    Py_DECREF(payload);
    return r;
}

/* The values both readers build from a slot: thread, task, correlation, parent, call,
 * ast node id (into v[0..5]). */
static void
context_values(Slot *c, IntCache *ic, PyObject **v)
{
    v[0] = (c->raw & R_THREAD) && c->thread.i >= 0 ? cached_int(ic, c->thread.i)
           : (c->raw & R_THREAD) ? PyLong_FromUnsignedLongLong((uint64_t)c->thread.i)
                                 : Py_NewRef(c->thread.o);
    v[1] = get_val_cached(ic, c->task, c->raw & R_TASK);
    v[2] = get_val_cached(ic, c->corr, c->raw & R_CORR);
    v[3] = get_val_cached(ic, c->parent, c->raw & R_PARENT);
    v[4] = get_val_cached(ic, c->call, c->raw & R_CALL);
    v[5] = Py_NewRef(c->ast ? c->ast : Py_None);
}

static PyObject *data_dict(Slot *c);

/* The event type and its data (into v[0..1]): an entry's or exit's four items as the
 * 4-tuple the pure ring stores, or as the Event's dict. */
static void
type_and_data(Slot *c, PyObject **v, int as_dict)
{
    if (c->kind == K_RECORD) {
        v[0] = Py_NewRef(c->d[0].o);
        v[1] = Py_NewRef(c->d[1].o);
        return;
    }
    v[0] = Py_NewRef(c->kind == K_ENTRY ? g_entry_type : g_exit_type);
    if (as_dict) {
        v[1] = data_dict(c);
        return;
    }
    PyObject *d = PyTuple_New(4);
    if (d != NULL) {
        for (int k = 0; k < 4; k++) {
            PyObject *x = get_val(c->d[k], k == 2 && (c->draw & D_RAW2));
            if (x == NULL) {
                Py_CLEAR(d);
                break;
            }
            PyTuple_SET_ITEM(d, k, x);
        }
    }
    v[1] = d;
}

/* One published slot as the pure ring's tuple. */
static PyObject *
materialize(Slot *c, uint64_t pos, IntCache *ic)
{
    PyObject *p = PyLong_FromUnsignedLongLong(pos);
    if (p == NULL) return NULL;
    if (c->kind == K_EVENT) {
        PyObject *t = PyTuple_New(2);
        if (t == NULL) { Py_DECREF(p); return NULL; }
        PyTuple_SET_ITEM(t, 0, p);
        PyTuple_SET_ITEM(t, 1, Py_NewRef(c->d[0].o));
        return t;
    }
    PyObject *t = PyTuple_New(11);
    if (t == NULL) { Py_DECREF(p); return NULL; }
    PyTuple_SET_ITEM(t, 0, p);
    PyObject *v[10];
    v[0] = get_val(c->eid, c->raw & R_EID);
    v[1] = get_val(c->ts, c->raw & R_TS);
    context_values(c, ic, v + 2);
    type_and_data(c, v + 8, 0);
    int bad = 0;
    for (int k = 0; k < 10; k++) {
        if (v[k] == NULL) { bad = 1; v[k] = Py_NewRef(Py_None); }
        PyTuple_SET_ITEM(t, k + 1, v[k]);
    }
    if (bad) { Py_DECREF(t); return NULL; }
    return t;
}

/* An entry's or exit's data dict from its four items. */
static PyObject *
data_dict(Slot *c)
{
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    PyObject *const *keys = &s_data_keys[c->kind == K_ENTRY ? 0 : 4];
    for (int k = 0; k < 4; k++) {
        PyObject *v = get_val(c->d[k], k == 2 && (c->draw & D_RAW2));
        if (v == NULL || PyDict_SetItem(d, keys[k], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

/* One published slot as an Event (what _ring._event_from_record builds), or the object
 * written with write(). */
static PyObject *
build_event(Slot *c, PyObject *node, PyObject *pid, int64_t wall_offset, IntCache *ic)
{
    PyObject *wall_obj = NULL;
    if (c->kind == K_EVENT) return Py_NewRef(c->d[0].o);
    PyObject *v[13];
    v[0] = get_val(c->eid, c->raw & R_EID);
    v[1] = get_val(c->ts, c->raw & R_TS);
    if (c->raw & R_TS) {
        v[2] = PyLong_FromLongLong(c->ts.i + wall_offset);
    }
    else {
        wall_obj = PyLong_FromLongLong(wall_offset);
        v[2] = wall_obj ? PyNumber_Add(c->ts.o, wall_obj) : NULL;
        Py_XDECREF(wall_obj);
    }
    v[3] = Py_NewRef(node);
    v[4] = Py_NewRef(pid);
    context_values(c, ic, v + 5);
    type_and_data(c, v + 11, 1);
    PyObject *ev = NULL;
    int bad = 0;
    for (int k = 0; k < 13; k++) bad |= v[k] == NULL;
    if (!bad) ev = g_event_class->tp_alloc(g_event_class, 0);
    if (ev == NULL) {
        for (int k = 0; k < 13; k++) Py_XDECREF(v[k]);
        return NULL;
    }
    for (int k = 0; k < 13; k++) *(PyObject **)((char *)ev + g_event_offsets[k]) = v[k];
    return ev;
}

/* The walk of _ring.RingBuffer._scan over the C slots, for both readers here and the
 * trace encoder (_encode.c): each current slot is held (copied with new references) and
 * checked against its stamp again before `visit` sees it. */
int
ts_scan_slots(RingStorage *self, uint64_t *pp, Py_ssize_t count, Py_ssize_t *got,
              Py_ssize_t *abandoned, slot_visitor visit, void *ctx)
{
    uint64_t p = *pp;
    *got = *abandoned = 0;
    while (*got < count && self->slots != NULL) {
        Slot *s = &self->slots[p & self->mask];
        uint64_t st = __atomic_load_n(&s->stamp, __ATOMIC_ACQUIRE);
        if (st == 0) break;
        uint64_t q = (st - 1) / 2;
        if (q == p && !(st & 1)) {
            Slot copy;
            hold_slot(&copy, s);
            if (__atomic_load_n(&s->stamp, __ATOMIC_ACQUIRE) != st) { /* overwritten */
                drop_slot(&copy);
                continue;
            }
            int r = 0;
            if (copy.kind == K_EVENT && copy.d[0].o == g_abandoned) {
                ++*abandoned;
            }
            else {
                r = visit(ctx, &copy, p);
                if (r == 0 || r == 1) ++*got;
            }
            drop_slot(&copy);
            if (r < 0) return -1;
            if (r == 2) break;
            p++;
            *pp = p;
            if (r > 0) break;
        }
        else if (q > p) {
            /* position q is here, so every position up to q - size was overwritten */
            uint64_t skip = q - self->size + 1;
            p = (q + 1 > self->size && skip > p + 1) ? skip : p + 1;
            *pp = p;
        }
        else {
            break; /* claimed but not yet filled: read it next time, never skip it */
        }
    }
    return 0;
}

typedef struct {
    PyObject *out, *node, *pid;
    int64_t wall_offset;
    IntCache *ic;
    int as_events;
} ScanCtx;

static int
scan_visit(void *ctx, Slot *copy, uint64_t pos)
{
    ScanCtx *c = ctx;
    PyObject *rec = c->as_events ? build_event(copy, c->node, c->pid, c->wall_offset, c->ic)
                                 : materialize(copy, pos, c->ic);
    if (rec == NULL || PyList_Append(c->out, rec) < 0) {
        Py_XDECREF(rec);
        return -1;
    }
    Py_DECREF(rec);
    return 0;
}

/* _scan(p, count) -> (records, new_position, abandoned), as _ring.RingBuffer._scan;
 * with as_events, Event objects instead of records (_scan_events). */
static PyObject *
scan_impl(RingStorage *self, PyObject *const *args, Py_ssize_t nargs, int as_events)
{
    ScanCtx c = {.as_events = as_events};
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_scan(position, count)");
        return NULL;
    }
    if (as_events) {
        if (g_event_class == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_speedups.attach() was not called");
            return NULL;
        }
        PyObject *off = PyObject_GetAttr(g_clock_module, s_wall_offset);
        if (off == NULL) return NULL;
        c.wall_offset = PyLong_AsLongLong(off);
        Py_DECREF(off);
        if (c.wall_offset == -1 && PyErr_Occurred()) return NULL;
        c.node = PyObject_GetAttr((PyObject *)self, s_node);
        c.pid = c.node ? PyObject_GetAttr((PyObject *)self, s_pid) : NULL;
        if (c.pid == NULL) goto fail;
    }
    unsigned long long p = PyLong_AsUnsignedLongLong(args[0]);
    if (p == (unsigned long long)-1 && PyErr_Occurred()) goto fail;
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if (count == -1 && PyErr_Occurred()) goto fail;
    c.ic = PyMem_Calloc(1, sizeof(IntCache));
    if (c.ic == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    c.out = PyList_New(0);
    if (c.out == NULL) goto fail;
    Py_ssize_t abandoned, got;
    uint64_t pos = p;
    /* No collection while the batch is built: the GIL is held throughout (nothing here
     * runs Python code), so no other thread can notice, and each young object would
     * otherwise be traversed by every collection the batch's allocations trigger. */
    int gc_was_on = PyGC_Disable();
    int r = ts_scan_slots(self, &pos, count, &got, &abandoned, scan_visit, &c);
    if (gc_was_on) PyGC_Enable();
    if (r < 0) goto fail;
    Py_XDECREF(c.node);
    Py_XDECREF(c.pid);
    icache_clear(c.ic);
    PyMem_Free(c.ic);
    return Py_BuildValue("(NKn)", c.out, (unsigned long long)pos, abandoned);
fail:
    Py_XDECREF(c.out);
    Py_XDECREF(c.node);
    Py_XDECREF(c.pid);
    if (c.ic != NULL) {
        icache_clear(c.ic);
        PyMem_Free(c.ic);
    }
    return NULL;
}

static PyObject *
RingStorage_scan(RingStorage *self, PyObject *const *args, Py_ssize_t nargs)
{
    return scan_impl(self, args, nargs, 0);
}

static PyObject *
RingStorage_scan_events(RingStorage *self, PyObject *const *args, Py_ssize_t nargs)
{
    return scan_impl(self, args, nargs, 1);
}

static PyObject *
RingStorage_get_fast(RingStorage *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->fast);
}

static int
RingStorage_set_fast(RingStorage *self, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _fast");
        return -1;
    }
    int t = PyObject_IsTrue(v);
    if (t < 0) return -1;
    self->fast = (char)t;
    return 0;
}

static PyMethodDef RingStorage_methods[] = {
    {"write", (PyCFunction)RingStorage_write, METH_O,
     "Write one event; False when it was dropped (and counted). Never raises."},
    {"_put", (PyCFunction)RingStorage_put, METH_O, NULL},
    {"_store", (PyCFunction)(void (*)(void))RingStorage_store, METH_FASTCALL, NULL},
    {"_store_abandoned", (PyCFunction)RingStorage_store_abandoned, METH_O, NULL},
    {"_scan", (PyCFunction)(void (*)(void))RingStorage_scan, METH_FASTCALL, NULL},
    {"_scan_events", (PyCFunction)(void (*)(void))RingStorage_scan_events, METH_FASTCALL, NULL},
    {"_scan_encoded", (PyCFunction)(void (*)(void))ts_scan_encoded, METH_FASTCALL, NULL},
    {"_new_storage", (PyCFunction)RingStorage_new_storage, METH_O, NULL},
    {"_wipe_storage", (PyCFunction)RingStorage_wipe_storage, METH_NOARGS, NULL},
    {"_claimed", (PyCFunction)RingStorage_claimed, METH_NOARGS, NULL},
    {"_claim_next", (PyCFunction)RingStorage_claim_next, METH_NOARGS, NULL},
    {"_set_wake", (PyCFunction)(void (*)(void))RingStorage_set_wake, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef RingStorage_getset[] = {
    {"_fast", (getter)RingStorage_get_fast, (setter)RingStorage_set_fast, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RingStorage_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.RingStorage",
    .tp_basicsize = sizeof(RingStorage),
    .tp_dealloc = (destructor)RingStorage_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The slots and claim counter of a RingBuffer (C core).",
    .tp_traverse = (traverseproc)RingStorage_traverse,
    .tp_clear = (inquiry)RingStorage_clear,
    .tp_free = PyObject_GC_Del,
    .tp_methods = RingStorage_methods,
    .tp_getset = RingStorage_getset,
    .tp_new = PyType_GenericNew,
};

/* --------------------------------------------------------------------------------- */
/* ids                                                                                */

typedef struct { PyObject_HEAD } Ids;

static PyObject *
Ids_next(PyObject *Py_UNUSED(self))
{
    return PyLong_FromLongLong(new_id());
}

static PyTypeObject Ids_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.Ids",
    .tp_basicsize = sizeof(Ids),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The process's id counter: next() gives (sequence << 22) | pid.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = Ids_next,
    .tp_new = NULL,
};

static PyObject *g_ids = NULL;

static PyObject *
reset_ids(PyObject *Py_UNUSED(m), PyObject *arg)
{
    long long pid = PyLong_AsLongLong(arg);
    if (pid == -1 && PyErr_Occurred()) return NULL;
    g_pid_tag = pid & ((1LL << PID_BITS) - 1);
    __atomic_store_n(&g_seq, 0, __ATOMIC_RELEASE);
    return Py_NewRef(g_ids);
}

/* --------------------------------------------------------------------------------- */
/* the call stack's cell                                                              */
/*
 * The pure core stores the top frame itself in its ContextVar, so every push and pop is a
 * ContextVar.set: a new HAMT, a node copy and a Token, about 250 ns a call pair in C. Here
 * the ContextVar holds a Cell whose `top` is rewritten in place when nothing but this
 * context can see the cell, and replaced by a new Cell (one ContextVar.set) otherwise.
 *
 * When can another context see the cell? Only through a HAMT (the contexts' immutable
 * mappings) that holds it: the current context's (a copy_context() shares that HAMT
 * object), or one derived from it when another variable was set in a copy (a new HAMT
 * whose root holds the same cell, or shares with ours the subtree that holds it). So the
 * cell is rewritten in place only when the current context's HAMT is held by nothing but
 * the context (refcount 1), every node on the way down to the cell by nothing but its
 * parent, and the cell by nothing but its node and our caller. Any other holder (a copy,
 * a derived mapping, an iterator, user code that fetched the cell) makes us replace it.
 * The pure twin's semantics are unchanged: a copied context (an asyncio task) sees the
 * frames as they were when it was copied, and nothing it pushes is seen by anyone else.
 *
 * The context and the HAMT are read through mirrors of CPython's internal structs
 * (pycore_context.h, pycore_hamt.h and Python/hamt.c, identical in 3.11-3.13). At import,
 * check_mirror() proves on this interpreter that the mirrored field is the mapping that
 * ContextVar.set replaces, that the walk below finds every value set in it (small and
 * large mappings) and that a copy shares it; if anything differs, every push is a new
 * Cell.
 */

typedef struct {
    PyObject_HEAD
    PyObject *top;   /* None, _OFF or a frame tuple */
    PyObject *task;  /* the task id of the context that made the cell, once asked (or NULL) */
    PyObject *owner; /* a weak reference to that context: task is valid there only */
} Cell;

typedef struct { /* CPython's struct _pycontextobject (Include/internal/pycore_context.h) */
    PyObject_HEAD
    void *ctx_prev;
    PyObject *ctx_vars;
    PyObject *ctx_weakreflist;
    int ctx_entered;
} MirrorContext;

typedef struct { /* PyHamtObject (Include/internal/pycore_hamt.h) */
    PyObject_HEAD
    PyObject *h_root;
    PyObject *h_weakreflist;
    Py_ssize_t h_count;
} MirrorHamt;

typedef struct { /* PyHamtNode_Bitmap: key/value pairs; a NULL key's value is a subtree */
    PyObject_VAR_HEAD
    uint32_t b_bitmap;
    PyObject *b_array[1];
} MirrorBitmap;

typedef struct { /* PyHamtNode_Array (Python/hamt.c): 32 subtrees */
    PyObject_HEAD
    PyObject *a_array[32];
    Py_ssize_t a_count;
} MirrorArray;

static int g_inplace = 0;
static PyTypeObject *g_hamt_type, *g_bitmap_type, *g_array_type; /* set by check_mirror() */
static int32_t g_stack_hash;                                      /* the HAMT's hash of it */

/* hamt.c's hamt_hash(): the object's hash folded to 32 bits into *out; -1 on error. */
static int
hamt_hash(PyObject *key, int32_t *out)
{
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1) return -1;
#if SIZEOF_PY_HASH_T <= 4
    *out = (int32_t)h;
#else
    int32_t x = (int32_t)(h & 0xffffffffl) ^ (int32_t)(h >> 32);
    *out = x == -1 ? -2 : x;
#endif
    return 0;
}

/* Inline: without -mpopcnt, __builtin_popcount is a call into libgcc. */
static inline uint32_t
popcount32(uint32_t x)
{
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    return (((x + (x >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24;
}

/* The value of `key` in the HAMT `vars`, borrowed (NULL if absent or the walk meets a node
 * it does not know); *shared is set if some node on the way is held by more than its
 * parent (or the HAMT by more than one). hamt.c's hamt_node_find, keys compared by
 * identity (a ContextVar's equality). */
static PyObject *
hamt_find(PyObject *vars, PyObject *key, int32_t hash, int *shared)
{
    *shared = 0;
    if (vars == NULL || Py_TYPE(vars) != g_hamt_type) return NULL;
    *shared |= Py_REFCNT(vars) != 1;
    PyObject *node = ((MirrorHamt *)vars)->h_root;
    for (uint32_t shift = 0; shift < 32 && node != NULL; shift += 5) {
        uint32_t m = ((uint32_t)hash >> shift) & 0x1f;
        *shared |= Py_REFCNT(node) != 1;
        if (Py_TYPE(node) == g_array_type) {
            node = ((MirrorArray *)node)->a_array[m];
            continue;
        }
        if (Py_TYPE(node) != g_bitmap_type) return NULL; /* a hash collision node */
        MirrorBitmap *b = (MirrorBitmap *)node;
        uint32_t bit = (uint32_t)1 << m;
        if (!(b->b_bitmap & bit)) return NULL;
        uint32_t idx = popcount32(b->b_bitmap & (bit - 1));
        PyObject *k = b->b_array[2 * idx], *v = b->b_array[2 * idx + 1];
        if (k == NULL) {
            node = v;
            continue;
        }
        return k == key ? v : NULL;
    }
    return NULL;
}

static int
Cell_traverse(Cell *c, visitproc visit, void *arg)
{
    Py_VISIT(c->top);
    Py_VISIT(c->task);
    Py_VISIT(c->owner);
    return 0;
}

static int
Cell_clear(Cell *c)
{
    Py_CLEAR(c->top);
    Py_CLEAR(c->task);
    Py_CLEAR(c->owner);
    return 0;
}

static void
Cell_dealloc(Cell *c)
{
    PyObject_GC_UnTrack(c);
    Cell_clear(c);
    PyObject_GC_Del(c);
}

static PyTypeObject Cell_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.Cell",
    .tp_basicsize = sizeof(Cell),
    .tp_dealloc = (destructor)Cell_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The holder of a context's top call-stack frame (C core).",
    .tp_traverse = (traverseproc)Cell_traverse,
    .tp_clear = (inquiry)Cell_clear,
};

/* This context's top frame (new reference); *cellp gets the cell (new reference) or NULL. */
static PyObject *
get_top(PyObject **cellp)
{
    PyObject *v;
    *cellp = NULL;
    if (PyContextVar_Get(g_stack_var, NULL, &v) < 0) return NULL;
    if (Py_IS_TYPE(v, &Cell_Type)) {
        PyObject *top = ((Cell *)v)->top;
        *cellp = v;
        return Py_NewRef(top != NULL ? top : Py_None); /* NULL only once GC cleared it */
    }
    return v; /* the default, None: nothing pushed in this context yet */
}

static inline PyObject *
current_vars(PyThreadState *ts)
{
    PyObject *ctx = ts->context;
    return ctx == NULL ? NULL : ((MirrorContext *)ctx)->ctx_vars;
}

/* True if only this context can see the cell (which the caller holds one reference to,
 * from get_top()): it may be rewritten in place. */
static inline int
cell_owned(PyObject *cell, PyThreadState *ts)
{
    if (cell == NULL || !g_inplace || Py_REFCNT(cell) != 2) return 0;
    int shared;
    PyObject *found = hamt_find(current_vars(ts), g_stack_var, g_stack_hash, &shared);
    return found == cell && !shared;
}

/* Make `top` this context's top frame; `cell` is what get_top() gave (or NULL), `owned`
 * what cell_owned() said of it. `task` (borrowed, or NULL) is this context's task id,
 * kept by a new cell. */
static int
set_top(PyObject *cell, int owned, PyObject *top, PyObject *task, PyThreadState *ts)
{
    if (cell != NULL && owned) {
        Py_SETREF(((Cell *)cell)->top, Py_NewRef(top));
        return 0;
    }
    Cell *fresh = PyObject_GC_New(Cell, &Cell_Type);
    if (fresh == NULL) return -1;
    fresh->top = Py_NewRef(top);
    fresh->task = NULL;
    fresh->owner = NULL;
    PyObject_GC_Track(fresh);
    PyObject *token = PyContextVar_Set(g_stack_var, (PyObject *)fresh);
    if (token == NULL) {
        Py_DECREF(fresh);
        return -1;
    }
    Py_DECREF(token);
    if (g_inplace && ts->context != NULL) {
        /* a weak reference: a strong one would be a cycle through the context's mapping,
         * and a bare address could be a later context's */
        fresh->owner = PyWeakref_NewRef(ts->context, NULL);
        if (fresh->owner == NULL) PyErr_Clear(); /* then the task is asked every time */
        else fresh->task = Py_XNewRef(task);
    }
    Py_DECREF(fresh);
    return 0;
}

/* _pure._get / _pure._set for the C core */
static PyObject *
stack_get(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    PyObject *cell;
    PyObject *top = get_top(&cell);
    Py_XDECREF(cell);
    return top;
}

static PyObject *
stack_set(PyObject *Py_UNUSED(m), PyObject *top)
{
    PyObject *cell, *old = get_top(&cell);
    if (old == NULL) return NULL;
    Py_DECREF(old);
    PyThreadState *ts = PyThreadState_Get();
    int r = set_top(cell, cell_owned(cell, ts), top, NULL, ts);
    Py_XDECREF(cell);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* The mirrors' proof, on a context of its own: 1 if they hold, 0 if not, -1 on error. */
static int
prove_mirror(PyObject *ctx, PyObject **vars, PyObject **values, int n)
{
    MirrorContext *mc = (MirrorContext *)ctx;
    for (int k = 0; k < n; k++) {
        PyObject *before = mc->ctx_vars;
        PyObject *token = PyContextVar_Set(vars[k], values[k]);
        if (token == NULL) return -1;
        Py_DECREF(token);
        PyObject *after = mc->ctx_vars;
        /* the field is the mapping that a set replaces, and it holds what was set */
        if (after == before || after == NULL || strcmp(Py_TYPE(after)->tp_name, "hamt") != 0)
            return 0;
        g_hamt_type = Py_TYPE(after);
        PyObject *root = ((MirrorHamt *)after)->h_root;
        const char *name = root ? Py_TYPE(root)->tp_name : "";
        if (strcmp(name, "hamt_bitmap_node") == 0) g_bitmap_type = Py_TYPE(root);
        else if (strcmp(name, "hamt_array_node") == 0) g_array_type = Py_TYPE(root);
        else return 0;
        if (g_bitmap_type == NULL) return 0; /* the first mapping's root is a bitmap node */
        for (int j = 0; j <= k; j++) {
            int32_t h;
            int shared;
            PyObject *got;
            if (hamt_hash(vars[j], &h) < 0) return -1;
            if (PyContextVar_Get(vars[j], NULL, &got) < 0) return -1;
            Py_DECREF(got);
            /* found where ContextVar.get finds it; held once: by its node (values[] holds
             * the other reference) */
            if (hamt_find(after, vars[j], h, &shared) != values[j] || got != values[j] ||
                shared || Py_REFCNT(values[j]) != 2)
                return 0;
        }
    }
    if (g_array_type == NULL) return 0; /* n sets made the root an array node */
    /* a copy shares the mapping, and the walk sees it shared */
    PyObject *copy = PyContext_CopyCurrent();
    if (copy == NULL) return -1;
    int32_t h;
    int shared = 0, ok = 0;
    if (hamt_hash(vars[0], &h) == 0 && ((MirrorContext *)copy)->ctx_vars == mc->ctx_vars)
        ok = hamt_find(mc->ctx_vars, vars[0], h, &shared) == values[0] && shared;
    Py_DECREF(copy);
    return PyErr_Occurred() ? -1 : ok;
}

/* Is the mirror right on this interpreter? Sets g_inplace; -1 only on a real error. */
static int
check_mirror(void)
{
    enum { N = 80 }; /* enough variables for an array node at the root */
    PyObject *vars[N] = {NULL}, *values[N] = {NULL};
    int ok = -1;
    PyObject *ctx = PyContext_New();
    if (ctx == NULL) return -1;
    for (int k = 0; k < N; k++) {
        char name[40]; /* names of their own: the hashes then spread over the root's slots */
        snprintf(name, sizeof name, "tidescope_mirror_probe_%d", k);
        vars[k] = PyContextVar_New(name, NULL);
        values[k] = PyLong_FromLong(1000000 + k); /* not a cached small int */
        if (vars[k] == NULL || values[k] == NULL) goto done;
    }
    if (PyContext_Enter(ctx) < 0) goto done;
    ok = prove_mirror(ctx, vars, values, N);
    if (PyContext_Exit(ctx) < 0) ok = -1;
done:
    for (int k = 0; k < N; k++) {
        Py_XDECREF(vars[k]);
        Py_XDECREF(values[k]);
    }
    Py_DECREF(ctx);
    if (ok < 0) return -1;
#ifdef Py_GIL_DISABLED
    ok = 0; /* refcounts are not exact without the GIL */
#endif
    g_inplace = ok;
    return 0;
}

/* --------------------------------------------------------------------------------- */
/* the report path                                                                    */

/* Count a failure as _pure.count_error does; only Exception subclasses are swallowed. */
int
swallow_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return 1;
    if (!PyErr_GivenExceptionMatches(type, PyExc_Exception)) {
        PyErr_Restore(type, value, tb);
        return 0; /* KeyboardInterrupt, SystemExit: propagate, as the pure core does */
    }
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *r = value ? PyObject_CallOneArg(g_count_error, value) : NULL;
    if (r == NULL) PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return 1;
}

static inline int
keep_type(PyTypeObject *t)
{
    for (Py_ssize_t k = 0; k < g_nkeep; k++)
        if ((PyObject *)t == g_keep[k]) return 1;
    return 0;
}

/* An int within +-limit, for a limit given as a Python int (maybe far past 64 bits).
 * 1 yes, 0 no or not decidable here (the caller then takes the general path). */
typedef struct { unsigned long long lim; int big; } IntLimit;

static int
parse_limit(PyObject *o, IntLimit *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    out->big = overflow > 0;
    out->lim = overflow > 0 ? 0 : (v < 0 ? 0 : (unsigned long long)v);
    return 0;
}

static inline int
int_within(PyObject *a, const IntLimit *l)
{
    int64_t x;
    if (!small_long(a, &x)) {
        int overflow;
        long long y = PyLong_AsLongLongAndOverflow(a, &overflow);
        if (y == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (overflow || y == LLONG_MIN) return 0; /* past 64 bits: not decided here */
        x = y;
    }
    unsigned long long mag = x < 0 ? (unsigned long long)(-x) : (unsigned long long)x;
    return l->big || mag < l->lim;
}

static inline int
is_nested(PyTypeObject *t)
{
    return t == &PyTuple_Type || t == &PyList_Type || t == &PyDict_Type;
}

/* Redaction (see _redact.py): is a dict key a secret name? The answers live in
 * _redact.secret_names (name -> bool, filled by Python); a small table of the str objects
 * last answered, indexed by their hash, makes a name seen before one comparison. */
#define NAME_SLOTS 256
static PyObject *g_secret_names = NULL;     /* _redact.secret_names */
static PyTypeObject *g_redacted_type = NULL; /* events.Redacted */
static PyObject *g_name_seen[NAME_SLOTS];   /* strong references */
static char g_name_secret[NAME_SLOTS];

/* 1 secret, 0 not, -1 not answered yet (the caller takes the full snapshot, which asks
 * Python and fills the answer in). `key` is an exact str, already hashed (a dict key).
 * Runs no Python code: the lookup is in a dict of exact str keys. */
static int
is_secret_key(PyObject *key)
{
    Py_hash_t h = ((PyASCIIObject *)key)->hash;
    size_t i = (size_t)h & (NAME_SLOTS - 1);
    if (g_name_seen[i] == key) return g_name_secret[i];
    if (g_secret_names == NULL || h == -1) return -1;
    PyObject *v = PyDict_GetItemWithError(g_secret_names, key);
    if (v == NULL) {
        PyErr_Clear();
        return -1;
    }
    g_name_secret[i] = v == Py_True;
    Py_XSETREF(g_name_seen[i], Py_NewRef(key));
    return g_name_secret[i];
}

/* forget_names(): the pattern changed (_redact.configure) */
static PyObject *
forget_names(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    for (int k = 0; k < NAME_SLOTS; k++) Py_CLEAR(g_name_seen[k]);
    Py_RETURN_NONE;
}

/* _snapshot.flat_cost for one container: bytes charged, or -1 if the snapshot would cut
 * or change anything in it (depth: container levels it still opens, at least 1). */
static Py_ssize_t
container_cost(PyObject *v, Py_ssize_t strlen, const IntLimit *il, Py_ssize_t items,
               Py_ssize_t depth, int *nested)
{
    PyTypeObject *t = Py_TYPE(v);
    Py_ssize_t n = t == &PyDict_Type ? PyDict_GET_SIZE(v) : Py_SIZE(v);
    if (n > items) return -1;
    Py_ssize_t cost = SMALL, pos = 0;
    PyObject *key, *val;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *a;
        if (t == &PyTuple_Type) a = PyTuple_GET_ITEM(v, k);
        else if (t == &PyList_Type) {
            if (k >= PyList_GET_SIZE(v)) return -1;
            a = PyList_GET_ITEM(v, k);
        }
        else {
            if (!PyDict_Next(v, &pos, &key, &val)) return -1;
            if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) > strlen) return -1;
            if (is_secret_key(key) != 0 && Py_TYPE(val) != g_redacted_type) return -1;
            cost += PyUnicode_GET_LENGTH(key) + SMALL;
            a = val;
        }
        PyTypeObject *ta = Py_TYPE(a);
        if (ta == &PyUnicode_Type) {
            if (PyUnicode_GET_LENGTH(a) > strlen) return -1;
            cost += PyUnicode_GET_LENGTH(a) + SMALL;
        }
        else if (ta == &PyLong_Type) {
            if (!int_within(a, il)) return -1;
            cost += SMALL;
        }
        else if (keep_type(ta)) {
            cost += SMALL;
        }
        else if (is_nested(ta) && depth > 1) {
            if (Py_EnterRecursiveCall(" in tidescope's flat snapshot")) {
                PyErr_Clear();
                return -1;
            }
            Py_ssize_t c = container_cost(a, strlen, il, items, depth - 1, nested);
            Py_LeaveRecursiveCall();
            if (c < 0) return -1;
            cost += c;
            *nested = 1;
        }
        else {
            return -1;
        }
    }
    return cost;
}

static PyObject *copy_flat(PyObject *v, Py_ssize_t depth);

/* One item of a container being copied (borrowed): kept, or copied if it is a container. */
static inline PyObject *
copy_item(PyObject *a, Py_ssize_t depth)
{
    if (!is_nested(Py_TYPE(a))) return Py_NewRef(a);
    Py_INCREF(a); /* a finalizer run by an allocation below may drop it from its container */
    PyObject *c = copy_flat(a, depth - 1);
    Py_DECREF(a);
    return c;
}

/* _snapshot.flat_copy: lists and dicts copied, a tuple only if something in it is. `depth`
 * is the container levels v may open (as container_cost's). NULL with no error set when v
 * no longer fits what was measured: nested deeper than `depth` (made to contain itself,
 * say) or a list that shrank. Measuring ran no Python code, but the allocations here may
 * run a finalizer, and a caller in Python may be descheduled between the two steps, so
 * the copy checks the shape itself and never follows a value further than `depth`. */
static PyObject *
copy_flat(PyObject *v, Py_ssize_t depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (depth < 1) return NULL;
    if (Py_EnterRecursiveCall(" in tidescope's flat snapshot")) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *out = NULL;
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *k, *a;
        out = PyDict_New();
        while (out != NULL && PyDict_Next(v, &pos, &k, &a)) {
            Py_INCREF(k);
            PyObject *c = copy_item(a, depth);
            if (c == NULL || PyDict_SetItem(out, k, c) < 0) Py_CLEAR(out);
            Py_DECREF(k);
            Py_XDECREF(c);
        }
        Py_LeaveRecursiveCall();
        return out;
    }
    Py_ssize_t n = Py_SIZE(v);
    int nested = t != &PyTuple_Type;
    for (Py_ssize_t k = 0; k < n && !nested; k++)
        nested = is_nested(Py_TYPE(PyTuple_GET_ITEM(v, k)));
    if (!nested) out = Py_NewRef(v);
    else out = t == &PyTuple_Type ? PyTuple_New(n) : PyList_New(n);
    for (Py_ssize_t k = 0; nested && out != NULL && k < n; k++) {
        if (t == &PyList_Type && k >= PyList_GET_SIZE(v)) { /* it shrank: cut */
            Py_CLEAR(out);
            break;
        }
        PyObject *a = t == &PyTuple_Type ? PyTuple_GET_ITEM(v, k) : PyList_GET_ITEM(v, k);
        PyObject *c = copy_item(a, depth);
        if (c == NULL) Py_CLEAR(out);
        else if (t == &PyTuple_Type) PyTuple_SET_ITEM(out, k, c);
        else PyList_SET_ITEM(out, k, c);
    }
    Py_LeaveRecursiveCall();
    return out;
}

/* An int within the snapshot's int rule: -1 error, 0 no, 1 yes. */
static inline int
small_int(PyObject *a)
{
    int64_t x64;
    if (small_long(a, &x64)) {
        unsigned long long mag64 = x64 < 0 ? (unsigned long long)(-x64) : (unsigned long long)x64;
        return mag64 < g_int_limit;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(a, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow || x == LLONG_MIN) return 0;
    unsigned long long mag = x < 0 ? (unsigned long long)(-x) : (unsigned long long)x;
    return mag < g_int_limit;
}

/* A tuple, list or dict copied in one step (new reference), or NULL when the snapshot of
 * it would cut anything (no error set then): _pure._flat. */
static PyObject *
flat_value(PyObject *v)
{
    IntLimit il = {g_int_limit, 0};
    int nested = 0;
    if (g_depth < 1) return NULL; /* max_depth 0: every container is cut */
    Py_ssize_t cost = container_cost(v, g_max_string, &il, g_max_items, g_depth, &nested);
    if (cost < 0 || cost > g_budget) return NULL;
    if (!nested) { /* scalars only: the common case, without copy_flat's second look */
        PyTypeObject *t = Py_TYPE(v);
        if (t == &PyTuple_Type) return Py_NewRef(v);
        if (t == &PyList_Type) return PyList_GetSlice(v, 0, PyList_GET_SIZE(v));
        return PyDict_Copy(v);
    }
    return copy_flat(v, g_depth);
}

/* One value kept as it is by the snapshot? (_pure._snap_value's first test) -1 error. */
static inline int
small_value(PyObject *a)
{
    PyTypeObject *t = Py_TYPE(a);
    if (t == &PyUnicode_Type) return PyUnicode_GET_LENGTH(a) <= g_top_string;
    if (t == &PyLong_Type) return small_int(a);
    return keep_type(t);
}

static inline PyObject *
call_snap(PyObject *fn, PyObject *value)
{
    PyObject *a[2] = {value, g_limits};
    return PyObject_Vectorcall(fn, a, 2, NULL);
}

/* _pure._snap_args: new reference to the snapshot, *arity set (-1 for None). */
static PyObject *
snap_args(PyObject *args, Py_ssize_t *arity)
{
    PyTypeObject *t = Py_TYPE(args);
    if (is_nested(t)) {
        *arity = t == &PyDict_Type ? PyDict_GET_SIZE(args) : Py_SIZE(args);
        PyObject *flat = flat_value(args);
        if (flat != NULL || PyErr_Occurred()) return flat;
        return call_snap(g_snap, args);
    }
    if (args == Py_None) {
        *arity = 0;
        return Py_NewRef(Py_None);
    }
    *arity = -1;
    return call_snap(g_snap, args);
}

/* _pure._snap_value: a return value kept, copied flat, or snapshotted. New reference. */
static PyObject *
snap_value(PyObject *v)
{
    int r = small_value(v);
    if (r < 0) return NULL;
    if (r) return Py_NewRef(v);
    if (is_nested(Py_TYPE(v))) {
        PyObject *flat = flat_value(v);
        if (flat != NULL || PyErr_Occurred()) return flat;
    }
    return call_snap(g_snap, v);
}

/* _pure._ref_for: 1 when a report made from `key` (a module name or an ast_node_id)
 * records by reference, 0 deep, -1 error. One flag read unless a module pattern is set. */
static inline int
ref_for(PyObject *key)
{
    if (g_policy == NULL) return g_by_ref;
    if (PyUnicode_CheckExact(key)) {
        PyObject *got = PyDict_GetItemWithError(g_policy, key);
        if (got != NULL) return got == Py_True;
        if (PyErr_Occurred()) return -1;
    }
    PyObject *r = PyObject_CallOneArg(g_decide, key);
    if (r == NULL) return -1;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

static inline PyObject *
call_snap_ref(PyObject *value, int depth)
{
    PyObject *d = PyLong_FromLong(depth);
    if (d == NULL) return NULL;
    PyObject *a[3] = {value, g_limits, d};
    PyObject *r = PyObject_Vectorcall(g_snap_ref, a, 3, NULL);
    Py_DECREF(d);
    return r;
}

/* A builtin container of exact type, whose length reads no user code: its length, or -1. */
static inline Py_ssize_t
builtin_length(PyObject *a)
{
    PyTypeObject *t = Py_TYPE(a);
    if (t == &PyList_Type) return PyList_GET_SIZE(a);
    if (t == &PyTuple_Type) return PyTuple_GET_SIZE(a);
    if (t == &PyDict_Type) return PyDict_GET_SIZE(a);
    if (t == &PySet_Type || t == &PyFrozenSet_Type) return PySet_GET_SIZE(a);
    if (t == &PyByteArray_Type) return PyByteArray_GET_SIZE(a);
    return -1;
}

/* One argument under the "ref" policy, as Snapper(refs=True) records it at depth 1, and
 * what it charges (*cost); new reference, or NULL with no error set when only the full
 * path can say (a long str or int, bytes, a type not seen yet, a subclass's length). */
static PyObject *
ref_item(PyObject *a, Py_ssize_t *cost, const IntLimit *il)
{
    PyTypeObject *t = Py_TYPE(a);
    if (t == &PyUnicode_Type) {
        if (PyUnicode_GET_LENGTH(a) > g_max_string) return NULL;
        *cost += PyUnicode_GET_LENGTH(a) + SMALL;
        return Py_NewRef(a);
    }
    if (t == &PyLong_Type) {
        if (!int_within(a, il)) return NULL;
        *cost += SMALL;
        return Py_NewRef(a);
    }
    if (keep_type(t)) {
        *cost += SMALL;
        return Py_NewRef(a);
    }
    if (t == &PyBytes_Type) return NULL;
    PyObject *kind = PyDict_GetItemWithError(g_ref_kinds, (PyObject *)t);
    if (kind == NULL || !PyTuple_CheckExact(kind) || PyTuple_GET_SIZE(kind) != 2) return NULL;
    PyObject *name = PyTuple_GET_ITEM(kind, 0), *length = PyTuple_GET_ITEM(kind, 1);
    if (name == Py_None) { /* an enum member */
        *cost += SMALL;
        return Py_NewRef(a);
    }
    if (!PyUnicode_CheckExact(name)) return NULL;
    PyObject *n = Py_None;
    if (length != Py_None) {
        Py_ssize_t len = builtin_length(a);
        if (len < 0) return NULL;
        n = PyLong_FromSsize_t(len);
        if (n == NULL) return NULL;
    }
    else Py_INCREF(n);
    PyObject *oid = PyLong_FromVoidPtr(a);
    if (oid == NULL) {
        Py_DECREF(n);
        return NULL;
    }
    PyObject *args[3] = {name, oid, n};
    PyObject *ref = PyObject_Vectorcall(g_ref_class, args, 3, NULL);
    Py_DECREF(oid);
    Py_DECREF(n);
    *cost += PyUnicode_GET_LENGTH(name) + SMALL;
    return ref;
}

/* _pure._ref_args's result for a tuple or dict of arguments, built in C: each argument
 * kept (a scalar) or an ObjectRef. New reference, or NULL with no error set when the
 * full path must decide (something ref_item declines, a secret key, over the limits). */
static PyObject *
ref_flat(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    IntLimit il = {g_int_limit, 0};
    Py_ssize_t cost = SMALL;
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (n > g_max_items) return NULL;
        PyObject *out = PyTuple_New(n);
        for (Py_ssize_t k = 0; out != NULL && k < n; k++) {
            PyObject *c = ref_item(PyTuple_GET_ITEM(v, k), &cost, &il);
            if (c == NULL) Py_CLEAR(out);
            else PyTuple_SET_ITEM(out, k, c);
        }
        if (out != NULL && cost > g_budget) Py_CLEAR(out);
        return out;
    }
    if (t != &PyDict_Type || PyDict_GET_SIZE(v) > g_max_items) return NULL;
    PyObject *out = PyDict_New(), *key, *val;
    Py_ssize_t pos = 0;
    Py_INCREF(v); /* an allocation may run a finalizer that changes the arguments dict */
    while (out != NULL && PyDict_Next(v, &pos, &key, &val)) {
        if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) > g_max_string ||
            (is_secret_key(key) != 0 && Py_TYPE(val) != g_redacted_type)) {
            Py_CLEAR(out);
            break;
        }
        cost += PyUnicode_GET_LENGTH(key) + SMALL;
        Py_INCREF(key);
        Py_INCREF(val);
        PyObject *c = ref_item(val, &cost, &il);
        if (c == NULL || PyDict_SetItem(out, key, c) < 0) Py_CLEAR(out);
        Py_DECREF(key);
        Py_DECREF(val);
        Py_XDECREF(c);
    }
    if (out != NULL && (cost > g_budget || PyDict_GET_SIZE(out) != PyDict_GET_SIZE(v)))
        Py_CLEAR(out);
    Py_DECREF(v);
    return out;
}

/* _pure._ref_args: the arguments under the "ref" policy. New reference, *arity set. */
static PyObject *
ref_args(PyObject *args, Py_ssize_t *arity)
{
    PyTypeObject *t = Py_TYPE(args);
    if (is_nested(t)) {
        *arity = t == &PyDict_Type ? PyDict_GET_SIZE(args) : Py_SIZE(args);
        if (t != &PyList_Type) {
            PyObject *flat = ref_flat(args);
            if (flat != NULL || PyErr_Occurred()) return flat;
        }
        return call_snap_ref(args, 0);
    }
    if (args == Py_None) {
        *arity = 0;
        return Py_NewRef(Py_None);
    }
    *arity = -1;
    return call_snap_ref(args, 1);
}

/* _pure._ref_value: a return value under the "ref" policy. New reference. */
static PyObject *
ref_value(PyObject *v)
{
    int r = small_value(v);
    if (r < 0) return NULL;
    if (r) return Py_NewRef(v);
    return call_snap_ref(v, 1);
}

/* A frame of the call stack: (call_id, parent_frame, correlation_id, start_ns). */
static inline int
is_frame(PyObject *f)
{
    return PyTuple_CheckExact(f) && PyTuple_GET_SIZE(f) == 4;
}

static int
bad_stack(void)
{
    PyErr_SetString(PyExc_TypeError, "the call stack holds something that is not a frame");
    return -1;
}

static PyObject *task_id(void);

/* The task id of this context (new reference): the owned cell's, asked once per cell.
 * A context belongs to one thread at a time and, in asyncio, to one task, so a cell that
 * only this context can see, made in this context, answers for every later report in it
 * (a cell made elsewhere may come to be seen by this context alone: it asks). */
static PyObject *
context_task(PyObject *cell, int owned, PyThreadState *ts)
{
    Cell *c = (Cell *)cell;
    if (owned && c->owner != NULL &&
        ((PyWeakReference *)c->owner)->wr_object == (PyObject *)ts->context) {
        if (c->task == NULL) {
            c->task = task_id();
            if (c->task == NULL) return NULL;
        }
        return Py_NewRef(c->task);
    }
    return task_id();
}

/* _pure's task id: None outside a running loop. New reference. */
static PyObject *
task_id(void)
{
    PyObject *loop = PyObject_CallNoArgs(g_get_running_loop);
    if (loop == NULL) return NULL;
    if (loop == Py_None) return loop;
    PyObject *r = PyObject_CallOneArg(g_loop_task_id, loop);
    Py_DECREF(loop);
    return r;
}

static inline PyObject *
ast_value(PyObject *ast)
{
    if (ast == Py_None || PyUnicode_CheckExact(ast)) return Py_NewRef(ast);
    return call_snap(g_snap, ast);
}

/* keyword parsing for the two report functions */
static int
kw_match(PyObject *name, PyObject *want)
{
    return name == want || PyUnicode_Compare(name, want) == 0;
}

/* Fill the common fields and publish. All references are borrowed; every allocation the
 * event needs was done before the call. Returns 1 stored, 0 lapped. */
static inline void
fill_common(Slot *s, int64_t eid, int64_t ts, uint64_t thread, PyObject *task, PyObject *corr,
            PyObject *parent, PyObject *call, PyObject *ast, PyObject *known, int64_t known_raw)
{
    s->eid.i = eid;
    s->ts.i = ts;
    s->thread.i = (int64_t)thread;
    s->raw = R_EID | R_TS | R_THREAD;
    put_val(s, &s->task, task, R_TASK);
    put_val(s, &s->parent, parent, R_PARENT);
    if (known != NULL && corr == known) { /* an id whose value we have: no conversion */
        s->corr.i = known_raw;
        s->raw |= R_CORR;
    }
    else {
        put_val(s, &s->corr, corr, R_CORR);
    }
    if (known != NULL && call == known) {
        s->call.i = known_raw;
        s->raw |= R_CALL;
    }
    else {
        put_val(s, &s->call, call, R_CALL);
    }
    s->ast = ast == Py_None ? NULL : Py_NewRef(ast);
}

/* Write through _put_slow (drop_newest, block, destroyed, retired measurement buffers). */
static PyObject *
put_slow(PyObject *buf, int64_t eid, int64_t ts, uint64_t thread, PyObject *task,
         PyObject *corr, PyObject *parent, PyObject *call, PyObject *ast, PyObject *etype,
         PyObject *d0, PyObject *d1, PyObject *d2, PyObject *d3)
{
    PyObject *data = PyTuple_Pack(4, d0, d1, d2, d3);
    if (data == NULL) return NULL;
    PyObject *payload = Py_BuildValue("(LLKOOOOOON)", (long long)eid, (long long)ts,
                                      (unsigned long long)thread, task, corr, parent, call,
                                      ast, etype, data);
    if (payload == NULL) return NULL;
    PyObject *r = PyObject_CallMethodOneArg(buf, s_put_slow, payload);
    Py_DECREF(payload);
    return r;
}

static PyObject *
report_function_entry(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    PyObject *ast = Py_None, *call_id = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "report_function_entry() takes 3 positional arguments but %zd were given",
                     nargs);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (kw_match(name, s_ast_node_id)) ast = args[nargs + k];
        else if (kw_match(name, s_call_id)) call_id = args[nargs + k];
        else {
            PyErr_Format(PyExc_TypeError,
                         "report_function_entry() got an unexpected keyword argument '%U'",
                         name);
            return NULL;
        }
    }
    if (!g_enabled) Py_RETURN_NONE;
    PyObject *buf = g_buffer, *f = NULL, *cell = NULL, *snap = NULL, *cid = NULL, *ts_obj = NULL;
    PyObject *corr = NULL, *astv = NULL, *task = NULL, *frame = NULL, *arity_obj = NULL;
    PyObject *result = NULL;
    if (buf == NULL) Py_RETURN_NONE;
    Py_INCREF(buf);
    PyThreadState *tstate = PyThreadState_Get(); /* once: a TLS lookup on 3.12+ */
    f = get_top(&cell);
    if (f == NULL) goto error;
    if (f == g_off) goto off;
    if (f != Py_None && !is_frame(f)) {
        bad_stack();
        goto error;
    }
    Py_ssize_t arity;
    int by_ref = ref_for(args[0]);
    if (by_ref < 0) goto error;
    snap = by_ref ? ref_args(args[2], &arity) : snap_args(args[2], &arity);
    if (snap == NULL) goto error;
    int64_t eid;
    if (call_id == Py_None) {
        eid = new_id();
        cid = PyLong_FromLongLong(eid);
        if (cid == NULL) goto error;
    }
    else {
        cid = Py_NewRef(call_id);
    }
    int64_t ts = now_ns();
    PyObject *parent;
    if (f == Py_None) {
        parent = Py_None;
        corr = Py_NewRef(cid);
    }
    else {
        parent = PyTuple_GET_ITEM(f, 0);
        PyObject *c = PyTuple_GET_ITEM(f, 2);
        corr = Py_NewRef(c != Py_None ? c : cid);
    }
    astv = ast_value(ast);
    if (astv == NULL) goto error;
    int owned = cell_owned(cell, tstate);
    task = context_task(cell, owned, tstate);
    if (task == NULL) goto error;
    uint64_t thread = PyThread_get_thread_ident();
    if (call_id != Py_None) eid = new_id();
    arity_obj = arity < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(arity);
    if (arity_obj == NULL) goto error;
    ts_obj = PyLong_FromLongLong(ts);
    if (ts_obj == NULL) goto error;
    frame = PyTuple_Pack(4, cid, f, corr, ts_obj);
    /* owned is asked again: the allocations since may have run a finalizer that copied
     * this context */
    if (frame == NULL || set_top(cell, cell_owned(cell, tstate), frame, task, tstate) < 0)
        goto error;
    RingStorage *rb = (RingStorage *)buf;
    if (rb->fast && rb->slots != NULL) {
        /* Everything that can fail is done: claim, then fill the slot. */
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            fill_common(s, eid, ts, thread, task, corr, parent, cid, astv,
                        call_id == Py_None ? cid : NULL, eid);
            s->kind = K_ENTRY;
            s->d[0].o = Py_NewRef(args[0]);
            s->d[1].o = Py_NewRef(args[1]);
            s->d[2].o = Py_NewRef(arity_obj);
            s->d[3].o = Py_NewRef(snap);
            publish(s, pos);
            release(&g);
        }
        if (pos == rb->wake_at) high_water(rb, pos);
    }
    else {
        PyObject *r = put_slow(buf, eid, ts, thread, task, corr, parent, cid, astv,
                               g_entry_type, args[0], args[1], arity_obj, snap);
        if (r == NULL) goto error;
        Py_DECREF(r);
    }
    result = Py_NewRef(cid);
    goto done;
error:
    if (!swallow_error()) goto done; /* result stays NULL: BaseException propagates */
off:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(f);
    Py_XDECREF(cell);
    Py_XDECREF(snap);
    Py_XDECREF(cid);
    Py_XDECREF(ts_obj);
    Py_XDECREF(corr);
    Py_XDECREF(astv);
    Py_XDECREF(task);
    Py_XDECREF(frame);
    Py_XDECREF(arity_obj);
    Py_DECREF(buf);
    return result;
}

/* The frame of call_id in stack f, borrowed (NULL if absent; -1 through *err on error). */
static PyObject *
unwind(PyObject *f, PyObject *call_id, int *err)
{
    while (f != Py_None && f != g_off) {
        if (!is_frame(f)) {
            *err = bad_stack();
            return NULL;
        }
        PyObject *c = PyTuple_GET_ITEM(f, 0);
        int eq = c == call_id ? 1 : PyObject_RichCompareBool(c, call_id, Py_EQ);
        if (eq < 0) { *err = 1; return NULL; }
        if (eq) return f;
        f = PyTuple_GET_ITEM(f, 1);
    }
    return NULL;
}

static PyObject *
report_function_exit(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    PyObject *duration = Py_None, *reason = s_normal, *ast = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "report_function_exit() takes 2 or 3 positional arguments but %zd were "
                     "given", nargs);
        return NULL;
    }
    if (nargs == 3) duration = args[2];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (kw_match(name, s_exit_reason)) reason = args[nargs + k];
        else if (kw_match(name, s_ast_node_id)) ast = args[nargs + k];
        else if (nargs == 2 && kw_match(name, s_duration_ns)) duration = args[nargs + k];
        else {
            PyErr_Format(PyExc_TypeError,
                         "report_function_exit() got an unexpected keyword argument '%U'", name);
            return NULL;
        }
    }
    PyObject *call_id = args[0], *rv = args[1];
    if (call_id == Py_None) Py_RETURN_FALSE;
    PyObject *f = NULL, *res = NULL, *exc = NULL, *corr = NULL, *astv = NULL, *task = NULL;
    PyObject *dur_obj = NULL, *result = NULL, *buf = NULL, *cell = NULL;
    PyThreadState *tstate = PyThreadState_Get(); /* once: a TLS lookup on 3.12+ */
    f = get_top(&cell);
    if (f == NULL) goto error;
    PyObject *frame = NULL;
    if (f != Py_None && f != g_off && is_frame(f) && PyTuple_GET_ITEM(f, 0) == call_id) {
        frame = f;
    }
    else {
        int err = 0;
        frame = unwind(f, call_id, &err);
        if (err) goto error;
    }
    /* pops, even while capture is off: the stack stays balanced */
    int owned = cell_owned(cell, tstate); /* a cell replaced below is not owned after either */
    if (frame != NULL && set_top(cell, owned, PyTuple_GET_ITEM(frame, 1), NULL, tstate) < 0)
        goto error;
    if (!g_enabled || g_buffer == NULL || f == g_off) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    buf = Py_NewRef(g_buffer);
    int64_t ts = now_ns();
    int normal = reason == s_normal;
    if (!normal) {
        normal = PyObject_RichCompareBool(reason, s_normal, Py_EQ);
        if (normal < 0) goto error;
    }
    if (normal) {
        int by_ref = ref_for(ast);
        if (by_ref < 0) goto error;
        res = by_ref ? ref_value(rv) : snap_value(rv);
        if (res == NULL) goto error;
        exc = Py_NewRef(Py_None);
    }
    else {
        res = Py_NewRef(Py_None);
        exc = call_snap(g_exc_snap, rv);
        if (exc == NULL) goto error;
    }
    PyObject *parent;
    int raw_duration = 0;
    int64_t dur = 0;
    if (frame != NULL) {
        PyObject *p = PyTuple_GET_ITEM(frame, 1);
        if (p != Py_None && !is_frame(p)) {
            bad_stack();
            goto error;
        }
        parent = p != Py_None ? PyTuple_GET_ITEM(p, 0) : Py_None;
        corr = Py_NewRef(PyTuple_GET_ITEM(frame, 2));
        if (duration == Py_None) {
            int64_t start = 0;
            int overflow = 1;
            PyObject *st = PyTuple_GET_ITEM(frame, 3);
            if (PyLong_CheckExact(st) && !small_long(st, &start))
                start = PyLong_AsLongLongAndOverflow(st, &overflow); /* cannot fail */
            else if (PyLong_CheckExact(st))
                overflow = 0;
            if (!overflow && !__builtin_sub_overflow(ts, start, &dur)) {
                raw_duration = 1;
            }
            else { /* not an int64 start (a restored frame): Python's exact difference */
                PyObject *now = PyLong_FromLongLong(ts);
                dur_obj = now ? PyNumber_Subtract(now, st) : NULL;
                Py_XDECREF(now);
                if (dur_obj == NULL) goto error;
                duration = dur_obj;
            }
        }
    }
    else {
        parent = Py_None;
        if (f != Py_None && !is_frame(f)) {
            bad_stack();
            goto error;
        }
        corr = Py_NewRef(f == Py_None ? Py_None : PyTuple_GET_ITEM(f, 2));
    }
    astv = ast_value(ast);
    if (astv == NULL) goto error;
    task = context_task(cell, owned, tstate);
    if (task == NULL) goto error;
    uint64_t thread = PyThread_get_thread_ident();
    int64_t eid = new_id();
    RingStorage *rb = (RingStorage *)buf;
    if (rb->fast && rb->slots != NULL) {
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            fill_common(s, eid, ts, thread, task, corr, parent, call_id, astv, NULL, 0);
            s->kind = K_EXIT;
            s->d[0].o = Py_NewRef(res);
            s->d[1].o = Py_NewRef(exc);
            if (raw_duration) {
                s->d[2].i = dur;
                s->draw = D_RAW2;
            }
            else {
                s->d[2].o = Py_NewRef(duration);
            }
            s->d[3].o = Py_NewRef(reason);
            publish(s, pos);
            release(&g);
        }
        if (pos == rb->wake_at) high_water(rb, pos);
        result = Py_NewRef(Py_True);
    }
    else {
        if (dur_obj == NULL) {
            dur_obj = raw_duration ? PyLong_FromLongLong(dur) : Py_NewRef(duration);
            if (dur_obj == NULL) goto error;
        }
        result = put_slow(buf, eid, ts, thread, task, corr, parent, call_id, astv, g_exit_type,
                          res, exc, dur_obj, reason);
        if (result == NULL) goto error;
    }
    goto done;
error:
    if (swallow_error()) result = Py_NewRef(Py_False);
done:
    Py_XDECREF(f);
    Py_XDECREF(cell);
    Py_XDECREF(res);
    Py_XDECREF(exc);
    Py_XDECREF(corr);
    Py_XDECREF(astv);
    Py_XDECREF(task);
    Py_XDECREF(dur_obj);
    Py_XDECREF(buf);
    return result;
}



/* _pure.write_event(buffer, event_type, data, *, call_id=None, parent_id=None,
 * correlation_id=None, ast_node_id=None) -> bool: stamp one event now and write it. */
static PyObject *
write_event(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static PyObject *s_parent_id = NULL, *s_correlation_id = NULL;
    if (s_parent_id == NULL) {
        s_parent_id = PyUnicode_InternFromString("parent_id");
        s_correlation_id = PyUnicode_InternFromString("correlation_id");
        if (s_parent_id == NULL || s_correlation_id == NULL) return NULL;
    }
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "write_event() takes 3 positional arguments but %zd were given", nargs);
        return NULL;
    }
    PyObject *call = Py_None, *parent = Py_None, *corr = Py_None, *ast = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        PyObject *v = args[nargs + k];
        if (kw_match(name, s_call_id)) call = v;
        else if (kw_match(name, s_parent_id)) parent = v;
        else if (kw_match(name, s_correlation_id)) corr = v;
        else if (kw_match(name, s_ast_node_id)) ast = v;
        else {
            PyErr_Format(PyExc_TypeError,
                         "write_event() got an unexpected keyword argument '%U'", name);
            return NULL;
        }
    }
    PyObject *buf = args[0], *etype = args[1], *data = args[2];
    int64_t eid = new_id();
    int64_t ts = now_ns();
    uint64_t thread = PyThread_get_thread_ident();
    PyObject *cell, *top = get_top(&cell);
    if (top == NULL) return NULL;
    Py_DECREF(top);
    PyThreadState *tstate = PyThreadState_Get();
    PyObject *task = context_task(cell, cell_owned(cell, tstate), tstate);
    Py_XDECREF(cell);
    if (task == NULL) return NULL;
    PyObject *result;
    RingStorage *rb = (RingStorage *)buf;
    if (PyObject_TypeCheck(buf, &RingStorage_Type) && rb->fast && rb->slots != NULL) {
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            fill_common(s, eid, ts, thread, task, corr, parent, call, ast, NULL, 0);
            s->kind = K_RECORD;
            s->d[0].o = Py_NewRef(etype);
            s->d[1].o = Py_NewRef(data);
            s->d[2].o = s->d[3].o = NULL;
            publish(s, pos);
            release(&g);
        }
        if (pos == rb->wake_at) high_water(rb, pos);
        result = Py_NewRef(Py_True);
    }
    else {
        static PyObject *s_put = NULL;
        if (s_put == NULL && (s_put = PyUnicode_InternFromString("_put")) == NULL) {
            Py_DECREF(task);
            return NULL;
        }
        PyObject *payload = Py_BuildValue("(LLKOOOOOOO)", (long long)eid, (long long)ts,
                                          (unsigned long long)thread, task, corr, parent, call,
                                          ast, etype, data);
        result = payload ? PyObject_CallMethodOneArg(buf, s_put, payload) : NULL;
        Py_XDECREF(payload);
    }
    Py_DECREF(task);
    return result;
}

/* --------------------------------------------------------------------------------- */
/* flat snapshots: _snapshot.flat_cost and _snapshot.flat_payload                     */

/* strlen, int_limit, items and depth from Python ints */
static int
flat_args(PyObject *strlen_o, PyObject *limit_o, PyObject *items_o, PyObject *depth_o,
          Py_ssize_t *strlen, IntLimit *il, Py_ssize_t *items, Py_ssize_t *depth)
{
    *strlen = PyLong_AsSsize_t(strlen_o);
    if (*strlen == -1 && PyErr_Occurred()) return -1;
    if (parse_limit(limit_o, il) < 0) return -1;
    *items = PyLong_AsSsize_t(items_o);
    if (*items == -1 && PyErr_Occurred()) return -1;
    *depth = PyLong_AsSsize_t(depth_o);
    if (*depth == -1 && PyErr_Occurred()) return -1;
    return 0;
}

/* flat_cost(v, t, strlen, int_limit, items, depth) -> int */
static PyObject *
flat_cost(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t strlen, items, depth;
    IntLimit il;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "flat_cost takes 6 arguments");
        return NULL;
    }
    if (flat_args(args[2], args[3], args[4], args[5], &strlen, &il, &items, &depth) < 0)
        return NULL;
    PyObject *t = args[1];
    if (!PyType_Check(t) || !is_nested((PyTypeObject *)t) || (PyObject *)Py_TYPE(args[0]) != t ||
        depth < 1)
        return PyLong_FromLong(-1);
    int nested = 0;
    return PyLong_FromSsize_t(container_cost(args[0], strlen, &il, items, depth, &nested));
}

/* flat_copy(v, depth) -> copy | None */
static PyObject *
flat_copy(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "flat_copy takes 2 arguments");
        return NULL;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(args[1]);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    if (!is_nested(Py_TYPE(args[0]))) return Py_NewRef(args[0]);
    PyObject *out = copy_flat(args[0], depth);
    if (out == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return out;
}

/* flat_payload(data, strlen, int_limit, items, budget, depth) -> (dict, cost) | None */
static PyObject *
flat_payload(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t strlen, items, depth;
    IntLimit il;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "flat_payload takes 6 arguments");
        return NULL;
    }
    if (flat_args(args[1], args[2], args[3], args[5], &strlen, &il, &items, &depth) < 0)
        return NULL;
    Py_ssize_t budget = PyLong_AsSsize_t(args[4]);
    if (budget == -1 && PyErr_Occurred()) return NULL;
    PyObject *data = args[0];
    if (!PyDict_CheckExact(data) || PyDict_GET_SIZE(data) > items) Py_RETURN_NONE;
    Py_ssize_t pos = 0, cost = 0;
    PyObject *k, *v;
    while (PyDict_Next(data, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) Py_RETURN_NONE;
        cost += PyUnicode_GET_LENGTH(k) + SMALL;
        PyTypeObject *t = Py_TYPE(v);
        if (t == &PyUnicode_Type) {
            if (PyUnicode_GET_LENGTH(v) > strlen) Py_RETURN_NONE;
            cost += PyUnicode_GET_LENGTH(v) + SMALL;
        }
        else if (t == &PyLong_Type) {
            if (!int_within(v, &il)) Py_RETURN_NONE;
            cost += SMALL;
        }
        else if (keep_type(t)) {
            cost += SMALL;
        }
        else if (is_nested(t) && depth >= 1) {
            int nested = 0;
            Py_ssize_t c = container_cost(v, strlen, &il, items, depth, &nested);
            if (c < 0) Py_RETURN_NONE;
            cost += c;
        }
        else {
            Py_RETURN_NONE;
        }
    }
    if (cost > budget) Py_RETURN_NONE;
    /* nothing is cut: copy (the top level is not a nesting level: one more to open) */
    PyObject *out = copy_flat(data, depth < PY_SSIZE_T_MAX ? depth + 1 : depth);
    if (out == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(Nn)", out, cost);
}

/* --------------------------------------------------------------------------------- */
/* wiring                                                                             */

/* attach(namespace): the objects of _pure the C path calls or compares with. */
static PyObject *
attach(PyObject *Py_UNUSED(m), PyObject *ns)
{
    static const char *names[] = {"stack", "off", "count_error", "snap", "exc_snap",
                                  "loop_task_id", "get_running_loop", "entry_type",
                                  "exit_type", "snap_ref", "ref_kinds", "ref_class", NULL};
    PyObject **slots[] = {&g_stack_var, &g_off, &g_count_error, &g_snap, &g_exc_snap,
                          &g_loop_task_id, &g_get_running_loop, &g_entry_type, &g_exit_type,
                          &g_snap_ref, &g_ref_kinds, &g_ref_class};
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "attach() takes a dict");
        return NULL;
    }
    for (int k = 0; names[k]; k++) {
        PyObject *v = PyDict_GetItemString(ns, names[k]);
        if (v == NULL) {
            PyErr_Format(PyExc_KeyError, "attach(): missing %s", names[k]);
            return NULL;
        }
        Py_XSETREF(*slots[k], Py_NewRef(v));
    }
    if (hamt_hash(g_stack_var, &g_stack_hash) < 0) return NULL;
    PyObject *ev = PyDict_GetItemString(ns, "event_class");
    PyObject *clock = PyDict_GetItemString(ns, "clock");
    if (ev == NULL || !PyType_Check(ev) || clock == NULL) {
        PyErr_SetString(PyExc_KeyError, "attach(): missing event_class or clock");
        return NULL;
    }
    static const char *fields[13] = {"event_id", "timestamp", "wall_time", "node", "pid",
                                     "thread_id", "task_id", "correlation_id", "parent_id",
                                     "call_id", "ast_node_id", "event_type", "data"};
    for (int k = 0; k < 13; k++) {
        PyObject *descr = PyObject_GetAttrString(ev, fields[k]);
        if (descr == NULL) return NULL;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) g_event_offsets[k] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "Event.%s is not a slot", fields[k]);
            return NULL;
        }
    }
    Py_XSETREF(g_event_class, (PyTypeObject *)Py_NewRef(ev));
    Py_XSETREF(g_clock_module, Py_NewRef(clock));
    PyObject *secrets = PyDict_GetItemString(ns, "secret_names");
    PyObject *redacted = PyDict_GetItemString(ns, "redacted_type");
    if (secrets == NULL || !PyDict_CheckExact(secrets) || redacted == NULL ||
        !PyType_Check(redacted)) {
        PyErr_SetString(PyExc_KeyError, "attach(): missing secret_names or redacted_type");
        return NULL;
    }
    Py_XSETREF(g_secret_names, Py_NewRef(secrets));
    Py_XSETREF(g_redacted_type, (PyTypeObject *)Py_NewRef(redacted));
    forget_names(NULL, NULL);
    PyObject *keep = PyDict_GetItemString(ns, "keep_types");
    PyObject *seq = keep ? PySequence_Tuple(keep) : NULL;
    if (seq == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "attach(): missing keep_types");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject **arr = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (arr == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) arr[k] = Py_NewRef(PyTuple_GET_ITEM(seq, k));
    Py_DECREF(seq);
    PyObject **old = g_keep;
    Py_ssize_t oldn = g_nkeep;
    g_keep = arr;
    g_nkeep = n;
    for (Py_ssize_t k = 0; k < oldn; k++) Py_DECREF(old[k]);
    PyMem_Free(old);
    Py_RETURN_NONE;
}

/* sync(enabled, buffer, limits, fast): the state the report path reads; `fast` is
 * _pure._fast_limits(limits): (items, str, top_str, int_limit, budget, depth). */
static PyObject *
sync_state(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyTuple_Check(args[3]) || PyTuple_GET_SIZE(args[3]) != 6) {
        PyErr_SetString(PyExc_TypeError, "sync(enabled, buffer, limits, fast_limits)");
        return NULL;
    }
    PyObject *buffer = args[1], *limits = args[2], *fast = args[3];
    if (buffer != Py_None && !PyObject_TypeCheck(buffer, &RingStorage_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a RingBuffer of the C core, got %s",
                     Py_TYPE(buffer)->tp_name);
        return NULL;
    }
    Py_ssize_t v[5];
    for (int k = 0; k < 5; k++) {
        if (k == 3) continue;
        v[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(fast, k == 4 ? 4 : k));
        if (v[k] == -1 && PyErr_Occurred()) return NULL;
    }
    unsigned long long int_limit = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(fast, 3));
    if (int_limit == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t depth = PyLong_AsSsize_t(PyTuple_GET_ITEM(fast, 5));
    if (depth == -1 && PyErr_Occurred()) return NULL;
    int on = PyObject_IsTrue(args[0]);
    if (on < 0) return NULL;
    g_max_items = v[0];
    g_max_string = v[1];
    g_top_string = v[2];
    g_int_limit = int_limit;
    g_budget = v[4];
    g_depth = depth;
    Py_XSETREF(g_limits, Py_NewRef(limits));
    Py_XSETREF(g_buffer, buffer == Py_None ? NULL : Py_NewRef(buffer));
    g_enabled = on;
    Py_RETURN_NONE;
}

/* set_policy(by_ref, policy, decide): _pure._apply_policy's state. */
static PyObject *
set_policy(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || (args[1] != Py_None && !PyDict_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "set_policy(by_ref, policy dict or None, decide)");
        return NULL;
    }
    int on = PyObject_IsTrue(args[0]);
    if (on < 0) return NULL;
    g_by_ref = on;
    Py_XSETREF(g_policy, args[1] == Py_None ? NULL : Py_NewRef(args[1]));
    Py_XSETREF(g_decide, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_policy", (PyCFunction)(void (*)(void))set_policy, METH_FASTCALL, NULL},
    {"report_function_entry", (PyCFunction)(void (*)(void))report_function_entry,
     METH_FASTCALL | METH_KEYWORDS,
     "report_function_entry(module, function, args, *, ast_node_id=None, call_id=None)\n--\n\n"
     "Record a call's entry; returns its call id (pass it to the exit), or None if off."},
    {"report_function_exit", (PyCFunction)(void (*)(void))report_function_exit,
     METH_FASTCALL | METH_KEYWORDS,
     "report_function_exit(call_id, return_value, duration_ns=None, *, exit_reason='normal', "
     "ast_node_id=None)\n--\n\n"
     "Record a call's exit and pop it from the call stack; False if nothing was recorded."},
    {"attach", (PyCFunction)attach, METH_O, NULL},
    {"write_event", (PyCFunction)(void (*)(void))write_event, METH_FASTCALL | METH_KEYWORDS,
     "write_event(buffer, event_type, data, *, call_id=None, parent_id=None, "
     "correlation_id=None, ast_node_id=None)\n--\n\n"
     "Stamp one event now (id, clocks, thread, task) and write it; False if dropped."},
    {"flat_cost", (PyCFunction)(void (*)(void))flat_cost, METH_FASTCALL,
     "_snapshot.flat_cost's twin."},
    {"flat_payload", (PyCFunction)(void (*)(void))flat_payload, METH_FASTCALL,
     "_snapshot.flat_payload's twin."},
    {"flat_copy", (PyCFunction)(void (*)(void))flat_copy, METH_FASTCALL,
     "_snapshot.flat_copy's twin."},
    {"stack_get", (PyCFunction)stack_get, METH_NOARGS,
     "This context's top call-stack frame (None, _OFF or a frame)."},
    {"stack_set", (PyCFunction)stack_set, METH_O, "Make a frame this context's top."},
    {"sync", (PyCFunction)(void (*)(void))sync_state, METH_FASTCALL, NULL},
    {"forget_names", (PyCFunction)forget_names, METH_NOARGS,
     "Forget the secret names answered so far (the redaction pattern changed)."},
    {"encode_events_chunk", (PyCFunction)(void (*)(void))ts_encode_events_chunk,
     METH_FASTCALL | METH_KEYWORDS, "_tsformat.encode_events_chunk's twin (_encode.c)."},
    {"frame_events_chunk", (PyCFunction)(void (*)(void))ts_frame_events_chunk,
     METH_FASTCALL | METH_KEYWORDS, "An EVENTS chunk of RingBuffer.drain_encoded()'s records."},
    {"crc32", (PyCFunction)(void (*)(void))ts_crc32, METH_FASTCALL,
     "crc32(data, value=0): zlib.crc32's twin."},
    {"reset_ids", (PyCFunction)reset_ids, METH_O,
     "Restart the id counter for this pid; returns the counter (an iterator)."},
    TS_DEEP_METHODS
    {NULL, NULL, 0, NULL},
};

int ts_decode_add(PyObject *module); /* the trace decoder, _decode.c */

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tidescope.capture._speedups",
    .m_doc = "The C twin of tidescope's capture hot path (see _pure.py, the specification).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&RingStorage_Type) < 0 || PyType_Ready(&Ids_Type) < 0 ||
        PyType_Ready(&Cell_Type) < 0 || check_mirror() < 0)
        return NULL;
    s_normal = PyUnicode_InternFromString("normal");
    s_put_slow = PyUnicode_InternFromString("_put_slow");
    s_ast_node_id = PyUnicode_InternFromString("ast_node_id");
    s_call_id = PyUnicode_InternFromString("call_id");
    s_exit_reason = PyUnicode_InternFromString("exit_reason");
    s_duration_ns = PyUnicode_InternFromString("duration_ns");
    s_node = PyUnicode_InternFromString("_node");
    s_pid = PyUnicode_InternFromString("_pid");
    s_wall_offset = PyUnicode_InternFromString("wall_offset");
    static const char *keys[8] = {"module", "function", "arity", "args", "return_value",
                                  "exception", "duration_ns", "exit_reason"};
    for (int k = 0; k < 8; k++) {
        s_data_keys[k] = PyUnicode_InternFromString(keys[k]);
        if (s_data_keys[k] == NULL) return NULL;
    }
    if (!s_normal || !s_put_slow || !s_ast_node_id || !s_call_id || !s_exit_reason ||
        !s_duration_ns || !s_node || !s_pid || !s_wall_offset)
        return NULL;
    g_ids = PyType_GenericAlloc(&Ids_Type, 0);
    if (g_ids == NULL) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    g_abandoned = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (g_abandoned == NULL || PyModule_AddObjectRef(m, "ABANDONED", g_abandoned) < 0 ||
        PyModule_AddObjectRef(m, "RingStorage", (PyObject *)&RingStorage_Type) < 0 ||
        PyModule_AddStringConstant(m, "CORE_NAME", "c") < 0 ||
        PyModule_AddIntConstant(m, "IN_PLACE_STACK", g_inplace) < 0 || ts_decode_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
