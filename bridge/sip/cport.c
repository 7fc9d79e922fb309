/* callbridge native media port: a pjmedia_port whose clock-thread side never enters Python.
 *
 * pjmedia's clock thread calls put_frame (what the caller said) and get_frame (what the caller hears) of every
 * port of a process every 20 ms. A pjsua2 AudioMediaPort routes both into Python through SWIG directors, so the
 * clock thread has to take the GIL twice per call and tick, and waits for it while the event loop runs: the
 * conference tick of every call of the process is late by that wait. Here both callbacks only copy 320 bytes
 * into or out of a small ring under a per-port mutex, and wake the event loop through one eventfd per process.
 * The loop (bridge/sip/cport.py) drains the inbound rings and tops the outbound rings up to a few frames ahead.
 *
 * No pjproject header is used: the layout below mirrors pjmedia/port.h of the wheel (pjproject 2.15.1, x86-64).
 * It is checked at run time before any port reaches the conference bridge (cport.py: a scratch port is driven
 * through the library's own pjmedia_port_put_frame / pjmedia_port_get_frame and pjmedia_port_info_init); if the
 * check fails, the bridge keeps the Python port.
 *
 * Memory: ports are never freed while the process runs (the endpoint pools them, one per concurrent call, and
 * pjmedia may still touch a removed port until its next tick), so no lifetime race can reach freed memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define FRAME_BYTES 320 /* 8 kHz, 20 ms, PCM16 mono */
#define IN_FRAMES 64    /* 1.28 s: the loop may stall this long before frames are dropped (and counted) */
#define OUT_FRAMES 16   /* the loop keeps only a few frames queued: what is queued here is not cut by a flush */

/* pjmedia_frame (pjmedia/frame.h) */
typedef struct {
    int type;
    void *buf;
    size_t size;
    uint64_t timestamp;
    uint64_t bit_info;
} pjm_frame;

typedef struct cb_port cb_port;
typedef int (*frame_fn)(cb_port *, pjm_frame *);

/* pjmedia_port (pjmedia/port.h, 2.15): info (pjmedia_port_info, 64 bytes), port_data, grp_lock, then four
 * function pointers. */
typedef struct {
    unsigned char info[64];
    void *pdata;
    long ldata;
    void *grp_lock;
    void *(*get_clock_src)(cb_port *, int);
    frame_fn put_frame;
    frame_fn get_frame;
    int (*on_destroy)(cb_port *);
} pjm_port;

struct cb_port {
    pjm_port base; /* must stay first: pjmedia sees a pjmedia_port* */
    char name[32];
    pthread_mutex_t lock;
    atomic_int attached;
    unsigned in_head, in_tail; /* inbound: clock thread writes head, loop reads tail */
    unsigned out_head, out_tail;
    uint64_t frames_in, frames_out, empty_in, in_dropped, out_late, destroyed;
    double last_get;       /* when the clock last asked for a frame (attached) */
    uint64_t clock_gaps;   /* requests more than 30 ms after the previous one: the clock thread itself was late */
    uint64_t max_gap_us;
    double in_time[IN_FRAMES];
    unsigned char in_buf[IN_FRAMES][FRAME_BYTES];
    unsigned char out_buf[OUT_FRAMES][FRAME_BYTES];
};

static int g_efd = -1;
static atomic_int g_wake_pending;
static atomic_ullong g_wakes;
static int g_type_audio = 1, g_type_none = 0;
static unsigned g_low_water = 2;
static int g_clock_rt = 0;            /* SCHED_RR priority to ask for on the clock thread (cbp_init); 0: don't */
static atomic_int g_clock_rt_state;   /* 0: not tried, 1: granted, -errno: refused */

/* Once, on the clock thread itself: SCHED_RR at the priority given to cbp_init (the lowest real-time priority,
 * or the worker's own when it runs real-time), so a busy machine's ordinary threads (the event loops, the
 * model's WebSocket work) cannot delay the 20 ms tick. The tick only copies frames and runs pjmedia's codecs,
 * so it cannot hog a core. Needs CAP_SYS_NICE; refused quietly otherwise. */
static void clock_thread_once(void) {
    if (!g_clock_rt || atomic_load_explicit(&g_clock_rt_state, memory_order_relaxed) != 0)
        return;
    struct sched_param param = {.sched_priority = g_clock_rt};
    int rc = pthread_setschedparam(pthread_self(), SCHED_RR, &param);
    atomic_store(&g_clock_rt_state, rc == 0 ? 1 : -rc);
}

static void wake(void) {
    if (g_efd >= 0 && !atomic_exchange(&g_wake_pending, 1)) {
        uint64_t one = 1;
        ssize_t n = write(g_efd, &one, sizeof one);
        (void)n; /* EAGAIN: the counter is saturated, the loop is readable anyway */
        atomic_fetch_add_explicit(&g_wakes, 1, memory_order_relaxed);
    }
}

static double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock behind Python's time.monotonic() on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cb_put_frame(cb_port *p, pjm_frame *f) {
    if (!atomic_load_explicit(&p->attached, memory_order_acquire))
        return 0;
    if (f->type != g_type_audio || f->size == 0 || f->buf == NULL) {
        p->empty_in++;
        return 0;
    }
    size_t size = f->size < FRAME_BYTES ? f->size : FRAME_BYTES;
    pthread_mutex_lock(&p->lock);
    if (p->in_head - p->in_tail >= IN_FRAMES) {
        p->in_dropped++;
    } else {
        unsigned slot = p->in_head % IN_FRAMES;
        memcpy(p->in_buf[slot], f->buf, size);
        if (size < FRAME_BYTES)
            memset(p->in_buf[slot] + size, 0, FRAME_BYTES - size);
        p->in_time[slot] = now_monotonic();
        p->in_head++;
        p->frames_in++;
    }
    pthread_mutex_unlock(&p->lock);
    wake();
    return 0;
}

static int cb_get_frame(cb_port *p, pjm_frame *f) {
    if (!atomic_load_explicit(&p->attached, memory_order_acquire) || f->buf == NULL || f->size < FRAME_BYTES) {
        f->type = g_type_none;
        f->size = 0;
        return 0;
    }
    unsigned depth;
    clock_thread_once();
    double now = now_monotonic();
    pthread_mutex_lock(&p->lock);
    if (p->last_get > 0) {
        double gap = now - p->last_get;
        if (gap > 0.030)
            p->clock_gaps++;
        if (gap * 1e6 > (double)p->max_gap_us)
            p->max_gap_us = (uint64_t)(gap * 1e6);
    }
    p->last_get = now;
    if (p->out_head != p->out_tail) {
        memcpy(f->buf, p->out_buf[p->out_tail % OUT_FRAMES], FRAME_BYTES);
        p->out_tail++;
    } else {
        memset(f->buf, 0, FRAME_BYTES); /* the loop was late: silence, never a stale frame */
        p->out_late++;
    }
    depth = p->out_head - p->out_tail;
    p->frames_out++;
    pthread_mutex_unlock(&p->lock);
    f->type = g_type_audio;
    f->size = FRAME_BYTES;
    if (depth < g_low_water)
        wake();
    return 0;
}

static void *cb_clock_src(cb_port *p, int dir) {
    (void)p;
    (void)dir;
    return NULL;
}

static int cb_on_destroy(cb_port *p) {
    p->destroyed++; /* the memory stays: see the header */
    return 0;
}

/* -- loop side ---------------------------------------------------------------------------------------- */

int cbp_abi(void) { return (int)sizeof(pjm_port); }

int cbp_frame_bytes(void) { return FRAME_BYTES; }

/* Create the process's eventfd (once) and set the pjmedia constants. Returns the fd or -errno. */
int cbp_init(int type_audio, int type_none, unsigned low_water, int clock_rt) {
    g_clock_rt = clock_rt;
    g_type_audio = type_audio;
    g_type_none = type_none;
    g_low_water = low_water < OUT_FRAMES ? low_water : OUT_FRAMES;
    if (g_efd < 0) {
        g_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (g_efd < 0)
            return -errno;
    }
    return g_efd;
}

/* The loop woke up: consume the eventfd, then allow the next wake. Frames queued after this wake it again. */
void cbp_rearm(void) {
    uint64_t value;
    if (g_efd >= 0) {
        ssize_t n = read(g_efd, &value, sizeof value);
        (void)n; /* EAGAIN: nothing was pending */
    }
    atomic_store(&g_wake_pending, 0);
}

int cbp_clock_rt_state(void) { return atomic_load(&g_clock_rt_state); }

unsigned long long cbp_wakes(void) { return atomic_load(&g_wakes); }

cb_port *cbp_new(const char *name) {
    cb_port *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    strncpy(p->name, name, sizeof p->name - 1);
    pthread_mutex_init(&p->lock, NULL);
    p->base.get_clock_src = cb_clock_src;
    p->base.put_frame = cb_put_frame;
    p->base.get_frame = cb_get_frame;
    p->base.on_destroy = cb_on_destroy;
    return p;
}

/* Layout check after pjmedia_port_info_init(&port->info, name, sig, 8000, 1, 16, 160): the audio format detail
 * (clock_rate, channel_count, frame_time_usec, bits_per_sample) must sit where this file expects it. */
int cbp_info_ok(cb_port *p) {
    const unsigned char *info = p->base.info;
    uint32_t v[4];
    memcpy(v, info + 36, sizeof v);
    const char *name_ptr;
    memcpy(&name_ptr, info, sizeof name_ptr);
    return v[0] == 8000 && v[1] == 1 && v[2] == 20000 && v[3] == 16 && name_ptr == p->name;
}

/* Attach (1) or detach (0). Either way both rings start empty; counters are cumulative. */
void cbp_attach(cb_port *p, int on) {
    pthread_mutex_lock(&p->lock);
    p->in_tail = p->in_head;
    p->out_tail = p->out_head;
    p->last_get = 0;
    atomic_store_explicit(&p->attached, on ? 1 : 0, memory_order_release);
    pthread_mutex_unlock(&p->lock);
}

/* Move up to `max` received frames out: PCM into `out` (max * 320 bytes), capture times into `times`. */
int cbp_read_in(cb_port *p, unsigned char *out, double *times, int max) {
    int n = 0;
    pthread_mutex_lock(&p->lock);
    while (n < max && p->in_tail != p->in_head) {
        unsigned slot = p->in_tail % IN_FRAMES;
        memcpy(out + (size_t)n * FRAME_BYTES, p->in_buf[slot], FRAME_BYTES);
        times[n] = p->in_time[slot];
        p->in_tail++;
        n++;
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* Frames the loop should add to have `target` queued (never more than the ring holds). */
int cbp_out_need(cb_port *p, unsigned target) {
    if (target > OUT_FRAMES)
        target = OUT_FRAMES;
    pthread_mutex_lock(&p->lock);
    unsigned depth = p->out_head - p->out_tail;
    pthread_mutex_unlock(&p->lock);
    return depth >= target ? 0 : (int)(target - depth);
}

int cbp_out_depth(cb_port *p) {
    pthread_mutex_lock(&p->lock);
    int depth = (int)(p->out_head - p->out_tail);
    pthread_mutex_unlock(&p->lock);
    return depth;
}

/* Queue `n` frames (n * 320 bytes) for the caller; returns how many fitted. */
int cbp_write_out(cb_port *p, const unsigned char *data, int n) {
    int done = 0;
    pthread_mutex_lock(&p->lock);
    while (done < n && p->out_head - p->out_tail < OUT_FRAMES) {
        memcpy(p->out_buf[p->out_head % OUT_FRAMES], data + (size_t)done * FRAME_BYTES, FRAME_BYTES);
        p->out_head++;
        done++;
    }
    pthread_mutex_unlock(&p->lock);
    return done;
}

/* Barge-in: drop what is queued for the caller; returns how many frames were dropped (never heard). */
int cbp_flush_out(cb_port *p) {
    pthread_mutex_lock(&p->lock);
    int n = (int)(p->out_head - p->out_tail);
    p->out_tail = p->out_head;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* frames_in, frames_out, empty_in, in_dropped, out_late, destroyed, clock_gaps, max_gap_us */
void cbp_counters(cb_port *p, unsigned long long out[8]) {
    pthread_mutex_lock(&p->lock);
    out[0] = p->frames_in;
    out[1] = p->frames_out;
    out[2] = p->empty_in;
    out[3] = p->in_dropped;
    out[4] = p->out_late;
    out[5] = p->destroyed;
    out[6] = p->clock_gaps;
    out[7] = p->max_gap_us;
    pthread_mutex_unlock(&p->lock);
}
