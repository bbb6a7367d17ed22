/* Value reports by site: the C twin of _pure_values.py (see its docstring for the table).
 *
 * value_sites(table) checks a module's sites through _pure_values.check_sites once, at
 * import, and returns a ValueSites: a callable that keeps each site's kind, node id, line,
 * names and constants in a C array. A report, report(token, k, *values), builds the data
 * dict runtime.ast's reporter builds, snapshots it as the flat copy Snapper.payload
 * tries first would (_snap.c: payload_flat, which copies only the program's containers in
 * it) and writes a K_RECORD slot as write_event does
 * (_report.c). Python runs only where the flat copy would not do (an object, a long
 * string, a deep container: _pure_values.value_payload), on errors (counted), and for the
 * ring's slow strategies. */
#include "_state.h"
#include "_context.h"
#include "_snap.h"
#include "_vreport.h"
#include <stddef.h>

enum { V_SNAP = 0, V_LINE = 1, V_BRANCH = 2, V_MATCH = 3, V_LOOP = 4, V_KINDS = 5 };

static PyObject *g_value_types[V_KINDS]; /* _pure_values.EVENT_TYPES, by kind */
static PyObject *g_value_payload = NULL; /* _pure_values.value_payload(data) */
static PyObject *g_check_sites = NULL;   /* _pure_values.check_sites(table) */
static int64_t g_loop_first = 10, g_loop_every = 100;
static PyObject *s_put = NULL, *s_ast = NULL;
enum {
    K_VARIABLES, K_LINE, K_SOURCE, K_CONTEXT, K_BRANCH_TYPE, K_CONDITION, K_BRANCH_TAKEN,
    K_PATTERN, K_VALUE, K_MATCH_SUCCESS, K_LOOP_TYPE, K_ITERATION_COUNT, K_CURRENT_VALUE,
    K_NKEYS
};
static const char *key_names[K_NKEYS] = {
    "variables", "line", "source", "context", "branch_type", "condition", "branch_taken",
    "pattern", "value", "match_success", "loop_type", "iteration_count", "current_value",
};
static PyObject *s_keys[K_NKEYS];

/* The ids a value event carries: each an object (borrowed) or, from a C frame, a raw
 * int64 (no int made per event). */
typedef struct {
    PyObject *o[3]; /* call, parent, correlation id */
    int64_t raw[3];
    int is_raw[3];
} EvIds;

static inline void
ids_obj(EvIds *ids, int k, PyObject *o)
{
    ids->o[k] = o;
    ids->is_raw[k] = 0;
}

static inline void
ids_raw(EvIds *ids, int k, int64_t v)
{
    ids->raw[k] = v;
    ids->is_raw[k] = 1;
}

/* _pure.frame_ids on the C core, read from the cell without spilling its C frames (a
 * value report must not turn the stack into tuples): 1 when capture is off in this
 * context (_OFF on top), 0, or -1 with an error set. */
static int
current_ids(Cell *c, EvIds *ids)
{
    ids_obj(ids, 0, Py_None);
    ids_obj(ids, 1, Py_None);
    ids_obj(ids, 2, Py_None);
    if (c == NULL) return 0;
    PyObject *f = c->top != NULL ? c->top : Py_None;
    if (c->n > 0) {
        CFrame *t = &c->frames[c->n - 1];
        ids_raw(ids, 0, t->call);
        if (t->corr != NULL) ids_obj(ids, 2, t->corr);
        else ids_raw(ids, 2, t->corr_raw);
        if (c->n > 1) ids_raw(ids, 1, c->frames[c->n - 2].call);
        else if (is_frame(f)) ids_obj(ids, 1, PyTuple_GET_ITEM(f, 0));
        return 0;
    }
    if (f == g_off) return 1;
    if (f == Py_None) return 0;
    if (!is_frame(f)) return bad_stack(), -1;
    ids_obj(ids, 0, PyTuple_GET_ITEM(f, 0));
    PyObject *p = PyTuple_GET_ITEM(f, 1);
    if (p != Py_None && p != g_off) {
        if (!is_frame(p)) return bad_stack(), -1;
        ids_obj(ids, 1, PyTuple_GET_ITEM(p, 0));
    }
    ids_obj(ids, 2, PyTuple_GET_ITEM(f, 2));
    return 0;
}

/* Whether `token` (what __tidescope_enter__ returned, or a call id) names the call on top
 * of the stack, ids[0]: 1, 0, or -1 with an error set. A token of this context's top
 * depth is that call; anything else is compared by its call id (_core.call_of). */
static int
token_is_top(Cell *c, PyObject *token, EvIds *ids, PyObject **cid)
{
    *cid = NULL;
    if (Py_IS_TYPE(token, &CallToken_Type) && c != NULL &&
        ((CallToken *)token)->depth == cell_depth(c) + c->n)
        return 1;
    *cid = call_of(NULL, token);
    if (*cid == NULL) return -1;
    if (ids->is_raw[0]) {
        int64_t v;
        if (PyLong_CheckExact(*cid) && small_long(*cid, &v)) return v == ids->raw[0];
        PyObject *top = PyLong_FromLongLong(ids->raw[0]);
        if (top == NULL) return -1;
        int eq = PyObject_RichCompareBool(*cid, top, Py_EQ);
        Py_DECREF(top);
        return eq;
    }
    return *cid == ids->o[0] ? 1 : PyObject_RichCompareBool(*cid, ids->o[0], Py_EQ);
}

static inline void
put_id(Slot *s, Val *v, EvIds *ids, int k, uint8_t bit)
{
    if (ids->is_raw[k]) {
        v->i = ids->raw[k];
        s->raw |= bit;
    }
    else {
        put_val(s, v, ids->o[k], bit);
    }
}

/* One site; every object is borrowed from the ValueSites' checked table. */
typedef struct {
    int kind;
    PyObject *ast;   /* str */
    PyObject *line;  /* int */
    PyObject *names; /* tuple of str */
    Py_ssize_t nnames;
    PyObject *d[3];  /* the kind's constants (detail) */
} VSite;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *table; /* the checked sites: holds everything the array points to */
    Py_ssize_t n;
    VSite *sites;
} ValueSites;

/* --------------------------------------------------------------------------------- */
/* the event                                                                          */

/* {name: value, ...} of a site's names, new reference */
static PyObject *
named(VSite *s, PyObject *const *values)
{
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    for (Py_ssize_t k = 0; k < s->nnames; k++) {
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(s->names, k), values[k]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* the data before its snapshot, in runtime.ast's key order; new reference. *ownp: the
 * dict of names made for it (held by the data), or NULL. */
static PyObject *
event_data(VSite *s, PyObject *const *values, PyObject *count, PyObject **ownp)
{
    PyObject *keys[4], *vals[4], *own = NULL;
    int n = 0;
#define PUT(K, V) (keys[n] = s_keys[K], vals[n++] = (V))
    switch (s->kind) {
    case V_SNAP:
        if ((own = named(s, values)) == NULL) return NULL;
        PUT(K_VARIABLES, own);
        PUT(K_LINE, s->line);
        PUT(K_SOURCE, s_ast);
        break;
    case V_LINE:
        PUT(K_LINE, s->line);
        PUT(K_CONTEXT, Py_None);
        PUT(K_SOURCE, s_ast);
        break;
    case V_BRANCH:
        PUT(K_BRANCH_TYPE, s->d[0]);
        PUT(K_CONDITION, s->d[1]);
        PUT(K_BRANCH_TAKEN, s->d[2]);
        PUT(K_LINE, s->line);
        break;
    case V_MATCH:
        PUT(K_PATTERN, s->d[0]);
        PUT(K_VALUE, values[0]);
        PUT(K_MATCH_SUCCESS, s->d[1]);
        PUT(K_LINE, s->line);
        break;
    default: /* V_LOOP */
        if (s->nnames > 0 && (own = named(s, values)) == NULL) return NULL;
        PUT(K_LOOP_TYPE, s->d[0]);
        PUT(K_ITERATION_COUNT, count);
        PUT(K_CURRENT_VALUE, own != NULL ? own : Py_None);
        PUT(K_LINE, s->line);
        break;
    }
#undef PUT
    PyObject *data = PyDict_New();
    for (int k = 0; data != NULL && k < n; k++) {
        if (PyDict_SetItem(data, keys[k], vals[k]) < 0) Py_CLEAR(data);
    }
    *ownp = data != NULL ? own : NULL;
    Py_XDECREF(own);
    return data;
}

/* Write one K_RECORD slot (or _put it on the slow strategies), as write_event does. All
 * references borrowed. */
static int
write_record(PyObject *buf, PyObject *cell, PyObject *etype, PyObject *data, EvIds *ids,
             PyObject *ast)
{
    int64_t eid = new_id();
    int64_t ts = now_ns();
    uint64_t thread = PyThread_get_thread_ident();
    PyThreadState *tstate = PyThreadState_Get();
    PyObject *task = context_task(cell, cell_owned(cell, tstate), tstate);
    if (task == NULL) return -1;
    RingStorage *rb = (RingStorage *)buf;
    int rc = 0;
    if (PyObject_TypeCheck(buf, &RingStorage_Type) && rb->fast && rb->slots != NULL) {
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            s->eid.i = eid;
            s->ts.i = ts;
            s->thread.i = (int64_t)thread;
            s->raw = R_EID | R_TS | R_THREAD;
            put_val(s, &s->task, task, R_TASK);
            put_id(s, &s->parent, ids, 1, R_PARENT);
            put_id(s, &s->corr, ids, 2, R_CORR);
            put_id(s, &s->call, ids, 0, R_CALL);
            s->ast = Py_NewRef(ast);
            s->kind = K_RECORD;
            s->d[0].o = Py_NewRef(etype);
            s->d[1].o = Py_NewRef(data);
            s->d[2].o = s->d[3].o = NULL;
            publish(s, pos);
            release(&g);
        }
        if (pos == rb->wake_at) high_water(rb, pos);
    }
    else {
        PyObject *id[3] = {NULL, NULL, NULL};
        for (int k = 0; k < 3; k++) {
            id[k] = ids->is_raw[k] ? PyLong_FromLongLong(ids->raw[k]) : Py_NewRef(ids->o[k]);
            if (id[k] == NULL) break;
        }
        PyObject *rec = id[0] && id[1] && id[2]
                            ? Py_BuildValue("(LLKOOOOOOO)", (long long)eid, (long long)ts,
                                            (unsigned long long)thread, task, id[2], id[1],
                                            id[0], ast, etype, data)
                            : NULL;
        for (int k = 0; k < 3; k++) Py_XDECREF(id[k]);
        PyObject *r = rec ? PyObject_CallMethodOneArg(buf, s_put, rec) : NULL;
        Py_XDECREF(rec);
        if (r == NULL) rc = -1;
        Py_XDECREF(r);
    }
    Py_DECREF(task);
    return rc;
}

/* _pure_values._report: 0 written or nothing to do, -1 error set. */
static int
report(VSite *s, PyObject *token, PyObject *const *values, PyObject *count)
{
    if (!g_enabled || g_buffer == NULL) return 0;
    PyObject *buf = Py_NewRef(g_buffer), *cell = NULL, *data = NULL, *payload = NULL;
    PyObject *cid = NULL;
    int rc = -1, none;
    cell = get_cell(&none);
    if (cell == NULL && !none) goto done;
    EvIds ids;
    int off = current_ids((Cell *)cell, &ids);
    if (off != 0) {
        rc = off > 0 ? 0 : -1;
        goto done;
    }
    if (token != Py_None) {
        /* the token names the call the value belongs to; when it is not the top of this
         * context's stack (a frame left unbalanced), the event is that call's, parentless */
        int top = token_is_top((Cell *)cell, token, &ids, &cid);
        if (top < 0) goto done;
        if (!top) {
            ids_obj(&ids, 0, cid);
            ids_obj(&ids, 1, Py_None);
        }
    }
    PyObject *own;
    data = event_data(s, values, count, &own);
    if (data == NULL) goto done;
    payload = payload_flat(data, own);
    if (payload == Py_None) {
        Py_DECREF(payload);
        payload = PyObject_CallOneArg(g_value_payload, data);
    }
    if (payload == NULL) goto done;
    rc = write_record(buf, cell, g_value_types[s->kind], payload, &ids, s->ast);
done:
    Py_XDECREF(cell);
    Py_XDECREF(cid);
    Py_XDECREF(data);
    Py_XDECREF(payload);
    Py_DECREF(buf);
    return rc;
}

/* --------------------------------------------------------------------------------- */
/* the reporter                                                                       */

/* A loop's next count, new reference; *skip: no report for it. NULL with an error set. */
static PyObject *
next_count(PyObject *c, int *skip)
{
    int64_t v;
    if (!PyLong_CheckExact(c)) {
        PyErr_Format(PyExc_TypeError, "a loop count is an int, got %s", Py_TYPE(c)->tp_name);
        return NULL;
    }
    if (small_long(c, &v)) { /* |v| < 2**60: no overflow */
        v += 1;
        *skip = v > g_loop_first && v % g_loop_every != 0;
        return PyLong_FromLongLong(v);
    }
    PyObject *one = PyLong_FromLong(1), *first = PyLong_FromLongLong(g_loop_first);
    PyObject *every = PyLong_FromLongLong(g_loop_every);
    PyObject *n = NULL, *rem = NULL;
    if (one != NULL && first != NULL && every != NULL) n = PyNumber_Add(c, one);
    if (n != NULL) rem = PyNumber_Remainder(n, every);
    int over = rem != NULL ? PyObject_RichCompareBool(n, first, Py_GT) : -1;
    int nonzero = over >= 0 ? PyObject_IsTrue(rem) : -1;
    Py_XDECREF(one);
    Py_XDECREF(first);
    Py_XDECREF(every);
    Py_XDECREF(rem);
    if (nonzero < 0) {
        Py_XDECREF(n);
        return NULL;
    }
    *skip = over && nonzero;
    return n;
}

static PyObject *
vs_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ValueSites *self = (ValueSites *)self_;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *count = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_SetString(PyExc_TypeError, "a value report takes no keyword arguments");
        return NULL;
    }
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "a value report takes a call token and a site");
        return NULL;
    }
    int64_t k;
    if (!PyLong_CheckExact(args[1]) || !small_long(args[1], &k) || k < 0 || k >= self->n) {
        PyErr_Format(PyExc_IndexError, "no value site %R", args[1]);
        goto error;
    }
    VSite *s = &self->sites[k];
    PyObject *const *values = args + 2;
    Py_ssize_t nv = nargs - 2;
    if (s->kind == V_LOOP) {
        if (nv != s->nnames + 1) {
            PyErr_Format(PyExc_TypeError, "value site %zd takes %zd values, got %zd",
                         (Py_ssize_t)k, s->nnames + 1, nv);
            goto error;
        }
        int skip = 0;
        count = next_count(values[0], &skip);
        if (count == NULL) goto error;
        if (skip) return count;
        values++;
    }
    else {
        Py_ssize_t want = s->kind == V_MATCH ? 1 : s->nnames;
        if (nv != want) {
            PyErr_Format(PyExc_TypeError, "value site %zd takes %zd values, got %zd",
                         (Py_ssize_t)k, want, nv);
            goto error;
        }
    }
    if (report(s, args[0], values, count) < 0 && !swallow_error()) {
        Py_XDECREF(count);
        return NULL; /* a BaseException (KeyboardInterrupt): propagates, as in _pure */
    }
    return count != NULL ? count : Py_NewRef(Py_None);
error:
    if (!swallow_error()) return NULL;
    Py_RETURN_NONE;
}

static void
vs_dealloc(PyObject *self_)
{
    ValueSites *self = (ValueSites *)self_;
    PyMem_Free(self->sites);
    Py_XDECREF(self->table);
    Py_TYPE(self_)->tp_free(self_);
}

static PyTypeObject ValueSites_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.ValueSites",
    .tp_basicsize = sizeof(ValueSites),
    .tp_dealloc = vs_dealloc,
    .tp_vectorcall_offset = offsetof(ValueSites, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A module's value sites; call it as report(token, k, *values).",
};

PyObject *
value_sites(PyObject *Py_UNUSED(m), PyObject *table)
{
    if (g_check_sites == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "values_init() was not called");
        return NULL;
    }
    PyObject *checked = PyObject_CallOneArg(g_check_sites, table);
    if (checked == NULL) return NULL;
    if (!PyTuple_CheckExact(checked)) {
        Py_DECREF(checked);
        PyErr_SetString(PyExc_TypeError, "check_sites() must return a tuple");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(checked);
    ValueSites *self = PyObject_New(ValueSites, &ValueSites_Type);
    if (self == NULL) {
        Py_DECREF(checked);
        return NULL;
    }
    self->vectorcall = vs_call;
    self->table = checked;
    self->n = n;
    self->sites = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(VSite));
    if (self->sites == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    static const Py_ssize_t ndetail[V_KINDS] = {0, 0, 3, 2, 1};
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *t = PyTuple_GET_ITEM(checked, k);
        long kind = -1;
        if (PyTuple_CheckExact(t) && PyTuple_GET_SIZE(t) == 5)
            kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
        if (kind < 0 || kind >= V_KINDS || !PyUnicode_CheckExact(PyTuple_GET_ITEM(t, 1)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(t, 2)) ||
            !PyTuple_CheckExact(PyTuple_GET_ITEM(t, 3)) ||
            !PyTuple_CheckExact(PyTuple_GET_ITEM(t, 4)) ||
            PyTuple_GET_SIZE(PyTuple_GET_ITEM(t, 4)) != ndetail[kind]) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "value site %zd is not a checked site", k);
            Py_DECREF(self);
            return NULL;
        }
        VSite *s = &self->sites[k];
        s->kind = (int)kind;
        s->ast = PyTuple_GET_ITEM(t, 1);
        s->line = PyTuple_GET_ITEM(t, 2);
        s->names = PyTuple_GET_ITEM(t, 3);
        s->nnames = PyTuple_GET_SIZE(s->names);
        PyObject *detail = PyTuple_GET_ITEM(t, 4);
        for (Py_ssize_t j = 0; j < ndetail[kind]; j++) s->d[j] = PyTuple_GET_ITEM(detail, j);
    }
    return (PyObject *)self;
}

PyObject *
values_init(PyObject *Py_UNUSED(m), PyObject *ns)
{
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "values_init() takes a dict");
        return NULL;
    }
    if (PyType_Ready(&ValueSites_Type) < 0) return NULL;
    PyObject *types = PyDict_GetItemString(ns, "event_types");
    PyObject *payload = PyDict_GetItemString(ns, "value_payload");
    PyObject *check = PyDict_GetItemString(ns, "check_sites");
    PyObject *first = PyDict_GetItemString(ns, "loop_first");
    PyObject *every = PyDict_GetItemString(ns, "loop_every");
    if (types == NULL || !PyTuple_Check(types) || PyTuple_GET_SIZE(types) != V_KINDS ||
        payload == NULL || check == NULL || first == NULL || every == NULL) {
        PyErr_SetString(PyExc_KeyError, "values_init(): a name is missing");
        return NULL;
    }
    int64_t lf = PyLong_AsLongLong(first), le = PyLong_AsLongLong(every);
    if ((lf == -1 || le == -1) && PyErr_Occurred()) return NULL;
    if (le <= 0) {
        PyErr_SetString(PyExc_ValueError, "values_init(): loop_every must be positive");
        return NULL;
    }
    for (int k = 0; k < K_NKEYS; k++) {
        if (s_keys[k] == NULL && (s_keys[k] = PyUnicode_InternFromString(key_names[k])) == NULL)
            return NULL;
    }
    if (s_put == NULL && (s_put = PyUnicode_InternFromString("_put")) == NULL) return NULL;
    if (s_ast == NULL && (s_ast = PyUnicode_InternFromString("ast")) == NULL) return NULL;
    for (int k = 0; k < V_KINDS; k++)
        Py_XSETREF(g_value_types[k], Py_NewRef(PyTuple_GET_ITEM(types, k)));
    Py_XSETREF(g_value_payload, Py_NewRef(payload));
    Py_XSETREF(g_check_sites, Py_NewRef(check));
    g_loop_first = lf;
    g_loop_every = le;
    Py_RETURN_NONE;
}
