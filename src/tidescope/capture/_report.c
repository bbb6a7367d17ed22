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
    if (frame == NULL || set_top(cell, cell_owned(cell, tstate), frame, task, tstate) < 0)
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
            fill_common(s, eid, ts, thread, task, corr, parent, call_id,
                        site >= 0 ? Py_None : astv, NULL, 0);
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
    return exit_call(args[0], args[1], Py_None, s_normal, ast,
                     site != NULL ? carried(site, k_site) : -1);
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
