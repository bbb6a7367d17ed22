/* The report path: report_function_entry / report_function_exit (the hot path) and
 * write_event, each stamping an event and writing it into the ring's slots. */
#include "_state.h"
#include "_context.h"
#include "_snap.h"
#include "_report.h"

/* 1 + the id of the thread state whose start was recorded on this OS thread (0: none);
 * thread state ids are never reused, so a new thread with an old ident is recorded too */
static _Thread_local uint64_t t_noted = 0;

static int
note_thread(PyThreadState *tstate, int64_t ts)
{
    t_noted = tstate->id + 1;
    PyObject *t = PyLong_FromLongLong(ts);
    if (t == NULL) return -1;
    PyObject *r = PyObject_CallOneArg(g_note_thread, t);
    Py_DECREF(t);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* note_thread_once(): for work that starts a thread under its starter's call (its first
 * call is then no root call): the same once-per-thread flag as a root call's. */
PyObject *
note_thread_once(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(noarg))
{
    PyThreadState *tstate = PyThreadState_Get();
    if (t_noted != tstate->id + 1 && g_note_thread != NULL && note_thread(tstate, now_ns()) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
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

/* An exit's return value and exception (new references in *res, *exc): the value under
 * the policy of `key` (its ast node id) on a normal exit, else the exception's snapshot.
 * 0, or -1 with an error set. Always inlined: as a call it cost 28 instructions per exit
 * (bench_callgrind.py 3.11 --modes none,c --no-drain: 2,151 against 2,123). */
static inline __attribute__((always_inline)) int
exit_values(PyObject *rv, PyObject *reason, PyObject *key, PyObject **res, PyObject **exc)
{
    int normal = reason == s_normal;
    if (!normal) {
        normal = PyObject_RichCompareBool(reason, s_normal, Py_EQ);
        if (normal < 0) return -1;
    }
    if (normal) {
        int by_ref = ref_for(key);
        if (by_ref < 0) return -1;
        *res = by_ref ? ref_value(rv) : snap_value(rv);
        if (*res == NULL) return -1;
        *exc = Py_NewRef(Py_None);
        return 0;
    }
    *exc = call_snap(g_exc_snap, rv);
    if (*exc == NULL) return -1;
    *res = Py_NewRef(Py_None);
    return 0;
}

/* An exit's data items (references taken; the duration raw when it is an int64). */
static inline void
fill_exit(Slot *s, int32_t site, PyObject *res, PyObject *exc, int raw_duration, int64_t dur,
          PyObject *duration, PyObject *reason)
{
    s->kind = K_EXIT;
    s->site = site;
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

/* The entry of a call: report_function_entry's work once its arguments are parsed. `own`:
 * `args` is a dict made for this report (report_site_entry's), which nothing else holds.
 * `site`: the site whose module, function and ast these are (the slot carries its id), or
 * -1. */
static PyObject *
entry(PyObject *module, PyObject *function, PyObject *args, PyObject *ast, PyObject *call_id,
      int own, int32_t site)
{
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
    int by_ref = ref_for(module);
    if (by_ref < 0) goto error;
    if (own) snap = by_ref ? ref_own_args(args, &arity) : snap_own_args(args, &arity);
    else snap = by_ref ? ref_args(args, &arity) : snap_args(args, &arity);
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
        /* once per thread, as _pure does at a root call */
        if (t_noted != tstate->id + 1 && note_thread(tstate, ts) < 0) goto error;
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
    Py_ssize_t depth = cell == NULL ? 1 : ((Cell *)cell)->base_depth;
    if (cell != NULL && depth >= 0) depth++;
    if (frame == NULL ||
        set_top(cell, cell_owned(cell, tstate), frame, task, tstate, depth) < 0)
        goto error;
    RingStorage *rb = (RingStorage *)buf;
    if (rb->fast && rb->slots != NULL) {
        /* Everything that can fail is done: claim, then fill the slot. */
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            fill_common(s, eid, ts, thread, task, corr, parent, cid,
                        site >= 0 ? Py_None : astv, call_id == Py_None ? cid : NULL, eid);
            s->kind = K_ENTRY;
            s->site = site;
            s->d[0].o = site >= 0 ? NULL : Py_NewRef(module);
            s->d[1].o = site >= 0 ? NULL : Py_NewRef(function);
            s->d[2].o = Py_NewRef(arity_obj);
            s->d[3].o = Py_NewRef(snap);
            publish(s, pos);
            release(&g);
        }
        if (pos == rb->wake_at) high_water(rb, pos);
    }
    else {
        PyObject *r = put_slow(buf, eid, ts, thread, task, corr, parent, cid, astv,
                               g_entry_type, module, function, arity_obj, snap);
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


PyObject *
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
    return entry(args[0], args[1], args[2], ast, call_id, 0, -1);
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

/* The exit of a call: report_function_exit's work once its arguments are parsed. `site`:
 * the site whose ast this is (the slot carries its id), or -1. */
static PyObject *
exit_call(PyObject *call_id, PyObject *rv, PyObject *duration, PyObject *reason, PyObject *ast,
          int32_t site)
{
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
    Py_ssize_t depth = frame == f && cell != NULL ? ((Cell *)cell)->base_depth - 1 : -1;
    if (frame != NULL &&
        set_top(cell, owned, PyTuple_GET_ITEM(frame, 1), NULL, tstate, depth < 0 ? -1 : depth) < 0)
        goto error;
    if (!g_enabled || g_buffer == NULL || f == g_off) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    buf = Py_NewRef(g_buffer);
    int64_t ts = now_ns();
    if (exit_values(rv, reason, ast, &res, &exc) < 0) goto error;
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
            fill_common(s, eid, ts, thread, task, corr, parent, call_id,
                        site >= 0 ? Py_None : astv, NULL, 0);
            fill_exit(s, site, res, exc, raw_duration, dur, duration, reason);
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

static PyObject *exit_token(PyObject *token, PyObject *rv, PyObject *duration,
                           PyObject *reason, PyObject *ast, int32_t site, int32_t check);

PyObject *
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
    if (args[0] == Py_None) Py_RETURN_FALSE;
    if (Py_IS_TYPE(args[0], &CallToken_Type))
        return exit_token(args[0], args[1], duration, reason, ast, -1, -1);
    return exit_call(args[0], args[1], duration, reason, ast, -1);
}

/* --------------------------------------------------------------------------------- */
/* sites: what rewritten code calls (_sites.py registers them)                        */

/* The site registered as `id` (borrowed): (module, function, ast_node_id, params, file,
 * line), its index in *k; NULL with an error set for anything else. */
static PyObject *
site_at(PyObject *id, int32_t *at)
{
    int64_t k;
    PyObject *sites = g_sites;
    if (!PyLong_CheckExact(id) || !small_long(id, &k) || sites == NULL || k < 0 ||
        k >= PyList_GET_SIZE(sites)) {
        PyErr_Format(PyExc_IndexError, "no site %R", id);
        return NULL;
    }
    PyObject *site = PyList_GET_ITEM(sites, k);
    if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) < 4 || k > INT32_MAX) {
        PyErr_Format(PyExc_TypeError, "site %R is not a Site", id);
        return NULL;
    }
    *at = (int32_t)k;
    return site;
}

/* The site id a slot may carry for `site` (its index k), or -1 when the slot must hold the
 * strings: the readers and the encoder take the site's first three items as exact str (the
 * table _sites.register_sites fills), and the entry writes them as its module, function and
 * ast node id. */
static inline int32_t
carried(PyObject *site, int32_t k)
{
    return PyUnicode_CheckExact(PyTuple_GET_ITEM(site, 0)) &&
                   PyUnicode_CheckExact(PyTuple_GET_ITEM(site, 1)) &&
                   PyUnicode_CheckExact(PyTuple_GET_ITEM(site, 2))
               ? k
               : -1;
}

/* Per site: may its entries keep their arguments in the slot (D_ARGS)? Its strings exact
 * str (carried), at most SITE_ARGS parameter names, exact str and distinct (the args dict
 * then has one key per name, in order). Decided once per site tuple. */
typedef struct { PyObject *site; char ok; } SiteInfo;
static SiteInfo *g_site_info = NULL;
static Py_ssize_t g_n_site_info = 0;

static int
site_compact(PyObject *site, int32_t k)
{
    if (k < g_n_site_info && g_site_info[k].site == site) return g_site_info[k].ok;
    PyObject *names = PyTuple_GET_ITEM(site, 3);
    int ok = carried(site, k) >= 0 && PyTuple_CheckExact(names) &&
             PyTuple_GET_SIZE(names) <= SITE_ARGS;
    for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(names); i++) {
        PyObject *a = PyTuple_GET_ITEM(names, i);
        ok = PyUnicode_CheckExact(a);
        for (Py_ssize_t j = 0; ok && j < i; j++) {
            int eq = PyUnicode_Compare(a, PyTuple_GET_ITEM(names, j));
            if (eq == -1 && PyErr_Occurred()) PyErr_Clear();
            ok = eq != 0;
        }
    }
    if (k >= g_n_site_info) {
        Py_ssize_t n = g_n_site_info ? g_n_site_info : 256;
        while (n <= k) n *= 2;
        SiteInfo *p = PyMem_Realloc(g_site_info, (size_t)n * sizeof(SiteInfo));
        if (p == NULL) return ok; /* not remembered */
        memset(p + g_n_site_info, 0, (size_t)(n - g_n_site_info) * sizeof(SiteInfo));
        g_site_info = p;
        g_n_site_info = n;
    }
    Py_XSETREF(g_site_info[k].site, Py_NewRef(site)); /* held: its address is never reused */
    g_site_info[k].ok = (char)ok;
    return ok;
}

/* A D_ARGS entry's args dict (the slow path's): new reference. */
static PyObject *
args_dict(PyObject *names, Val *vals, uint8_t raw, Py_ssize_t n)
{
    PyObject *d = PyDict_New();
    for (Py_ssize_t j = 0; d != NULL && j < n; j++) {
        PyObject *v = (raw & (1 << j)) ? PyLong_FromLongLong(vals[j].i) : Py_NewRef(vals[j].o);
        if (v == NULL || PyDict_SetItem(d, PyTuple_GET_ITEM(names, j), v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

static void
release_vals(Val *vals, uint8_t raw, Py_ssize_t n)
{
    for (Py_ssize_t j = 0; j < n; j++)
        if (!(raw & (1 << j))) Py_DECREF(vals[j].o);
}

/* The entry of a site call whose arguments the slot keeps (vals: n references, taken):
 * a C frame pushed on this context's stack, no Python object made. Returns its token
 * (None when capture is off here). */
static PyObject *
site_push(PyObject *site, int32_t k_site, Val *vals, uint8_t raw, Py_ssize_t n)
{
    PyObject *buf = g_buffer, *cellobj = NULL, *task = NULL, *token = NULL, *result = NULL;
    Cell *c = NULL;
    int64_t pushed = 0; /* the call id pushed */
    if (buf == NULL) { /* stopped while the arguments were taken */
        release_vals(vals, raw, n);
        Py_RETURN_NONE;
    }
    Py_INCREF(buf);
    PyThreadState *tstate = PyThreadState_Get();
    int none;
    cellobj = get_cell(&none);
    if (cellobj == NULL && !none) goto error;
    c = (Cell *)cellobj;
    if (c != NULL && c->n == 0) {
        if (c->top == g_off) goto off;
        if (c->top != Py_None && !is_frame(c->top)) {
            bad_stack();
            goto error;
        }
    }
    int root = c == NULL || (c->n == 0 && c->top == Py_None);
    int64_t ts = now_ns();
    /* once per thread, as _pure does at a root call */
    if (root && t_noted != tstate->id + 1 && note_thread(tstate, ts) < 0) goto error;
    if (c == NULL || !cell_owned(cellobj, tstate)) {
        /* another context can see this stack: this one gets a cell of its own over it */
        PyObject *base = Py_None;
        Py_ssize_t depth = 0;
        if (c != NULL) {
            if (cell_spill(c) < 0) goto error;
            if (c->n > 0) {
                PyErr_SetString(PyExc_RuntimeError, "the stack changed while copied");
                goto error;
            }
            base = c->top;
            depth = c->base_depth;
        }
        Cell *fresh = new_cell(base, depth, NULL, tstate);
        if (fresh == NULL) goto error;
        Py_XSETREF(cellobj, (PyObject *)fresh);
        c = fresh;
    }
    task = context_task(cellobj, 1, tstate);
    if (task == NULL || cell_reserve(c) < 0) goto error;
    Py_ssize_t depth = cell_depth(c) + c->n + 1;
    token = token_for(depth);
    if (token == NULL) goto error;
    /* Nothing below runs Python code or allocates until the slot is published. */
    int64_t cid = new_id();
    CFrame *f = &c->frames[c->n];
    PyObject *parent = NULL; /* borrowed; NULL: the raw parent_raw (or None at a root) */
    int64_t parent_raw = 0;
    f->corr = NULL;
    f->corr_raw = cid;
    if (c->n > 0) {
        CFrame *p = &c->frames[c->n - 1];
        parent_raw = p->call;
        f->corr = Py_XNewRef(p->corr);
        f->corr_raw = p->corr_raw;
    }
    else if (!root) {
        parent = PyTuple_GET_ITEM(c->top, 0);
        PyObject *corr = PyTuple_GET_ITEM(c->top, 2);
        int64_t x;
        if (corr == Py_None) f->corr_raw = cid;
        else if (PyLong_CheckExact(corr) && small_long(corr, &x)) f->corr_raw = x;
        else f->corr = Py_NewRef(corr);
    }
    f->call = cid;
    f->start = ts;
    f->site = k_site;
    c->n++;
    pushed = cid;
    RingStorage *rb = (RingStorage *)buf;
    uint64_t thread = PyThread_get_thread_ident();
    if (rb->fast && rb->slots != NULL) {
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            s->eid.i = cid;
            s->ts.i = ts;
            s->thread.i = (int64_t)thread;
            s->call.i = cid;
            s->raw = R_EID | R_TS | R_THREAD | R_CALL;
            put_val(s, &s->task, task, R_TASK);
            if (root) s->parent.o = Py_NewRef(Py_None);
            else if (parent != NULL) put_val(s, &s->parent, parent, R_PARENT);
            else {
                s->parent.i = parent_raw;
                s->raw |= R_PARENT;
            }
            if (f->corr != NULL) put_val(s, &s->corr, f->corr, R_CORR);
            else {
                s->corr.i = f->corr_raw;
                s->raw |= R_CORR;
            }
            s->kind = K_ENTRY;
            s->site = k_site;
            s->draw = raw | D_ARGS;
            for (Py_ssize_t j = 0; j < SITE_ARGS; j++) s->d[j] = j < n ? vals[j] : (Val){.o = NULL};
            publish(s, pos);
            release(&g);
        }
        else {
            release_vals(vals, raw, n);
        }
        n = 0; /* the slot has the references (or they were released) */
        if (pos == rb->wake_at) high_water(rb, pos);
    }
    else {
        PyObject *names = PyTuple_GET_ITEM(site, 3);
        PyObject *d = args_dict(names, vals, raw, n), *cid_o = PyLong_FromLongLong(cid);
        PyObject *arity = PyLong_FromSsize_t(n);
        PyObject *corr = f->corr != NULL ? Py_NewRef(f->corr) : PyLong_FromLongLong(f->corr_raw);
        PyObject *par = root ? Py_NewRef(Py_None)
                        : parent != NULL ? Py_NewRef(parent)
                                         : PyLong_FromLongLong(parent_raw);
        PyObject *r = NULL;
        if (d && cid_o && arity && corr && par)
            r = put_slow(buf, cid, ts, thread, task, corr, par, cid_o, PyTuple_GET_ITEM(site, 2),
                         g_entry_type, PyTuple_GET_ITEM(site, 0), PyTuple_GET_ITEM(site, 1),
                         arity, d);
        Py_XDECREF(d);
        Py_XDECREF(cid_o);
        Py_XDECREF(arity);
        Py_XDECREF(corr);
        Py_XDECREF(par);
        if (r == NULL) goto error;
        Py_DECREF(r);
    }
    result = Py_NewRef(token);
    goto done;
error:
    if (pushed && c->n >= 1 && c->frames[c->n - 1].call == pushed) cell_cut(c, c->n - 1);
    if (!swallow_error()) goto done;
off:
    result = Py_NewRef(Py_None);
done:
    release_vals(vals, raw, n);
    Py_XDECREF(cellobj);
    Py_XDECREF(task);
    Py_XDECREF(token);
    Py_DECREF(buf);
    return result;
}

PyObject *
report_site_entry(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "report_site_entry() takes a site id");
        return NULL;
    }
    if (!g_enabled || g_buffer == NULL) Py_RETURN_NONE;
    int32_t k_site;
    PyObject *site = site_at(args[0], &k_site);
    if (site == NULL) goto error;
    PyObject *names = PyTuple_GET_ITEM(site, 3);
    if (!PyTuple_CheckExact(names) || PyTuple_GET_SIZE(names) != nargs - 1) {
        PyErr_Format(PyExc_TypeError, "site %R takes %zd values, got %zd", args[0],
                     PyTuple_Check(names) ? PyTuple_GET_SIZE(names) : -1, nargs - 1);
        goto error;
    }
    if (site_compact(site, k_site)) {
        int by_ref = ref_for(PyTuple_GET_ITEM(site, 0));
        if (by_ref < 0) goto error;
        Val vals[SITE_ARGS];
        uint8_t raw;
        Py_INCREF(site); /* taking the values may run Python code */
        int got = site_args(((PyTupleObject *)names)->ob_item, args + 1, nargs - 1, by_ref,
                            vals, &raw);
        PyObject *r = got > 0 ? site_push(site, k_site, vals, raw, nargs - 1) : NULL;
        Py_DECREF(site);
        if (got > 0) return r;
        if (got < 0) goto error;
    }
    /* the args dict's path: the call's frame is a tuple, its token its call id */
    PyObject *d = PyDict_New();
    if (d == NULL) goto error;
    for (Py_ssize_t k = 1; k < nargs; k++) {
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(names, k - 1), args[k]) < 0) {
            Py_DECREF(d);
            goto error;
        }
    }
    PyObject *r = entry(PyTuple_GET_ITEM(site, 0), PyTuple_GET_ITEM(site, 1), d,
                        PyTuple_GET_ITEM(site, 2), Py_None, 1, carried(site, k_site));
    Py_DECREF(d);
    return r;
error:
    if (!swallow_error()) return NULL;
    Py_RETURN_NONE;
}

/* The exit of the call a token stands for (report_site_exit's and report_function_exit's
 * when given a token). `site`: the site the slot carries (or -1, then `ast`); `check`: the
 * site the frame must have been entered from (or -1). A frame that is not in C memory is
 * found by its call id; a token whose frame is gone records nothing and pops nothing. */
static PyObject *
exit_token(PyObject *token, PyObject *rv, PyObject *duration, PyObject *reason, PyObject *ast,
           int32_t site, int32_t check)
{
    Py_ssize_t d = ((CallToken *)token)->depth;
    PyObject *res = NULL, *exc = NULL, *corr = NULL, *parent = NULL, *astv = NULL;
    PyObject *task = NULL, *result = NULL, *buf = NULL;
    PyThreadState *tstate = PyThreadState_Get();
    int none;
    PyObject *cellobj = get_cell(&none);
    if (cellobj == NULL) {
        if (none) Py_RETURN_FALSE;
        goto error;
    }
    Cell *c = (Cell *)cellobj;
    Py_ssize_t base = cell_depth(c);
    int owned = cell_owned(cellobj, tstate);
    if (d <= base || d - base > c->n || !owned) {
        /* a frame in the tuples below, or a stack others see: by its call id */
        PyObject *cid = call_of(NULL, token);
        if (cid == NULL) goto error;
        if (cid == Py_None) {
            Py_DECREF(cid);
            result = Py_NewRef(Py_False);
            goto done;
        }
        Py_DECREF(cellobj);
        cellobj = NULL;
        result = exit_call(cid, rv, duration, reason, ast, site);
        Py_DECREF(cid);
        return result;
    }
    Py_ssize_t idx = d - base - 1;
    CFrame fr = c->frames[idx];
    if (check >= 0 && fr.site != check) { /* not this site's frame: a foreign token */
        result = Py_NewRef(Py_False);
        goto done;
    }
    /* copy what the record needs, then pop (even while capture is off) */
    int64_t parent_raw = 0;
    if (idx > 0) parent_raw = c->frames[idx - 1].call;
    else if (is_frame(c->top)) parent = Py_NewRef(PyTuple_GET_ITEM(c->top, 0));
    else parent = Py_NewRef(Py_None);
    corr = Py_XNewRef(fr.corr);
    cell_cut(c, idx);
    if (!g_enabled || g_buffer == NULL) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    buf = Py_NewRef(g_buffer);
    int64_t ts = now_ns();
    if (exit_values(rv, reason, site >= 0 ? site_item(site, 2) : ast, &res, &exc) < 0)
        goto error;
    if (site < 0) {
        astv = ast_value(ast);
        if (astv == NULL) goto error;
    }
    task = context_task(cellobj, owned, tstate);
    if (task == NULL) goto error;
    uint64_t thread = PyThread_get_thread_ident();
    int64_t eid = new_id();
    int64_t dur = 0;
    int raw_duration = duration == Py_None && !__builtin_sub_overflow(ts, fr.start, &dur);
    RingStorage *rb = (RingStorage *)buf;
    if (rb->fast && rb->slots != NULL) {
        uint64_t pos = __atomic_fetch_add(&rb->claim, 1, __ATOMIC_ACQ_REL);
        Slot *s = &rb->slots[pos & rb->mask];
        Garbage g = {.n = 0};
        if (take_slot(s, pos, &g)) {
            s->eid.i = eid;
            s->ts.i = ts;
            s->thread.i = (int64_t)thread;
            s->call.i = fr.call;
            s->raw = R_EID | R_TS | R_THREAD | R_CALL;
            put_val(s, &s->task, task, R_TASK);
            if (parent != NULL) put_val(s, &s->parent, parent, R_PARENT);
            else {
                s->parent.i = parent_raw;
                s->raw |= R_PARENT;
            }
            if (corr != NULL) put_val(s, &s->corr, corr, R_CORR);
            else {
                s->corr.i = fr.corr_raw;
                s->raw |= R_CORR;
            }
            s->ast = astv == NULL || astv == Py_None ? NULL : Py_NewRef(astv);
            fill_exit(s, site, res, exc, raw_duration, dur, duration, reason);
            publish(s, pos);
            release(&g);
        }
        if (pos == rb->wake_at) high_water(rb, pos);
        result = Py_NewRef(Py_True);
    }
    else {
        PyObject *dur_o = raw_duration ? PyLong_FromLongLong(dur) : Py_NewRef(duration);
        PyObject *cid_o = PyLong_FromLongLong(fr.call);
        PyObject *corr_o = corr != NULL ? Py_NewRef(corr) : PyLong_FromLongLong(fr.corr_raw);
        PyObject *par_o = parent != NULL ? Py_NewRef(parent) : PyLong_FromLongLong(parent_raw);
        if (dur_o && cid_o && corr_o && par_o)
            result = put_slow(buf, eid, ts, thread, task, corr_o, par_o, cid_o,
                              site >= 0 ? site_item(site, 2) : astv, g_exit_type, res, exc,
                              dur_o, reason);
        Py_XDECREF(dur_o);
        Py_XDECREF(cid_o);
        Py_XDECREF(corr_o);
        Py_XDECREF(par_o);
        if (result == NULL) goto error;
    }
    goto done;
error:
    if (swallow_error()) result = Py_NewRef(Py_False);
done:
    Py_XDECREF(cellobj);
    Py_XDECREF(res);
    Py_XDECREF(exc);
    Py_XDECREF(corr);
    Py_XDECREF(parent);
    Py_XDECREF(astv);
    Py_XDECREF(task);
    Py_XDECREF(buf);
    return result;
}

PyObject *
report_site_exit(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "report_site_exit() takes 3 positional arguments but %zd were given", nargs);
        return NULL;
    }
    if (args[0] == Py_None) Py_RETURN_FALSE;
    int32_t k_site = -1;
    PyObject *site = site_at(args[2], &k_site);
    PyObject *ast = Py_None;
    if (site != NULL) ast = PyTuple_GET_ITEM(site, 2);
    else if (!swallow_error()) return NULL; /* counted; the call is still popped */
    int32_t carry = site != NULL ? carried(site, k_site) : -1;
    if (Py_IS_TYPE(args[0], &CallToken_Type))
        return exit_token(args[0], args[1], Py_None, s_normal, ast, carry,
                          site != NULL ? k_site : -1);
    return exit_call(args[0], args[1], Py_None, s_normal, ast, carry);
}

/* _pure.write_event(buffer, event_type, data, *, call_id=None, parent_id=None,
 * correlation_id=None, ast_node_id=None) -> bool: stamp one event now and write it. */
PyObject *
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
    int none;
    PyObject *cell = get_cell(&none);
    if (cell == NULL && !none) return NULL;
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


/* report_site_return(call_id, return_value, site) -> return_value: report_site_exit for
 * `return report_site_return(call, value, site)`, the exit reported on the return path
 * itself (nothing reported when call_id is None). */
PyObject *
report_site_return(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = report_site_exit(m, args, nargs);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    return Py_NewRef(args[1]);
}
