/* Snapshots on the report path (_snap.c): flat copies and references taken in C, the
 * calls into _pure's snapshots for everything else, and the internal-error count. */
#ifndef TIDESCOPE_SNAP_H
#define TIDESCOPE_SNAP_H

#include "_state.h"

extern PyObject *g_secret_names;     /* _redact.secret_names */
extern PyTypeObject *g_redacted_type; /* events.Redacted */

static inline PyObject *
call_snap(PyObject *fn, PyObject *value)
{
    PyObject *a[2] = {value, g_limits};
    return PyObject_Vectorcall(fn, a, 2, NULL);
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

/* _pure._snap_args / _ref_args: new reference to the snapshot, *arity set. */
PyObject *snap_args(PyObject *args, Py_ssize_t *arity);
PyObject *ref_args(PyObject *args, Py_ssize_t *arity);
/* the same of a dict made for this report, which nothing else holds (a site's arguments) */
PyObject *snap_own_args(PyObject *d, Py_ssize_t *arity);
PyObject *ref_own_args(PyObject *d, Py_ssize_t *arity);
/* a site call's arguments kept in its entry's slot (see _snap.c) */
int site_args(PyObject *const *names, PyObject *const *vals, Py_ssize_t n, int by_ref, Val *out,
              uint8_t *raw);
/* _pure._snap / _snap_ref of one value (a return value). */
PyObject *snap_value(PyObject *v);
PyObject *ref_value(PyObject *v);

/* the module functions: _snapshot.flat_cost / flat_copy / flat_payload, forget_names() */
PyObject *flat_cost(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *flat_copy(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *flat_payload(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *forget_names(PyObject *m, PyObject *ignored);
/* a value event's data as a fresh Snapper(limits).payload(data) gives it, when a flat copy
 * does (data and `own`, a dict in it or NULL, made by the caller: kept, not copied);
 * Py_None when it does not (both new references); NULL on error */
PyObject *payload_flat(PyObject *data, PyObject *own);

#endif
