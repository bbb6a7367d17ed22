/* The ring's slot protocol, shared by _speedups.c (writers, readers) and _encode.c (the
 * trace encoder): the slot struct, the references it holds, the storage object and the
 * scan that both readers run over it. See _speedups.c for the ordering rules. */
#ifndef TIDESCOPE_SLOTS_H
#define TIDESCOPE_SLOTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { K_EVENT = 1, K_RECORD = 2, K_ENTRY = 3, K_EXIT = 4 };
/* raw bits: which of the seven integer fields and four data items hold raw integers */
enum { R_EID = 1, R_TS = 2, R_THREAD = 4, R_TASK = 8, R_CORR = 16, R_PARENT = 32,
       R_CALL = 64 };
enum { D_RAW2 = 4 }; /* data item 2 (an exit's duration) is a raw integer */

typedef union { int64_t i; PyObject *o; } Val;

/* A raw thread id is an unsigned 64-bit value stored in .i; every other raw field is a
 * signed 64-bit integer. K_EVENT keeps the written object in d[0]; K_RECORD keeps the
 * event type in d[0] and the data in d[1]; K_ENTRY / K_EXIT keep their four data items. */
typedef struct {
    uint64_t stamp; /* 0 empty; 2*pos+1 being written; 2*pos+2 holds position pos */
    uint8_t kind;
    uint8_t raw;
    uint8_t draw;
    Val eid, ts, thread, task, corr, parent, call;
    PyObject *ast;
    Val d[4];
} Slot;

/* Hold references outside the slot while it is rewritten: decrefs run after publishing. */
typedef struct { PyObject *o[12]; int n; } Garbage;

static inline void
gather_val(Garbage *g, Val v, int is_raw)
{
    if (!is_raw && v.o != NULL) g->o[g->n++] = v.o;
}

/* The references a filled slot holds (the caller knows it is filled). */
static inline void
gather_slot(Garbage *g, Slot *s)
{
    gather_val(g, s->eid, s->raw & R_EID);
    gather_val(g, s->ts, s->raw & R_TS);
    gather_val(g, s->thread, s->raw & R_THREAD);
    gather_val(g, s->task, s->raw & R_TASK);
    gather_val(g, s->corr, s->raw & R_CORR);
    gather_val(g, s->parent, s->raw & R_PARENT);
    gather_val(g, s->call, s->raw & R_CALL);
    if (s->ast) g->o[g->n++] = s->ast;
    for (int k = 0; k < 4; k++) gather_val(g, s->d[k], k == 2 && (s->draw & D_RAW2));
}

static inline void
release(Garbage *g)
{
    for (int k = 0; k < g->n; k++) Py_DECREF(g->o[k]);
}

/* Copy a slot's contents with new references (no allocation, no Python code). */
static inline void
hold_slot(Slot *dst, Slot *src)
{
    *dst = *src;
    Garbage g = {.n = 0};
    gather_slot(&g, dst);
    for (int k = 0; k < g.n; k++) Py_INCREF(g.o[k]);
}

static inline void
drop_slot(Slot *c)
{
    Garbage g = {.n = 0};
    gather_slot(&g, c);
    release(&g);
}

typedef struct {
    PyObject_HEAD
    Slot *slots;
    uint64_t size;
    uint64_t mask;
    uint64_t claim; /* positions claimed by drop_oldest writers: atomic */
    char fast;      /* drop_oldest and not destroyed: claim here without the Python lock */
    uint64_t wake_at; /* the writer that claims this position calls `wake` (the drain's) */
    PyObject *wake;
    uint64_t wait_at;           /* then the writer that claims this one waits for a pass */
    char stage;                 /* 1: wake_at is the wake-up; 2: it is the wait */
    char waiting;               /* a writer waits on `passed` (both under the GIL) */
    long long wait_us;
    PyThread_type_lock passed;  /* held; _set_wake releases it for a waiting writer */
} RingStorage;

/* Called by scan_slots for each current slot (a held copy, and its position): 0 to go on,
 * 1 to stop after this slot, 2 to stop before it (it is read next time), -1 on an error
 * (set; the scan stops and the caller consumes nothing). */
typedef int (*slot_visitor)(void *ctx, Slot *copy, uint64_t pos);

/* _speedups.c: visit up to `count` current slots from *p (the pure _scan's walk); *p ends
 * after the last slot taken, *got counts the visited, *abandoned the abandoned ones. */
int ts_scan_slots(RingStorage *self, uint64_t *p, Py_ssize_t count, Py_ssize_t *got,
                  Py_ssize_t *abandoned, slot_visitor visit, void *ctx);

/* _speedups.c: count the exception set as an internal error (_pure.count_error) and clear
 * it: 1; or 0 when it is no Exception (KeyboardInterrupt, SystemExit: left set). */
int swallow_error(void);

/* _speedups.c: the objects the encoder compares with (set by attach()). */
extern PyTypeObject *g_event_class;   /* tidescope.events.Event */
extern Py_ssize_t g_event_offsets[13]; /* where each of its 13 slots lives */
extern PyObject *g_entry_type, *g_exit_type; /* EventType.FUNCTION_ENTRY / _EXIT */

/* _encode.c */
PyObject *ts_scan_encoded(RingStorage *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *ts_encode_events_chunk(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames);
PyObject *ts_frame_events_chunk(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames);
PyObject *ts_crc32(PyObject *m, PyObject *const *args, Py_ssize_t nargs);

#endif
