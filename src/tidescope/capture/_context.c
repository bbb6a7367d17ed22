/* Ids and the call stack: the id counter, the per-context cell that holds the top frame
 * (rewritten in place when only this context can see it), frames and task ids. */
#include "_state.h"
#include "_context.h"

/* --------------------------------------------------------------------------------- */
/* ids                                                                                */

typedef struct { PyObject_HEAD } Ids;

static PyObject *
Ids_next(PyObject *Py_UNUSED(self))
{
    return PyLong_FromLongLong(new_id());
}

PyTypeObject Ids_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.Ids",
    .tp_basicsize = sizeof(Ids),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The process's id counter: next() gives (sequence << 22) | pid.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = Ids_next,
    .tp_new = NULL,
};

PyObject *g_ids = NULL;

PyObject *
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

int g_inplace = 0;
static PyTypeObject *g_hamt_type, *g_bitmap_type, *g_array_type; /* set by check_mirror() */
int32_t g_stack_hash;                                      /* the HAMT's hash of it */

/* hamt.c's hamt_hash(): the object's hash folded to 32 bits into *out; -1 on error. */
int
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
PyObject *
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
    for (Py_ssize_t k = 0; k < c->n; k++) Py_VISIT(c->frames[k].corr);
    return 0;
}

void
cell_cut(Cell *c, Py_ssize_t k)
{
    while (c->n > k) {
        PyObject *corr = c->frames[--c->n].corr;
        c->frames[c->n].corr = NULL;
        Py_XDECREF(corr);
    }
}

static int
Cell_clear(Cell *c)
{
    Py_CLEAR(c->top);
    Py_CLEAR(c->task);
    Py_CLEAR(c->owner);
    cell_cut(c, 0);
    return 0;
}

static void
Cell_dealloc(Cell *c)
{
    PyObject_GC_UnTrack(c);
    Cell_clear(c);
    PyMem_Free(c->frames);
    PyObject_GC_Del(c);
}

PyTypeObject Cell_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.Cell",
    .tp_basicsize = sizeof(Cell),
    .tp_dealloc = (destructor)Cell_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The holder of a context's call stack (C core).",
    .tp_traverse = (traverseproc)Cell_traverse,
    .tp_clear = (inquiry)Cell_clear,
};

int
cell_reserve(Cell *c)
{
    if (c->n < c->cap) return 0;
    Py_ssize_t cap = c->cap ? 2 * c->cap : 16;
    if ((size_t)cap > PY_SSIZE_T_MAX / sizeof(CFrame)) {
        PyErr_NoMemory();
        return -1;
    }
    /* PyMem_Realloc runs no Python code and no collection */
    CFrame *p = PyMem_Realloc(c->frames, (size_t)cap * sizeof(CFrame));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->frames = p;
    c->cap = cap;
    return 0;
}

Py_ssize_t
cell_depth(Cell *c)
{
    if (c->base_depth < 0) {
        Py_ssize_t d = 0;
        for (PyObject *f = c->top; f != NULL && is_frame(f); f = PyTuple_GET_ITEM(f, 1)) d++;
        c->base_depth = d;
    }
    return c->base_depth;
}

int
cell_spill(Cell *c)
{
    Py_ssize_t n = c->n;
    if (n == 0) return 0;
    PyObject *base = c->top != NULL ? c->top : Py_None;
    PyObject *prev = Py_NewRef(base);
    /* The allocations may run a finalizer that reports calls here: they push and pop
     * above frames[n-1], and the frames read below stay as they were. */
    for (Py_ssize_t k = 0; k < n && k < c->n; k++) {
        CFrame f = c->frames[k];
        PyObject *cid = PyLong_FromLongLong(f.call);
        PyObject *corr = f.corr != NULL ? Py_NewRef(f.corr) : PyLong_FromLongLong(f.corr_raw);
        PyObject *st = PyLong_FromLongLong(f.start);
        PyObject *t = cid && corr && st ? PyTuple_Pack(4, cid, prev, corr, st) : NULL;
        Py_XDECREF(cid);
        Py_XDECREF(corr);
        Py_XDECREF(st);
        Py_DECREF(prev);
        if (t == NULL) return -1;
        prev = t;
    }
    if (c->n != n || c->top != base) { /* changed under us: the caller looks again */
        Py_DECREF(prev);
        return 0;
    }
    Py_ssize_t depth = c->base_depth;
    cell_cut(c, 0);
    c->base_depth = depth >= 0 ? depth + n : -1;
    Py_SETREF(c->top, prev);
    return 0;
}

Cell *
new_cell(PyObject *top, Py_ssize_t depth, PyObject *task, PyThreadState *ts)
{
    Cell *fresh = PyObject_GC_New(Cell, &Cell_Type);
    if (fresh == NULL) return NULL;
    fresh->top = Py_NewRef(top);
    fresh->task = NULL;
    fresh->owner = NULL;
    fresh->frames = NULL;
    fresh->n = fresh->cap = 0;
    fresh->base_depth = depth;
    PyObject_GC_Track(fresh);
    PyObject *token = PyContextVar_Set(g_stack_var, (PyObject *)fresh);
    if (token == NULL) {
        Py_DECREF(fresh);
        return NULL;
    }
    Py_DECREF(token);
    if (g_inplace && ts->context != NULL) {
        /* a weak reference: a strong one would be a cycle through the context's mapping,
         * and a bare address could be a later context's */
        fresh->owner = PyWeakref_NewRef(ts->context, NULL);
        if (fresh->owner == NULL) PyErr_Clear(); /* then the task is asked every time */
        else fresh->task = Py_XNewRef(task);
    }
    return fresh;
}

PyObject *
get_cell(int *none)
{
    PyObject *v;
    *none = 0;
    if (PyContextVar_Get(g_stack_var, NULL, &v) < 0) return NULL;
    if (Py_IS_TYPE(v, &Cell_Type)) return v;
    if (v == Py_None) {
        *none = 1;
        Py_DECREF(v);
        return NULL;
    }
    Py_DECREF(v);
    PyErr_SetString(PyExc_TypeError, "the call stack's variable holds no stack");
    return NULL;
}

/* This context's top frame (new reference); *cellp gets the cell (new reference) or NULL. */
PyObject *
get_top(PyObject **cellp)
{
    PyObject *v;
    *cellp = NULL;
    if (PyContextVar_Get(g_stack_var, NULL, &v) < 0) return NULL;
    if (Py_IS_TYPE(v, &Cell_Type)) {
        Cell *c = (Cell *)v;
        for (int tries = 0; c->n > 0; tries++) {
            if (tries == 8 || cell_spill(c) < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "stack spill");
                Py_DECREF(v);
                return NULL;
            }
        }
        PyObject *top = c->top;
        *cellp = v;
        return Py_NewRef(top != NULL ? top : Py_None); /* NULL only once GC cleared it */
    }
    return v; /* the default, None: nothing pushed in this context yet */
}

/* Make `top` this context's top frame; `cell` is what get_top() gave (or NULL), `owned`
 * what cell_owned() said of it, `depth` the frames in top's chain (or -1). `task`
 * (borrowed, or NULL) is this context's task id, kept by a new cell. */
int
set_top(PyObject *cell, int owned, PyObject *top, PyObject *task, PyThreadState *ts,
        Py_ssize_t depth)
{
    if (cell != NULL && owned) {
        Cell *c = (Cell *)cell;
        Py_SETREF(c->top, Py_NewRef(top));
        cell_cut(c, 0);
        c->base_depth = depth;
        return 0;
    }
    Cell *fresh = new_cell(top, depth, task, ts);
    if (fresh == NULL) return -1;
    Py_DECREF(fresh);
    return 0;
}

/* _pure._get / _pure._set for the C core */
PyObject *
stack_get(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    PyObject *cell;
    PyObject *top = get_top(&cell);
    Py_XDECREF(cell);
    return top;
}

PyObject *
stack_set(PyObject *Py_UNUSED(m), PyObject *top)
{
    PyObject *cell, *old = get_top(&cell);
    if (old == NULL) return NULL;
    /* the depth of the new top where it is cheap to know: a pop, a push or a rebinding
     * (pop_call_stack, push_call_stack, bind_correlation); else counted when needed */
    Py_ssize_t was = cell == NULL ? 0 : ((Cell *)cell)->base_depth, depth = -1;
    if (top == Py_None || top == g_off) depth = 0;
    else if (was >= 0 && is_frame(top)) {
        PyObject *below = PyTuple_GET_ITEM(top, 1);
        if (below == old) depth = was + 1;
        else if (is_frame(old) && below == PyTuple_GET_ITEM(old, 1)) depth = was;
    }
    if (depth < 0 && was > 0 && is_frame(old) && top == PyTuple_GET_ITEM(old, 1))
        depth = was - 1;
    Py_DECREF(old);
    PyThreadState *ts = PyThreadState_Get();
    int r = set_top(cell, cell_owned(cell, ts), top, NULL, ts, depth);
    Py_XDECREF(cell);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------------------- */
/* call tokens                                                                        */

static PyObject *
CallToken_repr(CallToken *t)
{
    return PyUnicode_FromFormat("<call token at depth %zd>", t->depth);
}

PyTypeObject CallToken_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidescope.capture._speedups.CallToken",
    .tp_basicsize = sizeof(CallToken),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A site call's token: its frame's depth on the stack it was pushed on "
              "(call_of() gives its call id).",
    .tp_repr = (reprfunc)CallToken_repr,
};

/* one token per depth, made once (not a GC object: making one never runs a collection) */
static PyObject **g_tokens = NULL;
static Py_ssize_t g_ntokens = 0;

PyObject *
token_for(Py_ssize_t depth)
{
    if (depth < g_ntokens && g_tokens[depth] != NULL) return Py_NewRef(g_tokens[depth]);
    if (depth >= g_ntokens) {
        Py_ssize_t n = g_ntokens ? g_ntokens : 256;
        while (n <= depth) n *= 2;
        PyObject **p = PyMem_Realloc(g_tokens, (size_t)n * sizeof(PyObject *));
        if (p == NULL) return PyErr_NoMemory();
        memset(p + g_ntokens, 0, (size_t)(n - g_ntokens) * sizeof(PyObject *));
        g_tokens = p;
        g_ntokens = n;
    }
    CallToken *t = PyObject_New(CallToken, &CallToken_Type);
    if (t == NULL) return NULL;
    t->depth = depth;
    g_tokens[depth] = (PyObject *)t;
    return Py_NewRef(t);
}

/* call_of(token): the call id a site call's token stands for on this context's stack
 * (None when its frame is gone); anything else is returned as it is (a call id). */
PyObject *
call_of(PyObject *Py_UNUSED(m), PyObject *token)
{
    if (!Py_IS_TYPE(token, &CallToken_Type)) return Py_NewRef(token);
    Py_ssize_t d = ((CallToken *)token)->depth;
    int none;
    PyObject *cell = get_cell(&none);
    if (cell == NULL) {
        if (none) Py_RETURN_NONE;
        return NULL;
    }
    Cell *c = (Cell *)cell;
    Py_ssize_t base = cell_depth(c);
    PyObject *r = Py_None;
    if (d > base && d - base <= c->n) {
        Py_DECREF(cell);
        return PyLong_FromLongLong(c->frames[d - base - 1].call);
    }
    if (d >= 1 && d <= base) {
        PyObject *f = c->top;
        for (Py_ssize_t k = base; k > d && is_frame(f); k--) f = PyTuple_GET_ITEM(f, 1);
        if (is_frame(f)) r = PyTuple_GET_ITEM(f, 0);
    }
    Py_INCREF(r);
    Py_DECREF(cell);
    return r;
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
int
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


int
bad_stack(void)
{
    PyErr_SetString(PyExc_TypeError, "the call stack holds something that is not a frame");
    return -1;
}


/* The task id of this context (new reference): the owned cell's, asked once per cell.
 * A context belongs to one thread at a time and, in asyncio, to one task, so a cell that
 * only this context can see, made in this context, answers for every later report in it
 * (a cell made elsewhere may come to be seen by this context alone: it asks). */
PyObject *
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
PyObject *
task_id(void)
{
    PyObject *loop = PyObject_CallNoArgs(g_get_running_loop);
    if (loop == NULL) return NULL;
    if (loop == Py_None) return loop;
    PyObject *r = PyObject_CallOneArg(g_loop_task_id, loop);
    Py_DECREF(loop);
    return r;
}

