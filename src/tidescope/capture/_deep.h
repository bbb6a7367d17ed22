/* The bounded deep snapshot's C twin (_deep.c): _snapshot.Snapper.snap for builtin
 * containers and plain objects, calling back into the Snapper for everything else. */
#ifndef TIDESCOPE_DEEP_H
#define TIDESCOPE_DEEP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyObject *ts_snap_deep(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *ts_payload_deep(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *ts_deep_init(PyObject *m, PyObject *ns);

#define TS_DEEP_METHODS                                                                     \
    {"snap_deep", (PyCFunction)(void (*)(void))ts_snap_deep, METH_FASTCALL,                 \
     "snap_deep(snapper, v, depth): Snapper.snap's twin for a value that is not a scalar "  \
     "(_deep.c)."},                                                                         \
    {"payload_deep", (PyCFunction)(void (*)(void))ts_payload_deep, METH_FASTCALL,           \
     "payload_deep(snapper, data): Snapper.payload's item loop (_deep.c), or None."},        \
    {"deep_init", (PyCFunction)ts_deep_init, METH_O,                                        \
     "deep_init(namespace): the _snapshot objects snap_deep compares with and calls."},

#endif
