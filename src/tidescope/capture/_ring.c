/* The ring: RingStorage (the slots and claim counter under _ring.RingBuffer) and the
 * scans that turn slots into events and records (the pure _ring.py's twin).
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
 * Python code, so with the GIL the sequence is also atomic as a whole. A reader's copy
 * takes new references to the slot's objects before the reader runs anything that may run
 * Python code (which may let other threads write, and lap the ring): the trace encoder
 * takes them only then (hold_slot when it first needs them, with the collector off during
 * its scan so that no allocation runs a finalizer), the other readers at once. Without the GIL
 * (not supported: the module does not declare Py_mod_gil) readers would also need
 * deferred reclamation of the references a writer drops when it overwrites a slot, an
 * acquire fence between their loads of a slot and the second load of its stamp, and
 * per-field atomic loads instead of hold_slot()'s plain struct copy.
 */
#include "_state.h"
#include "_snap.h"
#include <structmember.h>
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


PyTypeObject RingStorage_Type;

static void
free_slots(Slot *slots, uint64_t n)
{
    if (slots == NULL) return;
    for (uint64_t i = 0; i < n; i++) {
        Garbage g;
        g.n = 0;
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
 * object alive. Raw integers are not references.
 *
 * A call's entry or exit is skipped too: it holds what the report path made (strings,
 * ints, snapshots, ObjectRefs, the exception's snapshot), never a user's object that could
 * lead back to the ring, and visiting it was the largest single cost of tracing a call
 * (bench_callgrind.py: ~3,900 instructions per fib call on 3.11, two full collections
 * over a ring of 2**18 slots). Only what write() and write_event() store by reference
 * (K_EVENT, K_RECORD) can close a cycle, and those are visited. */
static int
RingStorage_traverse(RingStorage *self, visitproc visit, void *arg)
{
    Slot *slots = self->slots;
    for (uint64_t i = 0; slots != NULL && i < self->size; i++) {
        uint64_t st = __atomic_load_n(&slots[i].stamp, __ATOMIC_ACQUIRE);
        if (st == 0 || (st & 1) || slots[i].kind == K_ENTRY || slots[i].kind == K_EXIT)
            continue;
        Garbage g;
        g.n = 0;
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
    Garbage g;
    g.n = 0;
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
void
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
    PyObject *ast = slot_ast(c);
    v[5] = Py_NewRef(ast ? ast : Py_None);
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
            PyObject *x = slot_item(c, k);
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
        PyObject *v = slot_item(c, k);
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
 * trace encoder (_encode.c): each current slot is copied (with new references when
 * `hold`) and checked against its stamp again before `visit` sees it. */
int
ts_scan_slots(RingStorage *self, uint64_t *pp, Py_ssize_t count, Py_ssize_t *got,
              Py_ssize_t *abandoned, slot_visitor visit, void *ctx, int hold)
{
    uint64_t p = *pp;
    *got = *abandoned = 0;
    while (*got < count && self->slots != NULL) {
        Slot *s = &self->slots[p & self->mask];
        uint64_t st = __atomic_load_n(&s->stamp, __ATOMIC_ACQUIRE);
        if (st == 0) break;
        uint64_t q = (st - 1) / 2;
        if (q == p && !(st & 1)) {
            Slot copy = *s;
            Garbage held;
            held.n = 0;
            if (hold) hold_slot(&copy, &held);
            if (__atomic_load_n(&s->stamp, __ATOMIC_ACQUIRE) != st) { /* overwritten */
                release(&held);
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
            release(&held);
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
    int r = ts_scan_slots(self, &pos, count, &got, &abandoned, scan_visit, &c, 1);
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

PyTypeObject RingStorage_Type = {
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

