/* Ids and the call stack (_context.c): the per-context cell that holds the stack (C frames
 * on top of a chain of frame tuples (call_id, parent_frame, correlation_id, start_ns)),
 * the call tokens of site calls, and task ids. */
#ifndef TIDESCOPE_CONTEXT_H
#define TIDESCOPE_CONTEXT_H

#include "_state.h"

/* A site call's frame in C memory: what the frame tuple holds, as machine values. */
typedef struct {
    int64_t call;     /* its call id */
    int64_t start;    /* start_ns */
    int64_t corr_raw; /* the correlation id, when corr is NULL */
    PyObject *corr;   /* the correlation id as an object (a reference), or NULL */
    int32_t site;     /* the site it was entered from */
} CFrame;

/* The stack of one context: `n` C frames on top of `top`, the chain of frame tuples below
 * them (what Python code sees; the C frames are turned into tuples, spilled, when it asks).
 */
typedef struct {
    PyObject_HEAD
    PyObject *top;   /* None, _OFF or a frame tuple: the stack below frames[] */
    PyObject *task;  /* the task id of the context that made the cell, once asked (or NULL) */
    PyObject *owner; /* a weak reference to that context: task is valid there only */
    CFrame *frames;
    Py_ssize_t n, cap;
    Py_ssize_t base_depth; /* the frames in top's chain, or -1 when not counted yet */
} Cell;

/* What __tidescope_enter__ returns for a call it pushed as a C frame: the frame's depth on
 * this context's stack (1 is the bottom), one cached object per depth. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t depth;
} CallToken;

typedef struct { /* CPython's struct _pycontextobject (Include/internal/pycore_context.h) */
    PyObject_HEAD
    void *ctx_prev;
    PyObject *ctx_vars;
    PyObject *ctx_weakreflist;
    int ctx_entered;
} MirrorContext;

extern PyTypeObject Ids_Type, Cell_Type, CallToken_Type;
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

/* This context's top frame as Python sees it (the C frames spilled first; new reference);
 * *cellp gets the cell (new reference) or NULL. */
PyObject *get_top(PyObject **cellp);
/* This context's cell (new reference), or NULL with *none set when nothing was pushed in
 * this context yet, or NULL with an error. Spills nothing. */
PyObject *get_cell(int *none);
int set_top(PyObject *cell, int owned, PyObject *top, PyObject *task, PyThreadState *ts,
            Py_ssize_t depth);
/* A new cell holding `top` (its chain `depth` frames, or -1), made this context's: a new
 * reference, or NULL. */
Cell *new_cell(PyObject *top, Py_ssize_t depth, PyObject *task, PyThreadState *ts);
/* The C frames of c as tuples on top of c->top, which becomes the whole stack: 0, or -1
 * on an allocation failure (nothing changed). The stack it stands for is unchanged, so a
 * shared cell may be spilled too. */
int cell_spill(Cell *c);
/* The frames in c's stack (counting the chain once if not known yet). */
Py_ssize_t cell_depth(Cell *c);
/* Drop the C frames from index k up. */
void cell_cut(Cell *c, Py_ssize_t k);
/* Make room for one more C frame: 0, or -1 (MemoryError set). */
int cell_reserve(Cell *c);
/* The token of depth d (new reference), or NULL. */
PyObject *token_for(Py_ssize_t depth);
PyObject *call_of(PyObject *m, PyObject *token);
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
