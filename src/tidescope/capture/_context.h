/* Ids and the call stack (_context.c): the per-context cell that holds the top frame,
 * frames (call_id, parent_frame, correlation_id, start_ns) and task ids. */
#ifndef TIDESCOPE_CONTEXT_H
#define TIDESCOPE_CONTEXT_H

#include "_state.h"

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

extern PyTypeObject Ids_Type, Cell_Type;
extern PyObject *g_ids;        /* the process's id counter (an iterator) */
extern int g_inplace;          /* check_mirror() proved the in-place rewrite safe */
extern int32_t g_stack_hash;   /* the HAMT's hash of the stack's ContextVar */

/* The value of `key` in the context mapping `vars` (borrowed, NULL if absent); *shared
 * says whether anything on the way down is held by more than its parent. */
PyObject *hamt_find(PyObject *vars, PyObject *key, int32_t hash, int *shared);
int hamt_hash(PyObject *key, int32_t *out);
int check_mirror(void);

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

PyObject *get_top(PyObject **cellp);
int set_top(PyObject *cell, int owned, PyObject *top, PyObject *task, PyThreadState *ts);
PyObject *stack_get(PyObject *m, PyObject *ignored);
PyObject *stack_set(PyObject *m, PyObject *top);
PyObject *reset_ids(PyObject *m, PyObject *arg);

/* A frame of the call stack: (call_id, parent_frame, correlation_id, start_ns). */
static inline int
is_frame(PyObject *f)
{
    return PyTuple_CheckExact(f) && PyTuple_GET_SIZE(f) == 4;
}

int bad_stack(void);
PyObject *context_task(PyObject *cell, int owned, PyThreadState *ts);
PyObject *task_id(void);

#endif
