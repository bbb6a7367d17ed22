/* The bounded deep snapshot's C twin: _snapshot.Snapper.snap, step for step, for ints,
 * strs, bytes, the kept types, exact lists, tuples and dicts, enum members and plain
 * objects (their __dict__ and __slots__, read without running their code). Everything
 * else (sets, deques, subclasses of builtins, namedtuples, exceptions, Decimal, paths, a
 * header pair (b"authorization", ...)) is handed back to the Snapper's own method with
 * the budget and the path in step, so both cores give identical snapshots (tested by
 * tests/capture/test_deep.py). The Snapper's budget is read once and written back at the
 * end and around each call back; the containers on the path live in its `path` set.
 *
 * What it remembers per type, and why that equals the pure walk: the type's name
 * (module.qualname, checked against the very objects it came from each time) and its
 * kind (enum / plain / callable / other, checked against the type's __mro__ tuple: only
 * a new MRO changes an issubclass answer for these classes). Slot names come from
 * _snapshot._SLOT_NAMES, the pure core's own cache. */
#include "_deep.h"
#include <structmember.h>

#define SMALL 8
#define MEMO_MAX 4096
#define STACK 64 /* path entries kept in C (2 a level: an object and its dict) */

static PyObject *g_trunc, *g_osnap, *g_enum, *g_decimal, *g_fraction, *g_purepath, *g_deque;
static PyObject *g_callables, *g_type_name, *g_callable_label, *g_secret_names, *g_secret_name;
static PyObject *g_guarded, *g_slot_names, *g_slot_names_fn;
static PyObject **g_keep;
static Py_ssize_t g_nkeep, off_trunc[4], off_osnap[4];
static PyObject *s_budget, *s_depth_limit, *s_items, *s_strlen, *s_int_limit, *s_path,
    *s_repr_objects, *s_other, *s_container, *s_repr, *s_bit_length, *s_dict_attr,
    *s_name_attr, *s_module, *n_list, *n_tuple, *n_dict, *n_int, *n_str, *n_attrs, *r_depth,
    *r_cycle, *r_length, *r_budget, *r_error, *r_duplicate, *r_unhashable, *s_truncated_key;

enum { K_PLAIN = 0, K_CALLABLE = 1, K_ENUM = 2, K_OTHER = 3 };

typedef struct {
    PyObject *snapper, *path, *int_limit;
    Py_ssize_t budget, depth_limit, items, strlen;
    unsigned long long lim;
    int lim_big, repr;
    int nstack;
    PyObject *stack[STACK];
} S;

static PyObject *snap(S *s, PyObject *v, Py_ssize_t depth);
static int export_path(S *s);
static void unexport_path(S *s);

/* --------------------------------------------------------------------------------- */
/* markers, built as their __init__ would (their slots set, nothing else runs)       */

/* An instance of a marker class with its four slots set (all four stolen) */
static PyObject *
make(PyObject *cls, const Py_ssize_t *off, PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    PyObject *items[4] = {a, b, c, d};
    PyTypeObject *t = (PyTypeObject *)cls;
    PyObject *o = t->tp_alloc(t, 0);
    for (int k = 0; k < 4; k++) {
        if (o == NULL) Py_DECREF(items[k]);
        else *(PyObject **)((char *)o + off[k]) = items[k];
    }
    return o;
}

/* Truncated(name, size, reason, kept): kept stolen (NULL: None) */
static PyObject *
cut(PyObject *name, Py_ssize_t size, PyObject *reason, PyObject *kept)
{
    PyObject *n = PyLong_FromSsize_t(size);
    if (n == NULL) {
        Py_XDECREF(kept);
        return NULL;
    }
    return make(g_trunc, off_trunc, Py_NewRef(name), n, Py_NewRef(reason),
                kept ? kept : Py_NewRef(Py_None));
}

/* --------------------------------------------------------------------------------- */
/* per-type answers                                                                   */

static PyObject *
type_dict(PyTypeObject *t) /* new reference */
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyType_GetDict(t); /* a static builtin type keeps it in the interpreter */
#else
    return Py_XNewRef(t->tp_dict);
#endif
}

/* What is remembered of a type: its kind (which branch of Snapper._other it takes) and
 * its name, each valid while the objects they were made of are the type's own. */
typedef struct {
    PyTypeObject *t;
    PyObject *mro, *mod, *qual, *base, *name;
    int kind;
    unsigned int tag; /* the type's version tag when filled in (0: none) */
} TypeHit;
#define TYPE_SLOTS 512
static TypeHit g_types[TYPE_SLOTS];

static void
forget_types(void)
{
    for (int k = 0; k < TYPE_SLOTS; k++) {
        TypeHit *h = &g_types[k];
        Py_CLEAR(h->t);
        Py_CLEAR(h->mro);
        Py_CLEAR(h->mod);
        Py_CLEAR(h->qual);
        Py_CLEAR(h->base);
        Py_CLEAR(h->name);
    }
}

static int
subclass(PyTypeObject *t, PyObject *cls)
{
    return PyObject_IsSubclass((PyObject *)t, cls);
}

/* Which branch of Snapper._other a type takes: K_ENUM, K_PLAIN, K_CALLABLE (_object with
 * a label) or K_OTHER (handed back); -1 error. */
static int
kind_of(PyTypeObject *t)
{
    int k, r;
    static PyTypeObject *const builtins[] = {&PyUnicode_Type, &PyLong_Type, &PyFloat_Type,
                                             &PyTuple_Type, &PyDict_Type, &PyList_Type,
                                             &PySet_Type, &PyFrozenSet_Type, NULL};
    if ((r = subclass(t, g_enum)) != 0) return r < 0 ? -1 : K_ENUM;
    if ((PyObject *)t == g_decimal || (PyObject *)t == g_fraction) return K_OTHER;
    if ((r = subclass(t, g_purepath)) != 0) return r < 0 ? -1 : K_OTHER;
    for (int j = 0; builtins[j]; j++)
        if (PyType_IsSubtype(t, builtins[j])) return K_OTHER;
    if (PyType_IsSubtype(t, (PyTypeObject *)PyExc_BaseException)) return K_OTHER;
    if ((r = subclass(t, g_callables)) < 0) return -1;
    k = r ? K_CALLABLE : K_PLAIN;
    return k;
}

/* The remembered answers for t (borrowed), filled in on a miss; NULL on error. The name
 * is _snapshot.type_name(t): module.qualname, or its __name__ when __module__ is not a
 * str; checked against those objects. The kind: issubclass answers, which only a new
 * __mro__ can change for these classes. */
static TypeHit *
type_info(PyTypeObject *t)
{
    TypeHit *h = &g_types[((uintptr_t)t >> 4) % TYPE_SLOTS];
    /* the same version tag: nothing in the type's dict (its __module__) or MRO changed */
    int tagged = (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && t->tp_version_tag != 0;
    if (h->t == t && tagged && h->tag == t->tp_version_tag) {
        if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE)) return h;
        PyHeapTypeObject *ht = (PyHeapTypeObject *)t;
        if (h->qual == ht->ht_qualname && h->base == ht->ht_name) return h;
    }
    PyObject *mod = Py_None, *qual = Py_None, *base = Py_None;
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        PyHeapTypeObject *h = (PyHeapTypeObject *)t;
        mod = t->tp_dict ? PyDict_GetItemWithError(t->tp_dict, s_module) : NULL;
        if (mod == NULL) {
            if (PyErr_Occurred()) return NULL;
            mod = Py_None;
        }
        qual = h->ht_qualname;
        base = h->ht_name;
    }
    PyObject *mro = t->tp_mro ? t->tp_mro : Py_None;
    if (h->t == t && h->mro == mro && h->mod == mod && h->qual == qual && h->base == base) {
        h->tag = tagged ? t->tp_version_tag : 0;
        return h;
    }
    int kind = kind_of(t);
    if (kind < 0) return NULL;
    PyObject *name = PyObject_CallOneArg(g_type_name, (PyObject *)t);
    if (name == NULL) return NULL;
    Py_XSETREF(h->t, (PyTypeObject *)Py_NewRef(t));
    Py_XSETREF(h->mro, Py_NewRef(mro));
    Py_XSETREF(h->mod, Py_NewRef(mod));
    Py_XSETREF(h->qual, Py_NewRef(qual));
    Py_XSETREF(h->base, Py_NewRef(base));
    Py_XSETREF(h->name, name);
    h->kind = kind;
    h->tag = tagged ? t->tp_version_tag : 0;
    return h;
}

static PyObject *
type_name(PyTypeObject *t) /* new reference */
{
    TypeHit *h = type_info(t);
    return h ? Py_NewRef(h->name) : NULL;
}

static inline int
keep_type(PyTypeObject *t)
{
    for (Py_ssize_t k = 0; k < g_nkeep; k++)
        if ((PyObject *)t == g_keep[k]) return 1;
    return 0;
}

/* _redact.secret_name(name) for an exact str: -1 error. The answers for the names last
 * seen are kept here, by their hash (deep_init() forgets them: _redact.configure). */
#define NAME_SLOTS 256
static PyObject *g_seen[NAME_SLOTS];
static char g_seen_secret[NAME_SLOTS];

static void
forget_secrets(void)
{
    for (int k = 0; k < NAME_SLOTS; k++) Py_CLEAR(g_seen[k]);
}

static int
secret(PyObject *name)
{
    Py_hash_t hash = PyObject_Hash(name);
    if (hash == -1) return -1;
    size_t i = (size_t)hash % NAME_SLOTS;
    if (g_seen[i] == name) return g_seen_secret[i];
    PyObject *r = PyDict_GetItemWithError(g_secret_names, name);
    if (r != NULL) Py_INCREF(r);
    else {
        if (PyErr_Occurred()) return -1;
        r = PyObject_CallOneArg(g_secret_name, name);
        if (r == NULL) return -1;
    }
    int b = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (b < 0) return -1;
    Py_XSETREF(g_seen[i], Py_NewRef(name));
    g_seen_secret[i] = (char)b;
    return b;
}

/* --------------------------------------------------------------------------------- */
/* the Snapper's state                                                                */

static int
get_budget(S *s)
{
    PyObject *b = PyObject_GetAttr(s->snapper, s_budget);
    if (b == NULL) return -1;
    s->budget = PyLong_AsSsize_t(b);
    Py_DECREF(b);
    return s->budget == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
put_budget(S *s)
{
    PyObject *b = PyLong_FromSsize_t(s->budget);
    if (b == NULL) return -1;
    int r = PyObject_SetAttr(s->snapper, s_budget, b);
    Py_DECREF(b);
    return r;
}

/* snapper.<meth>(v, t, depth), the budget in step around it */
static PyObject *
call_back(S *s, PyObject *meth, PyObject *v, Py_ssize_t depth)
{
    if (put_budget(s) < 0) return NULL;
    PyObject *d = PyLong_FromSsize_t(depth);
    if (d == NULL) return NULL;
    if (export_path(s) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    PyObject *a[4] = {s->snapper, v, (PyObject *)Py_TYPE(v), d};
    PyObject *r = PyObject_VectorcallMethod(meth, a, 4, NULL);
    unexport_path(s);
    Py_DECREF(d);
    if (r != NULL && get_budget(s) < 0) Py_CLEAR(r);
    return r;
}

/* The path: the containers and objects being copied above this point. Ours are kept in
 * s->stack; the Snapper's `path` set holds those of its own frames (and ours, while it
 * runs a method for us: export_path). */
static int
on_path(S *s, PyObject *v)
{
    for (int k = 0; k < s->nstack; k++)
        if (s->stack[k] == v) return 1;
    if (PySet_GET_SIZE(s->path) == 0) return 0;
    PyObject *key = PyLong_FromVoidPtr(v);
    if (key == NULL) return -1;
    int r = PySet_Contains(s->path, key);
    Py_DECREF(key);
    return r;
}

/* 0 pushed on the stack, 1 into the set (the stack is full), -1 error */
static int
path_push(S *s, PyObject *v)
{
    if (s->nstack < STACK) {
        s->stack[s->nstack++] = v;
        return 0;
    }
    PyObject *key = PyLong_FromVoidPtr(v);
    if (key == NULL) return -1;
    int r = PySet_Add(s->path, key);
    Py_DECREF(key);
    return r < 0 ? -1 : 1;
}

static void
discard_id(S *s, PyObject *v)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *key = PyLong_FromVoidPtr(v);
    if (key == NULL || PySet_Discard(s->path, key) < 0) PyErr_Clear();
    Py_XDECREF(key);
    PyErr_Restore(type, value, tb);
}

static void
path_pop(S *s, PyObject *v, int where)
{
    if (where == 0) s->nstack--;
    else discard_id(s, v);
}

static int
export_path(S *s)
{
    for (int k = 0; k < s->nstack; k++) {
        PyObject *key = PyLong_FromVoidPtr(s->stack[k]);
        int r = key == NULL ? -1 : PySet_Add(s->path, key);
        Py_XDECREF(key);
        if (r < 0) {
            while (k--) discard_id(s, s->stack[k]);
            return -1;
        }
    }
    return 0;
}

static void
unexport_path(S *s)
{
    for (int k = 0; k < s->nstack; k++) discard_id(s, s->stack[k]);
}

/* 1 within +-int_limit, 0 not, -1 error */
static int
int_ok(S *s, PyObject *v)
{
    int of;
    long long x = PyLong_AsLongLongAndOverflow(v, &of);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (!of && x != LLONG_MIN) {
        unsigned long long mag = x < 0 ? (unsigned long long)(-x) : (unsigned long long)x;
        return s->lim_big || mag < s->lim;
    }
    int r = PyObject_RichCompareBool(v, s->int_limit, Py_LT);
    if (r <= 0) return r;
    PyObject *neg = PyNumber_Negative(s->int_limit);
    if (neg == NULL) return -1;
    r = PyObject_RichCompareBool(neg, v, Py_LT);
    Py_DECREF(neg);
    return r;
}

/* --------------------------------------------------------------------------------- */
/* the walk                                                                           */

/* A RuntimeError inside a container ends it as "error" (another thread resized it). */
static int
runtime_error(void)
{
    if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) return 0;
    PyErr_Clear();
    return 1;
}

static PyObject *
type_short_name(PyTypeObject *t) /* t.__name__, as Python reads it */
{
    return PyObject_GetAttr((PyObject *)t, s_name_attr);
}

/* One dict item into out: 0 done, 1 a RuntimeError ended the dict, -1 error. */
static int
dict_item(S *s, PyObject *out, PyObject *k, PyObject *item, Py_ssize_t done, Py_ssize_t d,
          int *plain)
{
    PyObject *sk = snap(s, k, d);
    if (sk == NULL) return runtime_error() ? 1 : -1;
    /* keys kept as they are (exact str) so far: distinct keys of one dict, no duplicate */
    int has = 0;
    if (!(*plain && sk == k && PyUnicode_CheckExact(k))) {
        *plain = 0;
        has = PyDict_Contains(out, sk);
    }
    if (has < 0) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) goto fail;
        PyErr_Clear();
        PyObject *tn = type_name(Py_TYPE(k));
        if (tn == NULL) goto fail;
        sk = cut(tn, done, r_unhashable, sk);
        Py_DECREF(tn);
        if (sk == NULL) return -1;
    }
    else if (has) {
        PyObject *kind = Py_TYPE(sk) == (PyTypeObject *)g_trunc
                             ? Py_NewRef(*(PyObject **)((char *)sk + off_trunc[0]))
                             : type_short_name(Py_TYPE(sk));
        if (kind == NULL) goto fail;
        PyObject *pair = Py_BuildValue("(On)", sk, done);
        Py_DECREF(sk);
        sk = pair ? cut(kind, 0, r_duplicate, pair) : NULL;
        Py_DECREF(kind);
        if (sk == NULL) return -1;
    }
    int sec = PyUnicode_CheckExact(sk) ? secret(sk) : 0;
    if (sec < 0) goto fail;
    PyObject *val;
    if (sec) {
        PyObject *g = PyObject_CallFunctionObjArgs(g_guarded, sk, item, NULL);
        val = g ? snap(s, g, d) : NULL;
        Py_XDECREF(g);
    }
    else {
        val = snap(s, item, d);
    }
    if (val == NULL) {
        Py_DECREF(sk);
        return runtime_error() ? 1 : -1;
    }
    int r = PyDict_SetItem(out, sk, val);
    Py_DECREF(sk);
    Py_DECREF(val);
    return r;
fail:
    Py_DECREF(sk);
    return -1;
}

/* Snapper._container for an exact list, tuple or dict (own: a dict of attributes we just
 * built, which no path can hold). */
static PyObject *
container(S *s, PyObject *v, PyTypeObject *t, Py_ssize_t depth, int own)
{
    int is_dict = t == &PyDict_Type;
    PyObject *name = is_dict ? n_dict : t == &PyList_Type ? n_list : n_tuple;
    Py_ssize_t n = is_dict ? PyDict_GET_SIZE(v) : Py_SIZE(v);
    if (!is_dict && n == 2 && PyBytes_CheckExact(t == &PyList_Type ? PyList_GET_ITEM(v, 0)
                                                                    : PyTuple_GET_ITEM(v, 0)))
        return call_back(s, s_container, v, depth); /* maybe a secret header pair */
    if (depth >= s->depth_limit) {
        s->budget -= SMALL;
        return cut(name, n, r_depth, NULL);
    }
    int where = -1; /* own: not on the path */
    if (!own) {
        int on = on_path(s, v);
        if (on < 0) return NULL;
        if (on) return cut(name, n, r_cycle, NULL);
        if ((where = path_push(s, v)) < 0) return NULL;
    }
    if (Py_EnterRecursiveCall(" in tidescope's snapshot")) {
        if (where >= 0) path_pop(s, v, where);
        return NULL;
    }
    s->budget -= SMALL;
    Py_INCREF(v);
    PyObject *out = is_dict ? PyDict_New() : PyList_New(0), *reason = NULL;
    Py_ssize_t done = 0, d = depth + 1;
    if (out == NULL) goto fail;
    if (is_dict) {
        Py_ssize_t pos = 0;
        PyObject *k, *item;
        int plain = 1;
        for (;;) {
            if (PyDict_GET_SIZE(v) != n) { /* dict.items() raises: changed size */
                reason = r_error;
                break;
            }
            if (!PyDict_Next(v, &pos, &k, &item)) break;
            if (done >= s->items || s->budget < 0) {
                reason = done >= s->items ? r_length : r_budget;
                break;
            }
            Py_INCREF(k);
            Py_INCREF(item);
            int r = dict_item(s, out, k, item, done, d, &plain);
            Py_DECREF(k);
            Py_DECREF(item);
            if (r < 0) goto fail;
            if (r > 0) {
                reason = r_error;
                break;
            }
            done++;
        }
    }
    else {
        for (Py_ssize_t i = 0;; i++) {
            PyObject *item;
            if (t == &PyList_Type) {
                if (i >= PyList_GET_SIZE(v)) break;
                item = PyList_GET_ITEM(v, i);
            }
            else {
                if (i >= n) break;
                item = PyTuple_GET_ITEM(v, i);
            }
            if (done >= s->items || s->budget < 0) {
                reason = done >= s->items ? r_length : r_budget;
                break;
            }
            Py_INCREF(item);
            PyObject *c = snap(s, item, d);
            Py_DECREF(item);
            if (c == NULL) {
                if (!runtime_error()) goto fail;
                reason = r_error;
                break;
            }
            int r = PyList_Append(out, c);
            Py_DECREF(c);
            if (r < 0) goto fail;
            done++;
        }
        if (t == &PyTuple_Type) Py_SETREF(out, PyList_AsTuple(out));
        if (out == NULL) goto fail;
    }
    Py_LeaveRecursiveCall();
    Py_DECREF(v);
    if (where >= 0) path_pop(s, v, where);
    if (reason == NULL && done < n) reason = r_error; /* it shrank while we read */
    return reason ? cut(name, n, reason, out) : out;
fail:
    Py_LeaveRecursiveCall();
    Py_DECREF(v);
    Py_XDECREF(out);
    if (where >= 0) path_pop(s, v, where);
    return NULL;
}

/* _snapshot._read_attrs: a new dict, None, or Truncated("attrs", 0, "error") */
static PyObject *
read_attrs(PyObject *v, PyTypeObject *t)
{
    PyObject *mro = t->tp_mro, *d = NULL, *attrs = NULL, *names = NULL;
    int has_d = 0;
    if (mro == NULL || !PyTuple_Check(mro)) {
        PyErr_SetString(PyExc_TypeError, "no __mro__");
        goto error;
    }
    /* the first class along the MRO whose dict has "__dict__": the type's own lookup
     * (its method cache), as the pure walk over the class dicts */
    PyObject *desc = _PyType_Lookup(t, s_dict_attr);
    if (desc != NULL && Py_IS_TYPE(desc, &PyGetSetDescr_Type)) {
        Py_INCREF(desc);
        d = Py_TYPE(desc)->tp_descr_get(desc, v, (PyObject *)t);
        Py_DECREF(desc);
        if (d == NULL) goto error;
        has_d = d != Py_None;
    }
    attrs = d != NULL && PyDict_CheckExact(d) ? PyDict_Copy(d) : PyDict_New();
    if (attrs == NULL) goto error;
    names = PyDict_GetItemWithError(g_slot_names, (PyObject *)t);
    if (names != NULL) Py_INCREF(names);
    else {
        if (PyErr_Occurred()) goto error;
        names = PyObject_CallOneArg(g_slot_names_fn, mro);
        if (names == NULL) goto error;
        if (PyDict_GET_SIZE(g_slot_names) < MEMO_MAX &&
            PyDict_SetItem(g_slot_names, (PyObject *)t, names) < 0)
            goto error;
    }
    if (!PyTuple_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "slot names");
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        /* the first member descriptor named so along the MRO: the type's own lookup
         * finds it when nothing else of that name comes first */
        PyObject *desc = PyUnicode_CheckExact(name) ? _PyType_Lookup(t, name) : NULL;
        if (desc != NULL && Py_IS_TYPE(desc, &PyMemberDescr_Type)) Py_INCREF(desc);
        else desc = NULL;
        for (Py_ssize_t j = 0; desc == NULL && j < PyTuple_GET_SIZE(mro); j++) {
            PyObject *td = type_dict((PyTypeObject *)PyTuple_GET_ITEM(mro, j));
            if (td == NULL) goto error;
            desc = PyDict_GetItemWithError(td, name);
            if (desc != NULL && !Py_IS_TYPE(desc, &PyMemberDescr_Type)) desc = NULL;
            Py_XINCREF(desc);
            Py_DECREF(td);
            if (PyErr_Occurred()) goto error;
        }
        if (desc == NULL) continue;
        PyObject *x = Py_TYPE(desc)->tp_descr_get(desc, v, (PyObject *)t);
        Py_DECREF(desc);
        if (x == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) goto error;
            PyErr_Clear(); /* unset slot */
        }
        else {
            int r = PyDict_SetItem(attrs, name, x);
            Py_DECREF(x);
            if (r < 0) goto error;
        }
    }
    int none = !has_d && PyTuple_GET_SIZE(names) == 0;
    Py_XDECREF(d);
    Py_DECREF(names);
    if (none) {
        Py_DECREF(attrs);
        Py_RETURN_NONE;
    }
    return attrs;
error:
    Py_XDECREF(d);
    Py_XDECREF(attrs);
    Py_XDECREF(names);
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
    PyErr_Clear();
    return cut(n_attrs, 0, r_error, NULL);
}

/* Snapper._object(v, t, depth, None) */
static PyObject *
object(S *s, PyObject *v, PyTypeObject *t, Py_ssize_t depth, int callable)
{
    PyObject *name = type_name(t), *text = NULL, *attrs = NULL, *oid = NULL;
    if (name == NULL) return NULL; /* (a hit: the caller just asked) */
    s->budget -= PyUnicode_GET_LENGTH(name) + SMALL;
    if (callable) text = PyObject_CallOneArg(g_callable_label, v);
    else if (s->repr) {
        if (put_budget(s) < 0) goto fail;
        text = PyObject_CallMethodOneArg(s->snapper, s_repr, v);
    }
    else text = Py_NewRef(Py_None);
    if (text == NULL) goto fail;
    if (depth >= s->depth_limit) attrs = cut(n_attrs, 0, r_depth, NULL);
    else if (callable) attrs = Py_NewRef(Py_None);
    else {
        PyObject *raw = read_attrs(v, t);
        if (raw == NULL || !PyDict_CheckExact(raw)) attrs = raw;
        else {
            int on = on_path(s, v), where;
            if (on > 0) attrs = cut(n_attrs, PyDict_GET_SIZE(raw), r_cycle, NULL);
            else if (on == 0 && (where = path_push(s, v)) >= 0) {
                attrs = container(s, raw, &PyDict_Type, depth, 1);
                path_pop(s, v, where);
            }
            Py_DECREF(raw);
        }
    }
    if (attrs == NULL || (oid = PyLong_FromVoidPtr(v)) == NULL) goto fail;
    return make(g_osnap, off_osnap, name, oid, attrs, text);
fail:
    Py_DECREF(name);
    Py_XDECREF(text);
    Py_XDECREF(attrs);
    return NULL;
}

/* Snapper._over_budget */
static PyObject *
over_budget(PyObject *v, PyTypeObject *t)
{
    if (t == &PyList_Type || t == &PyTuple_Type || t == &PyDict_Type || t == &PySet_Type ||
        t == &PyFrozenSet_Type || (PyObject *)t == g_deque || t == &PyBytes_Type ||
        t == &PyByteArray_Type) {
        Py_ssize_t n = PyObject_Size(v);
        PyObject *name = n < 0 ? NULL : type_short_name(t);
        if (name == NULL) return NULL;
        PyObject *r = cut(name, n, r_budget, NULL);
        Py_DECREF(name);
        return r;
    }
    PyObject *name = type_name(t);
    if (name == NULL) return NULL;
    PyObject *r = cut(name, 0, r_budget, NULL);
    Py_DECREF(name);
    return r;
}

/* Snapper.snap (refs off) */
static PyObject *
snap(S *s, PyObject *v, Py_ssize_t depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type) {
        int ok = int_ok(s, v);
        if (ok < 0) return NULL;
        if (ok) {
            s->budget -= SMALL;
            return Py_NewRef(v);
        }
        PyObject *bits = PyObject_CallMethodNoArgs(v, s_bit_length);
        if (bits == NULL) return NULL;
        Py_ssize_t b = PyLong_AsSsize_t(bits);
        Py_DECREF(bits);
        if (b == -1 && PyErr_Occurred()) return NULL;
        return cut(n_int, b, r_length, NULL);
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        if (n <= s->strlen) {
            s->budget -= n + SMALL;
            if (s->budget < 0) return cut(n_str, n, r_budget, NULL);
            return Py_NewRef(v);
        }
        s->budget -= s->strlen + SMALL;
        PyObject *head = PyUnicode_Substring(v, 0, s->strlen);
        return head ? cut(n_str, n, r_length, head) : NULL;
    }
    if (v == Py_None || t == &PyBool_Type || t == &PyFloat_Type || keep_type(t)) {
        s->budget -= SMALL; /* (None, bool and float are in KEEP_TYPES) */
        return Py_NewRef(v);
    }
    if (s->budget < 0) return over_budget(v, t);
    if (t == &PyList_Type || t == &PyTuple_Type || t == &PyDict_Type)
        return container(s, v, t, depth, 0);
    if (t == &PySet_Type || t == &PyFrozenSet_Type || (PyObject *)t == g_deque)
        return call_back(s, s_container, v, depth);
    if (t == &PyBytes_Type || t == &PyByteArray_Type) {
        int b = t == &PyBytes_Type;
        Py_ssize_t n = b ? PyBytes_GET_SIZE(v) : PyByteArray_GET_SIZE(v);
        const char *p = b ? PyBytes_AS_STRING(v) : PyByteArray_AS_STRING(v);
        s->budget -= (n < s->strlen ? n : s->strlen) + SMALL;
        if (n <= s->strlen)
            return b ? Py_NewRef(v) : PyByteArray_FromStringAndSize(p, n);
        PyObject *head = PyBytes_FromStringAndSize(p, s->strlen);
        PyObject *name = head ? type_short_name(t) : NULL;
        if (name == NULL) {
            Py_XDECREF(head);
            return NULL;
        }
        PyObject *r = cut(name, n, r_length, head);
        Py_DECREF(name);
        return r;
    }
    TypeHit *h = type_info(t);
    if (h == NULL) return NULL;
    int kind = h->kind;
    if (kind == K_ENUM) {
        s->budget -= SMALL;
        return Py_NewRef(v);
    }
    if (kind == K_OTHER) return call_back(s, s_other, v, depth);
    return object(s, v, t, depth, kind == K_CALLABLE);
}

/* --------------------------------------------------------------------------------- */
/* entry points                                                                       */

static int
read_ssize(PyObject *o, PyObject *name, Py_ssize_t *out)
{
    PyObject *x = PyObject_GetAttr(o, name);
    if (x == NULL) return -1;
    *out = PyLong_AsSsize_t(x);
    Py_DECREF(x);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* Read a Snapper's state into s: 0, or -1 (s->path and s->int_limit are then released). */
static int
open_state(S *s, PyObject *snapper)
{
    s->snapper = snapper;
    s->nstack = 0;
    s->path = s->int_limit = NULL;
    if (g_trunc == NULL) {
        PyErr_SetString(PyExc_TypeError, "deep_init() was not called");
        return -1;
    }
    if (get_budget(s) < 0 || read_ssize(snapper, s_depth_limit, &s->depth_limit) < 0 ||
        read_ssize(snapper, s_items, &s->items) < 0 ||
        read_ssize(snapper, s_strlen, &s->strlen) < 0)
        return -1;
    s->path = PyObject_GetAttr(snapper, s_path);
    s->int_limit = PyObject_GetAttr(snapper, s_int_limit);
    PyObject *ro = PyObject_GetAttr(snapper, s_repr_objects);
    int repr = ro ? PyObject_IsTrue(ro) : -1;
    Py_XDECREF(ro);
    if (s->path == NULL || s->int_limit == NULL || repr < 0) goto fail;
    if (!PySet_Check(s->path) || !PyLong_Check(s->int_limit) || s->strlen < 0) {
        PyErr_SetString(PyExc_TypeError, "snap_deep: not a Snapper");
        goto fail;
    }
    s->repr = repr;
    int of;
    long long lim = PyLong_AsLongLongAndOverflow(s->int_limit, &of);
    if (lim == -1 && PyErr_Occurred()) goto fail;
    s->lim_big = of > 0;
    s->lim = of || lim < 0 ? 0 : (unsigned long long)lim;
    return 0;
fail:
    Py_CLEAR(s->path);
    Py_CLEAR(s->int_limit);
    return -1;
}

/* Write the budget back (when r, the result, is not NULL) and release s; returns r. */
static PyObject *
close_state(S *s, PyObject *r)
{
    if (r != NULL && put_budget(s) < 0) Py_CLEAR(r);
    Py_XDECREF(s->path);
    Py_XDECREF(s->int_limit);
    return r;
}

/* snap_deep(snapper, v, depth): Snapper.snap(v, depth) for a Snapper with refs off */
PyObject *
ts_snap_deep(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    S s;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "snap_deep(snapper, v, depth)");
        return NULL;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(args[2]);
    if ((depth == -1 && PyErr_Occurred()) || open_state(&s, args[0]) < 0) return NULL;
    return close_state(&s, snap(&s, args[1], depth));
}

/* payload_deep(snapper, data): the item loop of Snapper.payload for a dict whose keys
 * are all exact str; None (nothing done) for any other. */
PyObject *
ts_payload_deep(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    S s;
    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "payload_deep(snapper, dict)");
        return NULL;
    }
    PyObject *data = args[1], *k, *v, *out = NULL;
    Py_ssize_t pos = 0, n = PyDict_GET_SIZE(data), done = 0;
    while (PyDict_Next(data, &pos, &k, &v))
        if (!PyUnicode_CheckExact(k)) Py_RETURN_NONE;
    if (open_state(&s, args[0]) < 0) return NULL;
    Py_INCREF(data);
    if ((out = PyDict_New()) == NULL) goto fail;
    for (pos = 0; PyDict_Next(data, &pos, &k, &v); done++) {
        if (done >= s.items || s.budget < 0) {
            PyObject *mark = cut(n_dict, n, done >= s.items ? r_length : r_budget, NULL);
            if (mark == NULL || PyDict_SetItem(out, s_truncated_key, mark) < 0) {
                Py_XDECREF(mark);
                goto fail;
            }
            Py_DECREF(mark);
            break;
        }
        Py_INCREF(k);
        Py_INCREF(v);
        s.budget -= PyUnicode_GET_LENGTH(k) + SMALL;
        PyObject *c = snap(&s, v, 0);
        int r = c == NULL ? -1 : PyDict_SetItem(out, k, c);
        Py_XDECREF(c);
        Py_DECREF(k);
        Py_DECREF(v);
        if (r < 0) goto fail;
    }
    Py_DECREF(data);
    return close_state(&s, out);
fail:
    Py_DECREF(data);
    Py_XDECREF(out);
    return close_state(&s, NULL);
}

static int
slot_offsets(PyObject *cls, const char *const *fields, Py_ssize_t *off)
{
    for (int k = 0; k < 4; k++) {
        PyObject *descr = PyObject_GetAttrString(cls, fields[k]);
        if (descr == NULL) return -1;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) off[k] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s is not a slot", fields[k]);
            return -1;
        }
    }
    return 0;
}

/* deep_init(ns): the objects of _snapshot, _redact and events the walk needs */
PyObject *
ts_deep_init(PyObject *Py_UNUSED(m), PyObject *ns)
{
    static const char *keys[] = {"Truncated", "ObjectSnapshot", "Enum", "Decimal",
                                 "Fraction", "PurePath", "deque", "callable_kinds",
                                 "type_name", "callable_label", "secret_names", "secret_name",
                                 "guarded", "slot_names", "slot_names_fn", NULL};
    PyObject **slots[] = {&g_trunc, &g_osnap, &g_enum, &g_decimal, &g_fraction,
                          &g_purepath, &g_deque, &g_callables, &g_type_name,
                          &g_callable_label, &g_secret_names, &g_secret_name, &g_guarded,
                          &g_slot_names, &g_slot_names_fn};
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "deep_init() takes a dict");
        return NULL;
    }
    for (int k = 0; keys[k]; k++) {
        PyObject *v = PyDict_GetItemString(ns, keys[k]);
        if (v == NULL) {
            PyErr_Format(PyExc_KeyError, "deep_init(): missing %s", keys[k]);
            return NULL;
        }
        Py_XSETREF(*slots[k], Py_NewRef(v));
    }
    if (!PyDict_CheckExact(g_secret_names) || !PyDict_CheckExact(g_slot_names)) {
        PyErr_SetString(PyExc_TypeError, "deep_init(): secret_names and slot_names are dicts");
        return NULL;
    }
    static const char *const tf[4] = {"type_name", "size", "reason", "kept"};
    static const char *const of[4] = {"type_name", "object_id", "attrs", "repr"};
    if (slot_offsets(g_trunc, tf, off_trunc) < 0 || slot_offsets(g_osnap, of, off_osnap) < 0)
        return NULL;
    PyObject *keep = PyDict_GetItemString(ns, "keep_types");
    PyObject *seq = keep ? PySequence_Tuple(keep) : NULL;
    if (seq == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "deep_init(): keep_types");
        return NULL;
    }
    PyObject **arr = PyMem_Calloc((size_t)PyTuple_GET_SIZE(seq) + 1, sizeof(PyObject *));
    if (arr == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(seq); k++)
        arr[k] = Py_NewRef(PyTuple_GET_ITEM(seq, k));
    for (Py_ssize_t k = 0; k < g_nkeep; k++) Py_DECREF(g_keep[k]);
    PyMem_Free(g_keep);
    g_keep = arr;
    g_nkeep = PyTuple_GET_SIZE(seq);
    Py_DECREF(seq);
    forget_types();
    forget_secrets();
    struct { PyObject **slot; const char *s; } names[] = {
        {&s_budget, "budget"}, {&s_depth_limit, "depth_limit"}, {&s_items, "items"},
        {&s_strlen, "strlen"}, {&s_int_limit, "int_limit"}, {&s_path, "path"},
        {&s_repr_objects, "repr_objects"}, {&s_other, "_other"},
        {&s_container, "_container"}, {&s_repr, "_repr"}, {&s_bit_length, "bit_length"},
        {&s_dict_attr, "__dict__"}, {&s_name_attr, "__name__"}, {&s_module, "__module__"},
        {&n_list, "list"}, {&n_tuple, "tuple"}, {&n_dict, "dict"}, {&n_int, "int"},
        {&n_str, "str"}, {&n_attrs, "attrs"}, {&r_depth, "depth"}, {&r_cycle, "cycle"},
        {&r_length, "length"}, {&r_budget, "budget"}, {&r_error, "error"},
        {&r_duplicate, "duplicate"}, {&r_unhashable, "unhashable"},
        {&s_truncated_key, "$truncated"}, {NULL, NULL},
    };
    for (int k = 0; names[k].slot; k++) {
        if (*names[k].slot) continue;
        *names[k].slot = PyUnicode_InternFromString(names[k].s);
        if (*names[k].slot == NULL) return NULL;
    }
    Py_RETURN_NONE;
}
