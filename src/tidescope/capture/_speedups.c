/* tidescope.capture._speedups: the C twin of the capture core's hot path.
 *
 * Mirrors, name for name, the parts of _pure.py / _ring.py that run once per event:
 *
 *   RingStorage            the ring's slots and claim counter (_ring.RingBuffer's storage);
 *                          _ring.ring_class() puts the shared Python logic (checks, locks,
 *                          stats, block) on top of it
 *   report_function_entry  _pure.report_function_entry
 *   report_function_exit   _pure.report_function_exit
 *   Ids / reset_ids        the id counter ((sequence << 22) | pid) shared with Python
 *
 * The slot struct and the scan both readers share are in _slots.h; the trace encoder
 * (RingStorage._scan_encoded, encode_events_chunk) is in _encode.c.
 *
 * Everything else (snapshots of containers and objects, task ids, the context functions)
 * stays in Python and is called from here, so both cores give identical results; the
 * pure module is the specification.
 *
 * Files, by concept (each with its header):
 *
 *   _speedups.c  this module: the shared state (_state.h), attach / sync / set_policy,
 *                the method table and init
 *   _ring.c      the ring: the slot protocol (_slots.h), RingStorage, the scans that
 *                build events and records from slots
 *   _context.c   ids and the call stack: the per-context cell, frames, task ids
 *   _report.c    the report path: report_function_entry / _exit, write_event
 *   _snap.c      snapshots on the report path: flat copies, references, redaction
 *   _vreport.c   value reports by site (snapshots, lines, branches, loops, match cases)
 *   _values.c, _encode.c, _decode.c, _crc32.c   the trace format
 */
#include "_state.h"
#include "_context.h"
#include "_snap.h"
#include "_report.h"
#include "_deep.h"
#include "_vreport.h"
#include <structmember.h>

/* --------------------------------------------------------------------------------- */
/* state shared with _pure (attach() and sync() set it): _state.h                     */

int g_enabled = 0;
PyObject *g_buffer = NULL;     /* a RingStorage subclass instance, or NULL */
PyObject *g_limits = NULL;     /* the Limits named tuple */
/* the fast paths' bounds: _pure._fast_limits() */
Py_ssize_t g_max_items = 20;
Py_ssize_t g_max_string = 256;
Py_ssize_t g_top_string = 256;
unsigned long long g_int_limit = 1ULL << 63;
Py_ssize_t g_budget = 4096;
Py_ssize_t g_depth = 3;

PyObject *g_stack_var = NULL;  /* the ContextVar of frames */
PyObject *g_off = NULL;        /* _OFF */
PyObject *g_count_error = NULL;
PyObject *g_snap = NULL;       /* _pure._snap(value, limits) */
PyObject *g_exc_snap = NULL;   /* _pure._exc_snap(value, limits) */
PyObject *g_snap_ref = NULL;   /* _pure._snap_ref(value, limits, depth) */
PyObject *g_ref_kinds = NULL;  /* _snapshot._REF_KINDS: type -> (name, length) */
PyObject *g_ref_class = NULL;  /* tidescope.events.ObjectRef */
/* the value policy (_pure._apply_policy sets it through set_policy) */
int g_by_ref = 0;
PyObject *g_policy = NULL;     /* _pure._policy: key -> by reference, or NULL */
PyObject *g_decide = NULL;     /* _pure._decide(key) */
PyObject *g_sites = NULL;       /* _sites.table: the registered sites, by id */
PyObject *g_loop_task_id = NULL;
PyObject *g_note_thread = NULL; /* _pure._note_thread(ts): a thread's first root call */
PyObject *g_get_running_loop = NULL;
PyObject *g_entry_type = NULL; /* EventType.FUNCTION_ENTRY (_slots.h) */
PyObject *g_exit_type = NULL;
PyObject **g_keep = NULL;      /* KEEP_TYPES as an array of type pointers */
Py_ssize_t g_nkeep = 0;
PyObject *g_abandoned = NULL;  /* published by a writer interrupted after its claim */
PyTypeObject *g_event_class = NULL; /* tidescope.events.Event (_slots.h) */
Py_ssize_t g_event_offsets[13];     /* where each of its 13 slots lives */
PyObject *g_clock_module = NULL;    /* the _clock module: wall_offset */
PyObject *s_data_keys[8];           /* module, function, arity, args, return_value, ... */
PyObject *s_node = NULL, *s_pid = NULL, *s_wall_offset = NULL;
PyObject *s_normal = NULL, *s_put_slow = NULL;
PyObject *s_ast_node_id = NULL, *s_call_id = NULL, *s_exit_reason = NULL,
                *s_duration_ns = NULL;


int64_t g_seq = 0; /* ids issued: atomic */
int64_t g_pid_tag = 0;

/* --------------------------------------------------------------------------------- */
/* wiring                                                                             */

/* attach(namespace): the objects of _pure the C path calls or compares with. */
static PyObject *
attach(PyObject *Py_UNUSED(m), PyObject *ns)
{
    static const char *names[] = {"stack", "off", "count_error", "snap", "exc_snap",
                                  "loop_task_id", "get_running_loop", "entry_type",
                                  "exit_type", "snap_ref", "ref_kinds", "ref_class", "sites",
                                  "note_thread", NULL};
    PyObject **slots[] = {&g_stack_var, &g_off, &g_count_error, &g_snap, &g_exc_snap,
                          &g_loop_task_id, &g_get_running_loop, &g_entry_type, &g_exit_type,
                          &g_snap_ref, &g_ref_kinds, &g_ref_class, &g_sites, &g_note_thread};
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "attach() takes a dict");
        return NULL;
    }
    for (int k = 0; names[k]; k++) {
        PyObject *v = PyDict_GetItemString(ns, names[k]);
        if (v == NULL) {
            PyErr_Format(PyExc_KeyError, "attach(): missing %s", names[k]);
            return NULL;
        }
        Py_XSETREF(*slots[k], Py_NewRef(v));
    }
    if (!PyList_CheckExact(g_sites)) {
        PyErr_SetString(PyExc_TypeError, "attach(): sites is not a list");
        return NULL;
    }
    if (hamt_hash(g_stack_var, &g_stack_hash) < 0) return NULL;
    PyObject *ev = PyDict_GetItemString(ns, "event_class");
    PyObject *clock = PyDict_GetItemString(ns, "clock");
    if (ev == NULL || !PyType_Check(ev) || clock == NULL) {
        PyErr_SetString(PyExc_KeyError, "attach(): missing event_class or clock");
        return NULL;
    }
    static const char *fields[13] = {"event_id", "timestamp", "wall_time", "node", "pid",
                                     "thread_id", "task_id", "correlation_id", "parent_id",
                                     "call_id", "ast_node_id", "event_type", "data"};
    for (int k = 0; k < 13; k++) {
        PyObject *descr = PyObject_GetAttrString(ev, fields[k]);
        if (descr == NULL) return NULL;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) g_event_offsets[k] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "Event.%s is not a slot", fields[k]);
            return NULL;
        }
    }
    Py_XSETREF(g_event_class, (PyTypeObject *)Py_NewRef(ev));
    Py_XSETREF(g_clock_module, Py_NewRef(clock));
    PyObject *secrets = PyDict_GetItemString(ns, "secret_names");
    PyObject *redacted = PyDict_GetItemString(ns, "redacted_type");
    if (secrets == NULL || !PyDict_CheckExact(secrets) || redacted == NULL ||
        !PyType_Check(redacted)) {
        PyErr_SetString(PyExc_KeyError, "attach(): missing secret_names or redacted_type");
        return NULL;
    }
    Py_XSETREF(g_secret_names, Py_NewRef(secrets));
    Py_XSETREF(g_redacted_type, (PyTypeObject *)Py_NewRef(redacted));
    forget_names(NULL, NULL);
    PyObject *keep = PyDict_GetItemString(ns, "keep_types");
    PyObject *seq = keep ? PySequence_Tuple(keep) : NULL;
    if (seq == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "attach(): missing keep_types");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject **arr = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (arr == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) arr[k] = Py_NewRef(PyTuple_GET_ITEM(seq, k));
    Py_DECREF(seq);
    PyObject **old = g_keep;
    Py_ssize_t oldn = g_nkeep;
    g_keep = arr;
    g_nkeep = n;
    for (Py_ssize_t k = 0; k < oldn; k++) Py_DECREF(old[k]);
    PyMem_Free(old);
    Py_RETURN_NONE;
}

/* sync(enabled, buffer, limits, fast): the state the report path reads; `fast` is
 * _pure._fast_limits(limits): (items, str, top_str, int_limit, budget, depth). */
static PyObject *
sync_state(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyTuple_Check(args[3]) || PyTuple_GET_SIZE(args[3]) != 6) {
        PyErr_SetString(PyExc_TypeError, "sync(enabled, buffer, limits, fast_limits)");
        return NULL;
    }
    PyObject *buffer = args[1], *limits = args[2], *fast = args[3];
    if (buffer != Py_None && !PyObject_TypeCheck(buffer, &RingStorage_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a RingBuffer of the C core, got %s",
                     Py_TYPE(buffer)->tp_name);
        return NULL;
    }
    Py_ssize_t v[5];
    for (int k = 0; k < 5; k++) {
        if (k == 3) continue;
        v[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(fast, k == 4 ? 4 : k));
        if (v[k] == -1 && PyErr_Occurred()) return NULL;
    }
    unsigned long long int_limit = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(fast, 3));
    if (int_limit == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t depth = PyLong_AsSsize_t(PyTuple_GET_ITEM(fast, 5));
    if (depth == -1 && PyErr_Occurred()) return NULL;
    int on = PyObject_IsTrue(args[0]);
    if (on < 0) return NULL;
    g_max_items = v[0];
    g_max_string = v[1];
    g_top_string = v[2];
    g_int_limit = int_limit;
    g_budget = v[4];
    g_depth = depth;
    Py_XSETREF(g_limits, Py_NewRef(limits));
    Py_XSETREF(g_buffer, buffer == Py_None ? NULL : Py_NewRef(buffer));
    g_enabled = on;
    Py_RETURN_NONE;
}

/* set_policy(by_ref, policy, decide): _pure._apply_policy's state. */
static PyObject *
set_policy(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || (args[1] != Py_None && !PyDict_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "set_policy(by_ref, policy dict or None, decide)");
        return NULL;
    }
    int on = PyObject_IsTrue(args[0]);
    if (on < 0) return NULL;
    g_by_ref = on;
    Py_XSETREF(g_policy, args[1] == Py_None ? NULL : Py_NewRef(args[1]));
    Py_XSETREF(g_decide, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"note_thread_once", note_thread_once, METH_NOARGS,
     "Note this thread's name unless it has a note already."},
    {"set_policy", (PyCFunction)(void (*)(void))set_policy, METH_FASTCALL, NULL},
    {"report_function_entry", (PyCFunction)(void (*)(void))report_function_entry,
     METH_FASTCALL | METH_KEYWORDS,
     "report_function_entry(module, function, args, *, ast_node_id=None, call_id=None)\n--\n\n"
     "Record a call's entry; returns its call id (pass it to the exit), or None if off."},
    {"report_function_exit", (PyCFunction)(void (*)(void))report_function_exit,
     METH_FASTCALL | METH_KEYWORDS,
     "report_function_exit(call_id, return_value, duration_ns=None, *, exit_reason='normal', "
     "ast_node_id=None)\n--\n\n"
     "Record a call's exit and pop it from the call stack; False if nothing was recorded."},
    {"report_site_entry", (PyCFunction)(void (*)(void))report_site_entry, METH_FASTCALL,
     "report_site_entry(site, *values)\n--\n\n"
     "report_function_entry of a registered site: its names and node id from the table."},
    {"report_site_exit", (PyCFunction)(void (*)(void))report_site_exit, METH_FASTCALL,
     "report_site_exit(call_id, return_value, site)\n--\n\n"
     "report_function_exit of a registered site's normal exit."},
    {"report_site_return", (PyCFunction)(void (*)(void))report_site_return, METH_FASTCALL,
     "report_site_return(call_id, return_value, site)\n--\n\n"
     "report_site_exit, returning return_value (for `return report_site_return(...)`)."},
    {"attach", (PyCFunction)attach, METH_O, NULL},
    {"value_sites", value_sites, METH_O, NULL}, {"values_init", values_init, METH_O, NULL},
    {"write_event", (PyCFunction)(void (*)(void))write_event, METH_FASTCALL | METH_KEYWORDS,
     "write_event(buffer, event_type, data, *, call_id=None, parent_id=None, "
     "correlation_id=None, ast_node_id=None)\n--\n\n"
     "Stamp one event now (id, clocks, thread, task) and write it; False if dropped."},
    {"flat_cost", (PyCFunction)(void (*)(void))flat_cost, METH_FASTCALL,
     "_snapshot.flat_cost's twin."},
    {"flat_payload", (PyCFunction)(void (*)(void))flat_payload, METH_FASTCALL,
     "_snapshot.flat_payload's twin."},
    {"flat_copy", (PyCFunction)(void (*)(void))flat_copy, METH_FASTCALL,
     "_snapshot.flat_copy's twin."},
    {"stack_get", (PyCFunction)stack_get, METH_NOARGS,
     "This context's top call-stack frame (None, _OFF or a frame)."},
    {"stack_set", (PyCFunction)stack_set, METH_O, "Make a frame this context's top."},
    {"call_of", (PyCFunction)call_of, METH_O,
     "The call id a call token stands for here (None if its frame is gone); else the "
     "argument itself."},
    {"sync", (PyCFunction)(void (*)(void))sync_state, METH_FASTCALL, NULL},
    {"forget_names", (PyCFunction)forget_names, METH_NOARGS,
     "Forget the secret names answered so far (the redaction pattern changed)."},
    {"encode_events_chunk", (PyCFunction)(void (*)(void))ts_encode_events_chunk,
     METH_FASTCALL | METH_KEYWORDS, "_tsformat.encode_events_chunk's twin (_encode.c)."},
    {"frame_events_chunk", (PyCFunction)(void (*)(void))ts_frame_events_chunk,
     METH_FASTCALL | METH_KEYWORDS, "An EVENTS chunk of RingBuffer.drain_encoded()'s records."},
    {"crc32", (PyCFunction)(void (*)(void))ts_crc32, METH_FASTCALL,
     "crc32(data, value=0): zlib.crc32's twin."},
    {"reset_ids", (PyCFunction)reset_ids, METH_O,
     "Restart the id counter for this pid; returns the counter (an iterator)."},
    TS_DEEP_METHODS
    {NULL, NULL, 0, NULL},
};

int ts_decode_add(PyObject *module); /* the trace decoder, _decode.c */

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tidescope.capture._speedups",
    .m_doc = "The C twin of tidescope's capture hot path (see _pure.py, the specification).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&RingStorage_Type) < 0 || PyType_Ready(&Ids_Type) < 0 ||
        PyType_Ready(&Cell_Type) < 0 || PyType_Ready(&CallToken_Type) < 0 ||
        check_mirror() < 0)
        return NULL;
    s_normal = PyUnicode_InternFromString("normal");
    s_put_slow = PyUnicode_InternFromString("_put_slow");
    s_ast_node_id = PyUnicode_InternFromString("ast_node_id");
    s_call_id = PyUnicode_InternFromString("call_id");
    s_exit_reason = PyUnicode_InternFromString("exit_reason");
    s_duration_ns = PyUnicode_InternFromString("duration_ns");
    s_node = PyUnicode_InternFromString("_node");
    s_pid = PyUnicode_InternFromString("_pid");
    s_wall_offset = PyUnicode_InternFromString("wall_offset");
    static const char *keys[8] = {"module", "function", "arity", "args", "return_value",
                                  "exception", "duration_ns", "exit_reason"};
    for (int k = 0; k < 8; k++) {
        s_data_keys[k] = PyUnicode_InternFromString(keys[k]);
        if (s_data_keys[k] == NULL) return NULL;
    }
    if (!s_normal || !s_put_slow || !s_ast_node_id || !s_call_id || !s_exit_reason ||
        !s_duration_ns || !s_node || !s_pid || !s_wall_offset)
        return NULL;
    g_ids = PyType_GenericAlloc(&Ids_Type, 0);
    if (g_ids == NULL) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    g_abandoned = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (g_abandoned == NULL || PyModule_AddObjectRef(m, "ABANDONED", g_abandoned) < 0 ||
        PyModule_AddObjectRef(m, "RingStorage", (PyObject *)&RingStorage_Type) < 0 ||
        PyModule_AddObjectRef(m, "CallToken", (PyObject *)&CallToken_Type) < 0 ||
        PyModule_AddStringConstant(m, "CORE_NAME", "c") < 0 ||
        PyModule_AddIntConstant(m, "IN_PLACE_STACK", g_inplace) < 0 || ts_decode_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

