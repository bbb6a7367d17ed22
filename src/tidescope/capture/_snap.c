/* Snapshots on the report path: the flat copies and references the C core takes itself,
 * redaction of secret names, and the calls into _pure for everything else. */
#include "_state.h"
#include "_snap.h"

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
PyObject *g_secret_names = NULL;     /* _redact.secret_names */
PyTypeObject *g_redacted_type = NULL; /* events.Redacted */
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
PyObject *
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


/* _pure._snap_args: new reference to the snapshot, *arity set (-1 for None). */
PyObject *
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

/* snap_args of a dict made for this report that nothing else holds (a site's arguments):
 * the dict itself when the copy would be equal to it (scalars only), so the snapshot of a
 * call's arguments is one allocation, as the call site's dict was. */
PyObject *
snap_own_args(PyObject *d, Py_ssize_t *arity)
{
    *arity = PyDict_GET_SIZE(d);
    PyObject *flat = NULL;
    if (g_depth >= 1) {
        IntLimit il = {g_int_limit, 0};
        int nested = 0;
        Py_ssize_t cost = container_cost(d, g_max_string, &il, g_max_items, g_depth, &nested);
        if (cost >= 0 && cost <= g_budget) flat = nested ? copy_flat(d, g_depth) : Py_NewRef(d);
    }
    if (flat != NULL || PyErr_Occurred()) return flat;
    return call_snap(g_snap, d);
}

/* _pure._snap_value: a return value kept, copied flat, or snapshotted. New reference. */
PyObject *
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
PyObject *
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

/* ref_args of a dict made for this report that nothing else holds (a site's arguments):
 * the items that are not kept as they are replaced in place, so the dict is the snapshot
 * (equal to ref_flat's copy of it) without a second one. */
PyObject *
ref_own_args(PyObject *d, Py_ssize_t *arity)
{
    enum { MAX_OWN = 32 };
    Py_ssize_t n = PyDict_GET_SIZE(d);
    if (n > MAX_OWN || n > g_max_items) return ref_args(d, arity);
    *arity = n;
    PyObject *keys[MAX_OWN], *got[MAX_OWN], *key, *val;
    IntLimit il = {g_int_limit, 0};
    Py_ssize_t cost = SMALL, pos = 0, k = 0;
    int fits = 1;
    while (PyDict_Next(d, &pos, &key, &val)) {
        if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) > g_max_string ||
            (is_secret_key(key) != 0 && Py_TYPE(val) != g_redacted_type)) {
            fits = 0;
            break;
        }
        cost += PyUnicode_GET_LENGTH(key) + SMALL;
        PyObject *c = ref_item(val, &cost, &il);
        if (c == NULL) {
            fits = 0;
            break;
        }
        keys[k] = key;
        got[k++] = c;
    }
    fits = fits && cost <= g_budget;
    for (Py_ssize_t j = 0; j < k; j++) {
        if (fits && PyDict_SetItem(d, keys[j], got[j]) < 0) fits = 0;
        Py_DECREF(got[j]);
    }
    if (fits) return Py_NewRef(d);
    if (PyErr_Occurred()) return NULL;
    return call_snap_ref(d, 0);
}

/* A site call's arguments as its entry's slot keeps them (D_ARGS): the values of the
 * `names` (exact str, at most SITE_ARGS), each kept as the args dict's snapshot would keep
 * it (a scalar, or under "ref" an ObjectRef), a small int raw (bit k of *raw). 1 with the
 * references in out[]; 0 when the dict's path must decide (a secret or long name, a value
 * kept otherwise, over the budget), nothing held; -1 on an error. */
int
site_args(PyObject *const *names, PyObject *const *vals, Py_ssize_t n, int by_ref, Val *out,
          uint8_t *raw)
{
    if (n > SITE_ARGS || n > g_max_items || (!by_ref && g_depth < 1)) return 0;
    IntLimit il = {g_int_limit, 0};
    Py_ssize_t cost = SMALL, k;
    *raw = 0;
    for (k = 0; k < n; k++) {
        PyObject *key = names[k], *v = vals[k];
        if (PyUnicode_GET_LENGTH(key) > g_max_string || is_secret_key(key) != 0) break;
        cost += PyUnicode_GET_LENGTH(key) + SMALL;
        PyTypeObject *t = Py_TYPE(v);
        if (t == &PyLong_Type) {
            int64_t x;
            if (!small_long(v, &x)) break;
            unsigned long long mag = x < 0 ? (unsigned long long)(-x) : (unsigned long long)x;
            if (mag >= g_int_limit) break;
            cost += SMALL;
            out[k].i = x;
            *raw |= (uint8_t)(1 << k);
            continue;
        }
        PyObject *c = NULL;
        if (by_ref) {
            c = ref_item(v, &cost, &il);
        }
        else if (t == &PyUnicode_Type) {
            if (PyUnicode_GET_LENGTH(v) <= g_max_string) {
                cost += PyUnicode_GET_LENGTH(v) + SMALL;
                c = Py_NewRef(v);
            }
        }
        else if (keep_type(t)) {
            cost += SMALL;
            c = Py_NewRef(v);
        }
        if (c == NULL) break;
        out[k].o = c;
    }
    if (k == n && cost <= g_budget) return 1;
    for (Py_ssize_t j = 0; j < k && j < n; j++)
        if (!(*raw & (1 << j))) Py_DECREF(out[j].o);
    *raw = 0;
    return PyErr_Occurred() ? -1 : 0;
}

/* _pure._ref_value: a return value under the "ref" policy. New reference. */
PyObject *
ref_value(PyObject *v)
{
    int r = small_value(v);
    if (r < 0) return NULL;
    if (r) return Py_NewRef(v);
    return call_snap_ref(v, 1);
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
PyObject *
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
PyObject *
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

/* What Snapper.payload's flat copy of `data` charges, or -1 when the snapshot might cut
 * something (the copy is then not taken). Runs no Python code, sets no error. */
static Py_ssize_t
flat_payload_cost(PyObject *data, Py_ssize_t strlen, const IntLimit *il, Py_ssize_t items,
                  Py_ssize_t budget, Py_ssize_t depth)
{
    if (!PyDict_CheckExact(data) || PyDict_GET_SIZE(data) > items) return -1;
    Py_ssize_t pos = 0, cost = 0;
    PyObject *k, *v;
    while (PyDict_Next(data, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) return -1;
        cost += PyUnicode_GET_LENGTH(k) + SMALL;
        PyTypeObject *t = Py_TYPE(v);
        if (t == &PyUnicode_Type) {
            if (PyUnicode_GET_LENGTH(v) > strlen) return -1;
            cost += PyUnicode_GET_LENGTH(v) + SMALL;
        }
        else if (t == &PyLong_Type) {
            if (!int_within(v, il)) return -1;
            cost += SMALL;
        }
        else if (keep_type(t)) {
            cost += SMALL;
        }
        else if (is_nested(t) && depth >= 1) {
            int nested = 0;
            Py_ssize_t c = container_cost(v, strlen, il, items, depth, &nested);
            if (c < 0) return -1;
            cost += c;
        }
        else {
            return -1;
        }
    }
    return cost > budget ? -1 : cost;
}

/* flat_payload(data, strlen, int_limit, items, budget, depth) -> (dict, cost) | None */
PyObject *
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
    Py_ssize_t cost = flat_payload_cost(args[0], strlen, &il, items, budget, depth);
    if (cost < 0) Py_RETURN_NONE;
    /* nothing is cut: copy (the top level is not a nesting level: one more to open) */
    PyObject *out = copy_flat(args[0], depth < PY_SSIZE_T_MAX ? depth + 1 : depth);
    if (out == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(Nn)", out, cost);
}

/* An event's data as a fresh Snapper(limits).payload(data) gives it when its flat copy
 * does (the limits sync() set; an int past 64 bits is left to that path). `data` and `own`
 * (a dict value of data's, or NULL) were made by the caller for this event and nothing
 * else holds them: they are kept, the containers in them copied, so the result is data
 * itself, equal to what flat_payload's copy would be. New reference, or Py_None when the
 * full snapshot is needed (data may then hold copies in place of equal containers), or
 * NULL with an error set. */
PyObject *
payload_flat(PyObject *data, PyObject *own)
{
    IntLimit il = {g_int_limit, 0};
    Py_ssize_t depth = g_depth;
    if (flat_payload_cost(data, g_max_string, &il, g_max_items, g_budget, depth) < 0)
        Py_RETURN_NONE;
    Py_ssize_t pos = 0;
    PyObject *k, *a;
    while (PyDict_Next(data, &pos, &k, &a)) {
        if (!is_nested(Py_TYPE(a))) continue;
        if (a != own) { /* copy_flat(data, depth + 1) copies it as copy_item(a, depth + 1) */
            PyObject *c = copy_item(a, depth + 1);
            int bad = c == NULL || PyDict_SetItem(data, k, c) < 0; /* k is there: no resize */
            Py_XDECREF(c);
            if (bad) goto cut;
            continue;
        }
        Py_ssize_t pos2 = 0;
        PyObject *k2, *b;
        while (PyDict_Next(own, &pos2, &k2, &b)) { /* as copy_flat(own, depth) does */
            if (!is_nested(Py_TYPE(b))) continue;
            PyObject *c = copy_item(b, depth);
            int bad = c == NULL || PyDict_SetItem(own, k2, c) < 0;
            Py_XDECREF(c);
            if (bad) goto cut;
        }
    }
    return Py_NewRef(data);
cut:
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

