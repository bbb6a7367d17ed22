/* The C core's shared state: what attach(), sync() and set_policy() set (defined in
 * _speedups.c, read by every other file), the id counter and the clock. */
#ifndef TIDESCOPE_STATE_H
#define TIDESCOPE_STATE_H

#include "_slots.h"
#include <time.h>

#define PID_BITS 22


extern int g_enabled;
extern PyObject *g_buffer;     /* a RingStorage subclass instance, or NULL */
extern PyObject *g_limits;     /* the Limits named tuple */
/* the fast paths' bounds: _pure._fast_limits() */
extern Py_ssize_t g_max_items;
extern Py_ssize_t g_max_string;
extern Py_ssize_t g_top_string;
extern unsigned long long g_int_limit;
extern Py_ssize_t g_budget;
extern Py_ssize_t g_depth;
#define SMALL 8

extern PyObject *g_stack_var;  /* the ContextVar of frames */
extern PyObject *g_off;        /* _OFF */
extern PyObject *g_count_error;
extern PyObject *g_snap;       /* _pure._snap(value, limits) */
extern PyObject *g_exc_snap;   /* _pure._exc_snap(value, limits) */
extern PyObject *g_snap_ref;   /* _pure._snap_ref(value, limits, depth) */
extern PyObject *g_ref_kinds;  /* _snapshot._REF_KINDS: type -> (name, length) */
extern PyObject *g_ref_class;  /* tidescope.events.ObjectRef */
/* the value policy (_pure._apply_policy sets it through set_policy) */
extern int g_by_ref;
extern PyObject *g_policy;     /* _pure._policy: key -> by reference, or NULL */
extern PyObject *g_decide;     /* _pure._decide(key) */
extern PyObject *g_sites;       /* _sites.table: the registered sites, by id */
extern PyObject *g_loop_task_id;
extern PyObject *g_note_thread;  /* _pure._note_thread(ts) */
extern PyObject *g_get_running_loop;
extern PyObject *g_entry_type; /* EventType.FUNCTION_ENTRY (_slots.h) */
extern PyObject *g_exit_type;
extern PyObject **g_keep;      /* KEEP_TYPES as an array of type pointers */
extern Py_ssize_t g_nkeep;
extern PyObject *g_abandoned;  /* published by a writer interrupted after its claim */
extern PyTypeObject *g_event_class; /* tidescope.events.Event (_slots.h) */
extern Py_ssize_t g_event_offsets[13];     /* where each of its 13 slots lives */
extern PyObject *g_clock_module;    /* the _clock module: wall_offset */
extern PyObject *s_data_keys[8];           /* module, function, arity, args, return_value, ... */
extern PyObject *s_node, *s_pid, *s_wall_offset;
extern PyObject *s_normal, *s_put_slow;
extern PyObject *s_ast_node_id, *s_call_id, *s_exit_reason,
                *s_duration_ns;


extern int64_t g_seq; /* ids issued: atomic */
extern int64_t g_pid_tag;

static inline int64_t
new_id(void)
{
    int64_t seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    return (seq << PID_BITS) | g_pid_tag;
}

static inline int64_t
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* what time.monotonic_ns reads on Linux */
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

#endif
