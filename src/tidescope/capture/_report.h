/* The report path (_report.c): the functions rewritten code calls on every call. */
#ifndef TIDESCOPE_REPORT_H
#define TIDESCOPE_REPORT_H

#include "_state.h"

PyObject *report_function_entry(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames);
PyObject *report_function_exit(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames);
/* report_site_entry(site, *values) / report_site_exit(call_id, return_value, site): the
 * same events, the call's names taken from the site table (_sites.py) */
PyObject *report_site_entry(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *report_site_exit(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
/* report_site_return(call_id, return_value, site): report_site_exit, returns return_value */
PyObject *report_site_return(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
/* note_thread_once(): note this thread's name unless it has a note already */
PyObject *note_thread_once(PyObject *m, PyObject *noarg);
PyObject *write_event(PyObject *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);

#endif
