/* Value reports by site (_vreport.c): the C twin of _pure_values.py. A module's value
 * sites (snapshots, lines, branches, match cases, loops) are registered once, at import,
 * by value_sites(table), which returns the module's reporter: report(token, k, *values)
 * builds the event runtime.ast's reporter of the same kind builds and writes it into the
 * ring as a K_RECORD slot, in C unless a value needs the full snapshot. */
#ifndef TIDESCOPE_VREPORT_H
#define TIDESCOPE_VREPORT_H

#include "_state.h"

/* value_sites(table) -> reporter: _pure_values.value_sites */
PyObject *value_sites(PyObject *m, PyObject *table);
/* values_init(namespace): what _pure_values.c_namespace() gives (called once by _core) */
PyObject *values_init(PyObject *m, PyObject *ns);

#endif
