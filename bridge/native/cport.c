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
 * Uplink: while a call's Realtime socket is bound to its port (cbp_uplink_bind), put_frame does
 * the whole inbound path itself, on the clock thread: the resampler's C kernel (cbr_up of resample.c, typed in
 * callbridge.h and passed in as a function pointer with the call's own filter state), base64, the constant JSON
 * text of the call's dialect's audio append around it (its AppendTemplate, given to cbp_uplink_bind by
 * bridge/sip/cport.py), a masked WebSocket text frame (RFC 6455 §5.2) and send(2). Over TLS (cbp_uplink_tls) the
 * call's TLS engine (tls.c, whose cbt_seal is passed in as a function pointer) seals every write before send(2).
 * The loop is not woken for the caller's frames at all. Every other frame of the connection (websockets' own:
 * session updates, truncates, pings, the close) goes through cbp_uplink_write under the same lock, so the socket
 * sees one ordered stream; bytes the kernel does not take at once wait in a pending buffer that the next write
 * from either side flushes first. A close frame ends data frames (cbp_uplink_end_data); a failed send ends the
 * uplink and leaves the socket to the loop, which sees the error on its read side. The loop unbinds before the
 * socket is closed (the connection's connection_lost), and takes back the bytes still pending.
 * Echo guard (cbp_uplink_guard): where the call's echo guard is the C one (echo.c), the uplink hands each frame to
 * it first (cbe_uplink, typed in callbridge.h): it keeps the frame as the line's return and gives the frame as the
 * model should get it (tempered), which is what is upsampled and sent. Frames not sent are handed to it too.
 * Reference (cbp_reference): where the call's echo guard is the C one, get_frame hands it each frame the caller is
 * sent (the loop's frame, or the silence sent when the loop was late), so the guard's reference is what was sent,
 * frame for frame, without the loop: frames queued and then flushed never reach it.
 * Pull (cbp_pull): where the call's outbound source is its C playout ring with nothing on the way that needs the
 * frames (no listen-in, take-over, echo hold or recording: bridge/sip/cport.py, NativePort.reroute), the loop's
 * top-up takes them from the ring here (cbq_pop of playout.c, passed in as a function pointer with the call's
 * ring), in the same blocks and at the same moments as the Python top-up would, so the ring's accounting is the
 * same: cbp_poll does it when no caller frames wait for the loop (else the loop delivers them first and calls
 * cbp_fill), and cbp_fill for a top-up the loop asks for. Only the loop thread reads or sets it.
 * Mirror (cbp_uplink_mirror, for listen-in): while on, each frame the uplink sends is also queued for the loop,
 * with its capture time negated, so the loop can observe the caller's audio without sending it again.
 *
 * Downlink (cbp_downlink_bind, `bench calls --ceiling duplex` only: a worker's downlink runs in its loop): while a
 * socket is bound for the model's audio, get_frame feeds the port itself, on the clock thread: it reads what the
 * socket has (recv, never waiting), takes each whole WebSocket text frame from it, finds the event's "type" and, for
 * the audio delta's type given at bind, its "delta" string, decodes the base64, downsamples it with the resampler's
 * C kernel (cbr_down, passed in as the uplink's cbr_up is) into a playout ring at 8 kHz, and plays the ring out a
 * frame per tick; the loop is not woken. A dry ring after the first audio plays silence, counted as an underrun.
 * The ring holds 2 s, or more (cbp_downlink_hold: a model that sends ahead of real time); over TLS
 * (cbp_downlink_tls) the call's engine (tls.c's cbt_feed and cbt_read, passed in) opens what the socket brings.
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
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "callbridge.h"

#define FRAME_BYTES CB_FRAME_BYTES
#define IN_FRAMES 64    /* 1.28 s: the loop may stall this long before frames are dropped (and counted) */
#define OUT_FRAMES 16   /* the most the loop may queue for the caller: lead + beat - 1 frames (cport.py) */

/* pjmedia_frame (pjmedia/frame.h) */
typedef struct {
    int type;
    void *buf;
    size_t size;
    uint64_t timestamp;
    uint64_t bit_info;
} pjm_frame;

typedef struct cb_port cb_port;

#define UP_PENDING_MAX (256 * 1024) /* about 3 s of appends: beyond it the caller's frames are dropped, counted */
#define UP_SAMPLES (CB_FRAME_SAMPLES * CBR_FACTOR)
#define UP_B64 ((UP_SAMPLES * 2 + 2) / 3 * 4)
#define UP_TEMPLATE_MAX 96
#define DN_RING 16384            /* the downlink's playout at 8 kHz: 2 s (cbp_downlink_hold: more); beyond it a
                                  * delta's audio is dropped */
#define DN_READ_MAX (1 << 20)    /* the longest WebSocket frame the downlink takes; a longer one ends it */
#define DN_TYPE_MAX 64
typedef int (*frame_fn)(cb_port *, pjm_frame *);
/* tls.c's cbt_feed and cbt_read (bridge/realtime/tls_native.py), passed in as cbt_seal is */
typedef int (*dn_feed_fn)(cbt_tls *t, const void *data, int len);
typedef int (*dn_read_fn)(cbt_tls *t, void *buf, int cap);

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
    cbe_played_fn ref_fn; /* the call's echo guard's reference (cbp_reference), under `lock` */
    cbe_guard *ref_guard;
    cbq_pop_fn pull_fn; /* the call's C playout ring, pulled by the loop's top-up (cbp_pull): loop thread only */
    cbq *pull_q;
    uint64_t pulled; /* frames pulled from it */
    /* uplink (see the header): everything below is guarded by up_lock, up_on is also read without it */
    pthread_mutex_t up_lock;
    atomic_int up_on;
    atomic_int mirror; /* also queue each frame the uplink sends for the loop, time negated (listen-in) */
    atomic_int onset;  /* the echo guard heard the caller's onset over the agent: told by the next cbp_poll */
    int up_fd;
    int up_closed;  /* a close frame went out, or a send failed: no more data frames */
    int up_errno;   /* why a send failed */
    cbr_up_fn up_fn;
    cbr_up_state *up_state;
    cbe_uplink_fn up_guard_fn; /* the call's echo guard (echo.c), if it runs here: each frame is heard by it first */
    cbe_guard *up_guard;
    char up_prefix[UP_TEMPLATE_MAX], up_suffix[UP_TEMPLATE_MAX]; /* the dialect's append around the base64 */
    size_t up_prefix_len, up_suffix_len;
    cbt_seal_fn up_seal_fn; /* over TLS (cbp_uplink_tls): every byte written is sealed by the call's engine first */
    cbt_tls *up_tls;
    unsigned char *sealed; /* the sealed bytes of one write */
    size_t sealed_cap;
    unsigned char *pending;
    size_t pending_len, pending_cap;
    uint64_t up_frames;
    atomic_ullong up_dropped; /* also counted under `lock` (bind, and a put that raced with it) */
    double up_capture_s, up_write_s; /* the last frame: clock callback to send(2), and send(2) itself */
    unsigned char up_rand[256];      /* masking keys (RFC 6455 §5.3: unpredictable), refilled by getrandom */
    unsigned up_rand_pos;
    /* downlink (see the header): guarded by dn_lock, dn_on is also read without it */
    pthread_mutex_t dn_lock;
    atomic_int dn_on;
    int dn_fd;
    int dn_started; /* audio has come: a dry ring from here on is an underrun */
    cbr_down_fn dn_fn;
    cbr_down_state *dn_state;
    char dn_type[DN_TYPE_MAX]; /* the audio delta's event type */
    size_t dn_type_len;
    unsigned char *dn_in;      /* bytes read and not yet a whole frame */
    size_t dn_in_len, dn_in_cap;
    int16_t *dn_pcm;           /* one delta's 24 kHz samples */
    size_t dn_pcm_cap;
    unsigned dn_head, dn_tail; /* the playout ring, in samples */
    uint64_t dn_deltas, dn_frames, dn_underruns, dn_dropped, dn_bad;
    int dn_errno;              /* why the socket was given up (0: it was not) */
    dn_feed_fn dn_feed_fn;     /* over TLS (cbp_downlink_tls): the call's engine opens what the socket brings */
    dn_read_fn dn_read_fn;
    cbt_tls *dn_tls;
    int16_t *dn_ring;          /* dn_fixed, or a longer ring cbp_downlink_hold made (kept with the port) */
    unsigned dn_cap;           /* its samples, a power of two */
    int16_t dn_fixed[DN_RING];
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

/* -- the keeper (a thread of its own) ----------------------------------------------------------------------
 * The clock wakes the loop only for a port it reads: a port attached but out of the conference (a caller on hold
 * during a warm transfer's briefing) wakes nobody, and the loop's beat, its SIP poll among its chores, would stop
 * without a word. The keeper wakes the loop once nothing has for a hold while any port is attached, so the loop's
 * beat never waits longer than that and the loop needs no timer of its own to watch for it. It sleeps until a
 * hold after the loop's last wake-up (cbp_rearm), so while the clock wakes the loop every beat it only looks. */
static atomic_int g_attached;            /* ports attached now (cbp_attach) */
static atomic_llong g_rearmed_ns;        /* the loop's last wake-up (cbp_rearm), CLOCK_MONOTONIC */
static atomic_llong g_hold_ns;           /* the keeper's hold; 0: stop */
static atomic_int g_keeper_pid;          /* the process whose keeper runs (a forked child has none) */

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *keeper(void *arg) {
    (void)arg;
    for (;;) {
        long long hold = atomic_load(&g_hold_ns);
        if (hold <= 0) {
            /* Stopped. A start meanwhile (cbp_keep) found this keeper running and started none: it goes on if it
             * takes the process back, else the keeper started since (after it let go) runs in its stead. */
            atomic_store(&g_keeper_pid, 0);
            int none = 0;
            if (atomic_load(&g_hold_ns) <= 0 || !atomic_compare_exchange_strong(&g_keeper_pid, &none, (int)getpid()))
                return NULL;
            continue;
        }
        long long due = atomic_load(&g_rearmed_ns) + hold, now = mono_ns();
        if (now >= due) {
            if (atomic_load(&g_attached) > 0)
                wake();
            due = now + hold;
        }
        struct timespec until = {.tv_sec = (time_t)(due / 1000000000LL), .tv_nsec = (long)(due % 1000000000LL)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
        }
    }
}

/* Start the keeper with a hold of `hold_ms` (or change it), or stop it (0; it ends within a hold). Returns 0 or
 * -errno (no thread: the loop keeps its own watch). */
int cbp_keep(unsigned hold_ms) {
    atomic_store(&g_hold_ns, (long long)hold_ms * 1000000LL);
    int me = (int)getpid(), running = atomic_load(&g_keeper_pid);
    /* this process's keeper runs (or, stopping, takes the process back: see keeper), or a forked child's parent's
     * pid is replaced by the child's own */
    if (hold_ms == 0 || running == me || !atomic_compare_exchange_strong(&g_keeper_pid, &running, me))
        return 0;
    atomic_store(&g_rearmed_ns, mono_ns());
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int rc = pthread_create(&thread, &attr, keeper, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_store(&g_keeper_pid, 0);
        return -rc;
    }
    return 0;
}

static double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock behind Python's time.monotonic() on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* -- uplink (clock thread and loop, under up_lock) ------------------------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const unsigned char *in, size_t n, char *out) {
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/* The socket failed (up_errno != 0 from here on): nothing more is written, what was pending is dropped. */
static void up_fail(cb_port *p, int err) {
    p->up_closed = 1;
    p->up_errno = err ? err : EIO;
    p->pending_len = 0;
}

/* Hand what is pending to the kernel, as much as it takes (a close frame among it too). */
static void up_flush(cb_port *p) {
    size_t done = 0;
    while (done < p->pending_len) {
        ssize_t w = send(p->up_fd, p->pending + done, p->pending_len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                up_fail(p, errno);
                return;
            }
            break;
        }
        done += (size_t)w;
    }
    memmove(p->pending, p->pending + done, p->pending_len - done);
    p->pending_len -= done;
}

static int up_keep(cb_port *p, const unsigned char *data, size_t n) {
    if (p->pending_len + n > p->pending_cap) {
        size_t cap = p->pending_cap ? p->pending_cap : 16384;
        while (cap < p->pending_len + n)
            cap *= 2;
        unsigned char *grown = realloc(p->pending, cap);
        if (grown == NULL)
            return -1;
        p->pending = grown;
        p->pending_cap = cap;
    }
    memcpy(p->pending + p->pending_len, data, n);
    p->pending_len += n;
    return 0;
}

/* Over TLS: seal `n` bytes with the call's engine into p->sealed (with whatever the engine had queued before
 * them). Returns the sealed length, or -1 if the engine failed (the connection is then unusable). */
static long up_seal(cb_port *p, const unsigned char *data, size_t n) {
    for (;;) {
        int got = p->up_seal_fn(p->up_tls, data, (int)n, p->sealed, (int)p->sealed_cap);
        if (got >= 0)
            return got;
        if (got != -1 || p->sealed_cap > (size_t)1 << 26)
            return -1;
        size_t cap = p->sealed_cap ? 2 * p->sealed_cap : 2 * n + 16384; /* -1: more room needed, nothing sealed */
        unsigned char *grown = realloc(p->sealed, cap);
        if (grown == NULL)
            return -1;
        p->sealed = grown;
        p->sealed_cap = cap;
    }
}

/* Write one whole frame in order after what is pending. `droppable` (the caller's audio): if the kernel has not
 * taken the backlog, drop the frame rather than grow it past UP_PENDING_MAX. 0: sent or kept, 1: dropped,
 * -1: the socket failed. Over TLS the frame is sealed first; a frame to drop is dropped before it is sealed (a
 * sealed record must go out: the next one's sequence number follows it). */
static int up_send(cb_port *p, const unsigned char *data, size_t n, int droppable) {
    if (p->pending_len)
        up_flush(p);
    if (p->up_errno)
        return -1;
    if (p->up_seal_fn != NULL) {
        if (droppable && p->pending_len && p->pending_len + n > UP_PENDING_MAX)
            return 1;
        long sealed = up_seal(p, data, n);
        if (sealed < 0) {
            up_fail(p, EPROTO);
            return -1;
        }
        data = p->sealed;
        n = (size_t)sealed;
        droppable = 0;
    }
    size_t done = 0;
    if (p->pending_len == 0) {
        while (done < n) {
            ssize_t w = send(p->up_fd, data + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    up_fail(p, errno);
                    return -1;
                }
                break;
            }
            done += (size_t)w;
        }
        if (done == n)
            return 0;
    }
    if (droppable && done == 0 && p->pending_len + n > UP_PENDING_MAX)
        return 1;
    return up_keep(p, data + done, n - done) == 0 ? 0 : -1;
}

static void up_mask_key(cb_port *p, unsigned char key[4]) {
    if (p->up_rand_pos + 4 > sizeof p->up_rand) {
        size_t got = 0;
        while (got < sizeof p->up_rand) {
            ssize_t r = getrandom(p->up_rand + got, sizeof p->up_rand - got, 0);
            if (r <= 0)
                break; /* not reachable once the pool is initialized (this runs long after boot) */
            got += (size_t)r;
        }
        p->up_rand_pos = 0;
    }
    memcpy(key, p->up_rand + p->up_rand_pos, 4);
    p->up_rand_pos += 4;
}

/* One caller frame (up to 160 samples at 8 kHz, a short one padded with silence) -> one masked
 * input_audio_buffer.append text frame, written. */
static void up_frame(cb_port *p, const void *pcm, size_t size, double t0) {
    int16_t in[CB_FRAME_SAMPLES] = {0}, tempered[CB_FRAME_SAMPLES], high[UP_SAMPLES];
    memcpy(in, pcm, size < FRAME_BYTES ? size : FRAME_BYTES);
    const int16_t *heard = in;
    int guarded = p->up_guard_fn != NULL ? p->up_guard_fn(p->up_guard, in, CB_FRAME_SAMPLES, tempered) : -1;
    if (guarded >= 0)
        heard = tempered; /* the echo guard's: the frame as the model should get it */
    if (guarded == 1) { /* the caller's onset over the agent: the loop is told at once (cbp_poll) */
        atomic_store_explicit(&p->onset, 1, memory_order_relaxed);
        wake();
    }
    int n = p->up_fn(p->up_state, heard, CB_FRAME_SAMPLES, high);
    if (n != UP_SAMPLES) {
        p->up_dropped++;
        return;
    }
    unsigned char frame[8 + 2 * UP_TEMPLATE_MAX + UP_B64];
    unsigned char *payload = frame + 8;
    size_t len = 0;
    memcpy(payload, p->up_prefix, p->up_prefix_len);
    len += p->up_prefix_len;
    len += b64_encode((const unsigned char *)high, sizeof high, (char *)payload + len);
    memcpy(payload + len, p->up_suffix, p->up_suffix_len);
    len += p->up_suffix_len;
    unsigned char key[4];
    up_mask_key(p, key);
    frame[0] = 0x81; /* FIN, text */
    frame[1] = 0x80 | 126; /* masked, 16-bit length: the payload is 126..65535 bytes */
    frame[2] = (unsigned char)(len >> 8);
    frame[3] = (unsigned char)len;
    memcpy(frame + 4, key, 4);
    for (size_t i = 0; i < len; i++)
        payload[i] ^= key[i & 3];
    double t1 = now_monotonic();
    int rc = up_send(p, frame, 8 + len, 1);
    double t2 = now_monotonic();
    if (rc == 0) {
        p->up_frames++;
        p->up_capture_s = t1 - t0;
        p->up_write_s = t2 - t1;
    } else if (rc == 1) {
        p->up_dropped++;
    }
}

/* A caller frame that is not sent, kept by the echo guard all the same (its return stays whole, sample for
 * sample). Under up_lock, or with the uplink off. */
static void up_guard_keep(cb_port *p, const void *pcm, size_t size) {
    if (p->up_guard_fn == NULL)
        return;
    int16_t in[CB_FRAME_SAMPLES] = {0};
    memcpy(in, pcm, size < FRAME_BYTES ? size : FRAME_BYTES);
    p->up_guard_fn(p->up_guard, in, CB_FRAME_SAMPLES, NULL);
}

/* put_frame while bound: 1 if the frame was taken here (sent, dropped or empty), 0 to queue it for the loop. */
static int up_put(cb_port *p, pjm_frame *f) {
    int taken = 0;
    pthread_mutex_lock(&p->up_lock);
    int audio = f->type == g_type_audio && f->size > 0 && f->buf != NULL;
    if (atomic_load_explicit(&p->up_on, memory_order_relaxed)) {
        taken = 1;
        if (!audio || p->up_closed) {
            if (audio) {
                p->up_dropped++; /* the session is closing or lost: the loop would drop it too */
                up_guard_keep(p, f->buf, f->size); /* ...after its echo guard heard it */
            }
            if (p->pending_len && !p->up_errno)
                up_flush(p); /* every tick moves the backlog on, the close frame included */
        } else {
            up_frame(p, f->buf, f->size, now_monotonic());
        }
    }
    pthread_mutex_unlock(&p->up_lock);
    if (taken) { /* the port's own counters, as the queueing path keeps them */
        int mirrored = 0;
        pthread_mutex_lock(&p->lock);
        if (audio) {
            p->frames_in++;
            if (atomic_load_explicit(&p->mirror, memory_order_relaxed) && p->in_head - p->in_tail < IN_FRAMES) {
                size_t size = f->size < FRAME_BYTES ? f->size : FRAME_BYTES;
                unsigned slot = p->in_head % IN_FRAMES;
                memcpy(p->in_buf[slot], f->buf, size);
                if (size < FRAME_BYTES)
                    memset(p->in_buf[slot] + size, 0, FRAME_BYTES - size);
                p->in_time[slot] = -now_monotonic(); /* negated: a copy to observe, already sent */
                p->in_head++;
                mirrored = 1;
            }
        } else {
            p->empty_in++;
        }
        pthread_mutex_unlock(&p->lock);
        if (mirrored)
            wake();
    }
    return taken;
}

static int cb_put_frame(cb_port *p, pjm_frame *f) {
    if (!atomic_load_explicit(&p->attached, memory_order_acquire))
        return 0;
    if (atomic_load_explicit(&p->up_on, memory_order_acquire) && up_put(p, f))
        return 0; /* sent from here: the loop is not woken for it */
    if (f->type != g_type_audio || f->size == 0 || f->buf == NULL) {
        p->empty_in++;
        return 0;
    }
    size_t size = f->size < FRAME_BYTES ? f->size : FRAME_BYTES;
    pthread_mutex_lock(&p->lock);
    if (atomic_load_explicit(&p->up_on, memory_order_relaxed)) {
        p->up_dropped++; /* bound since the check above: the loop must not get it (see cbp_uplink_bind) */
    } else if (p->in_head - p->in_tail >= IN_FRAMES) {
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

/* -- downlink (clock thread, under dn_lock) ------------------------------------------------------------- */

static signed char B64_VALUE[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_table(void) {
    memset(B64_VALUE, -1, sizeof B64_VALUE);
    for (int i = 0; i < 64; i++)
        B64_VALUE[(unsigned char)B64[i]] = (signed char)i;
}

/* The string value of top-level `"key"` in a JSON object's text: its first byte and length (escapes left in),
 * NULL if not there. The audio events carry no nested object that could hold the same key. */
static const unsigned char *json_string(const unsigned char *text, size_t n, const char *key, size_t key_len,
                                        size_t *value_len) {
    const unsigned char *end = text + n, *at = text;
    while ((at = memmem(at, (size_t)(end - at), key, key_len)) != NULL) {
        const unsigned char *v = at + key_len;
        at += key_len;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
            v++;
        if (v >= end || *v != ':')
            continue;
        v++;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
            v++;
        if (v >= end || *v != '"')
            continue;
        const unsigned char *s = ++v;
        while (v < end && *v != '"')
            v += *v == '\\' ? 2 : 1;
        if (v >= end)
            return NULL;
        *value_len = (size_t)(v - s);
        return s;
    }
    return NULL;
}

/* Base64 text (JSON's escaped "\/" taken as "/") -> bytes; returns their number, or -1 on a bad character. */
static long b64_decode(const unsigned char *in, size_t n, unsigned char *out) {
    uint32_t acc = 0;
    int bits = 0;
    long o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = in[i];
        if (c == '\\' || c == '=')
            continue;
        signed char v = B64_VALUE[c];
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* 24 kHz samples -> the playout ring at 8 kHz, through the call's downsampler, in the kernel's largest chunks. */
static void dn_play(cb_port *p, const int16_t *pcm, size_t n) {
    int16_t low[4800 / CBR_FACTOR + 2];
    while (n > 0) {
        int chunk = n > 4800 ? 4800 : (int)n;
        int got = p->dn_fn(p->dn_state, pcm, chunk, low);
        if (got < 0) {
            p->dn_bad++;
            return;
        }
        for (int i = 0; i < got; i++) {
            if (p->dn_head - p->dn_tail >= p->dn_cap) {
                p->dn_dropped += (uint64_t)(got - i);
                break;
            }
            p->dn_ring[p->dn_head++ % p->dn_cap] = low[i];
        }
        pcm += chunk;
        n -= (size_t)chunk;
    }
}

/* One text frame's payload: the audio delta's samples played, any other event passed over. */
static void dn_event(cb_port *p, const unsigned char *text, size_t n) {
    size_t type_len = 0, delta_len = 0;
    const unsigned char *type = json_string(text, n, "\"type\"", 6, &type_len);
    if (type == NULL || type_len != p->dn_type_len || memcmp(type, p->dn_type, type_len) != 0)
        return;
    const unsigned char *delta = json_string(text, n, "\"delta\"", 7, &delta_len);
    if (delta == NULL) {
        p->dn_bad++;
        return;
    }
    size_t need = delta_len / 4 * 3 + 3;
    if (need > p->dn_pcm_cap) {
        int16_t *grown = realloc(p->dn_pcm, need + 1);
        if (grown == NULL) {
            p->dn_bad++;
            return;
        }
        p->dn_pcm = grown;
        p->dn_pcm_cap = need;
    }
    long bytes = b64_decode(delta, delta_len, (unsigned char *)p->dn_pcm);
    if (bytes < 0) {
        p->dn_bad++;
        return;
    }
    p->dn_deltas++;
    p->dn_started = 1;
    dn_play(p, p->dn_pcm, (size_t)bytes / 2);
}

static void dn_fail(cb_port *p, int err) {
    p->dn_errno = err ? err : EIO;
    atomic_store(&p->dn_on, 0);
}

/* Room after dn_in_len (the buffer grown if full). -1: it may not grow (the downlink failed). */
static int dn_room(cb_port *p) {
    if (p->dn_in_len < p->dn_in_cap)
        return 0;
    if (p->dn_in_cap >= DN_READ_MAX) {
        dn_fail(p, EMSGSIZE);
        return -1;
    }
    size_t cap = p->dn_in_cap ? 2 * p->dn_in_cap : 65536;
    unsigned char *grown = realloc(p->dn_in, cap);
    if (grown == NULL) {
        dn_fail(p, ENOMEM);
        return -1;
    }
    p->dn_in = grown;
    p->dn_in_cap = cap;
    return 0;
}

/* recv without waiting into `buf`: its bytes, 0 nothing now, -1 the socket failed or closed (dn_fail called). */
static ssize_t dn_recv(cb_port *p, unsigned char *buf, size_t room) {
    for (;;) {
        ssize_t r = recv(p->dn_fd, buf, room, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            dn_fail(p, r == 0 ? ECONNRESET : errno);
            return -1;
        }
        return r < 0 ? 0 : r;
    }
}

/* Over TLS (cbp_downlink_tls): what the socket has, fed to the call's engine, and the plaintext it opens into
 * dn_in. -1: failed (dn_fail called). */
static int dn_recv_tls(cb_port *p) {
    unsigned char cipher[16384];
    for (;;) {
        ssize_t r = dn_recv(p, cipher, sizeof cipher);
        if (r < 0)
            return -1;
        if (r > 0 && p->dn_feed_fn(p->dn_tls, cipher, (int)r) != 0) {
            dn_fail(p, ENOMEM);
            return -1;
        }
        if ((size_t)r < sizeof cipher)
            break;
    }
    for (;;) {
        if (dn_room(p) != 0)
            return -1;
        size_t room = p->dn_in_cap - p->dn_in_len;
        int got = p->dn_read_fn(p->dn_tls, p->dn_in + p->dn_in_len, room > 1u << 30 ? 1 << 30 : (int)room);
        if (got == 0)
            return 0;
        if (got < 0) {
            dn_fail(p, got == -1 ? ECONNRESET : EPROTO); /* close_notify, or the engine failed */
            return -1;
        }
        p->dn_in_len += (size_t)got;
    }
}

/* What the socket has now, read without waiting; each whole frame taken. */
static void dn_feed(cb_port *p) {
    if (p->dn_tls != NULL) {
        if (dn_recv_tls(p) != 0)
            return;
    } else {
        for (;;) {
            if (dn_room(p) != 0)
                return;
            size_t room = p->dn_in_cap - p->dn_in_len;
            ssize_t r = dn_recv(p, p->dn_in + p->dn_in_len, room);
            if (r < 0)
                return;
            p->dn_in_len += (size_t)r;
            if ((size_t)r < room)
                break;
        }
    }
    size_t at = 0;
    while (p->dn_in_len - at >= 2) {
        const unsigned char *h = p->dn_in + at;
        size_t have = p->dn_in_len - at, head = 2;
        uint64_t len = h[1] & 127;
        if (len == 126) {
            if (have < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            head = 4;
        } else if (len == 127) {
            if (have < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            head = 10;
        }
        if ((h[1] & 0x80) || len > DN_READ_MAX) { /* a server's frames are not masked (RFC 6455 §5.1) */
            dn_fail(p, EPROTO);
            return;
        }
        if (have < head + len)
            break;
        if ((h[0] & 0x8f) == 0x81) /* FIN, text: one whole event */
            dn_event(p, h + head, (size_t)len);
        at += head + (size_t)len;
    }
    memmove(p->dn_in, p->dn_in + at, p->dn_in_len - at);
    p->dn_in_len -= at;
}

/* get_frame while the downlink is bound: the socket read, then one frame from the playout ring into `buf`. */
static void dn_frame(cb_port *p, unsigned char *buf) {
    pthread_mutex_lock(&p->dn_lock);
    if (atomic_load_explicit(&p->dn_on, memory_order_relaxed))
        dn_feed(p);
    unsigned have = p->dn_head - p->dn_tail, take = have < CB_FRAME_SAMPLES ? have : CB_FRAME_SAMPLES;
    int16_t *out = (int16_t *)buf;
    for (unsigned i = 0; i < take; i++)
        out[i] = p->dn_ring[p->dn_tail++ % p->dn_cap];
    if (take < CB_FRAME_SAMPLES) {
        memset(out + take, 0, (CB_FRAME_SAMPLES - take) * sizeof *out);
        if (p->dn_started)
            p->dn_underruns++;
    }
    p->dn_frames++;
    pthread_mutex_unlock(&p->dn_lock);
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
    int downlink = atomic_load_explicit(&p->dn_on, memory_order_acquire);
    if (downlink) {
        pthread_mutex_unlock(&p->lock); /* dn_lock is never taken under `lock` */
        dn_frame(p, f->buf);
        pthread_mutex_lock(&p->lock);
    } else if (p->out_head != p->out_tail) {
        memcpy(f->buf, p->out_buf[p->out_tail % OUT_FRAMES], FRAME_BYTES);
        p->out_tail++;
    } else {
        memset(f->buf, 0, FRAME_BYTES); /* the loop was late: silence, never a stale frame */
        p->out_late++;
    }
    if (p->ref_fn != NULL) /* under `lock`: the guard outlives the hook (cbp_attach(0) clears it) */
        p->ref_fn(p->ref_guard, (const int16_t *)f->buf, CB_FRAME_SAMPLES);
    depth = p->out_head - p->out_tail;
    p->frames_out++;
    pthread_mutex_unlock(&p->lock);
    f->type = g_type_audio;
    f->size = FRAME_BYTES;
    if (depth < g_low_water && !downlink)
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

int cbp_downlink_unbind(cb_port *p);

int cbp_abi(void) { return (int)sizeof(pjm_port); }

int cbp_frame_bytes(void) { return FRAME_BYTES; }

int cbp_out_frames(void) { return OUT_FRAMES; }

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
    atomic_store(&g_rearmed_ns, mono_ns());
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
    pthread_mutex_init(&p->up_lock, NULL);
    pthread_mutex_init(&p->dn_lock, NULL);
    p->up_fd = -1;
    p->dn_fd = -1;
    p->dn_ring = p->dn_fixed;
    p->dn_cap = DN_RING;
    p->up_rand_pos = sizeof p->up_rand;
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

/* Attach (1) or detach (0). Either way both rings start empty and no socket is bound (a call's session unbinds
 * before it ends; this is the safety net that keeps a pooled port from ever writing to an old call's socket);
 * counters are cumulative. Detaching also forgets the echo guard's reference hook (cbp_reference, set before
 * attaching: the first frame sent is its first). */
void cbp_attach(cb_port *p, int on) {
    pthread_mutex_lock(&p->up_lock);
    atomic_store(&p->up_on, 0);
    atomic_store(&p->mirror, 0); /* a port goes back to the pool (or to a new call) without it */
    atomic_store(&p->onset, 0);
    p->up_fd = -1;
    p->up_state = NULL;
    p->up_guard_fn = NULL;
    p->up_guard = NULL;
    p->up_seal_fn = NULL;
    p->up_tls = NULL;
    p->pending_len = 0;
    pthread_mutex_unlock(&p->up_lock);
    cbp_downlink_unbind(p);
    pthread_mutex_lock(&p->lock);
    p->in_tail = p->in_head;
    p->out_tail = p->out_head;
    p->last_get = 0;
    p->pull_fn = NULL; /* a pooled port never pulls from an old call's ring */
    p->pull_q = NULL;
    if (!on) {
        p->ref_fn = NULL;
        p->ref_guard = NULL;
    }
    if (atomic_exchange_explicit(&p->attached, on ? 1 : 0, memory_order_acq_rel) != (on ? 1 : 0))
        atomic_fetch_add(&g_attached, on ? 1 : -1); /* the keeper's count */
    pthread_mutex_unlock(&p->lock);
}

/* The call's echo guard's reference: each frame get_frame gives pjmedia is handed to `fn` (cbe_played of echo.c)
 * with `guard`, on the clock thread. NULL: none. Set before attaching; detaching clears it (the loop keeps the
 * guard alive until then). */
void cbp_reference(cb_port *p, cbe_played_fn fn, cbe_guard *guard) {
    pthread_mutex_lock(&p->lock);
    p->ref_fn = guard != NULL ? fn : NULL;
    p->ref_guard = guard;
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

int cbp_write_out(cb_port *p, const unsigned char *data, int n);

/* `need` frames (at most OUT_FRAMES) from the ring pulled (cbp_pull) into the queue for the caller. */
static int pull_into(cb_port *p, unsigned need) {
    unsigned char block[OUT_FRAMES * FRAME_BYTES];
    if (need > OUT_FRAMES)
        need = OUT_FRAMES;
    p->pull_fn(p->pull_q, block, (int)need, now_monotonic());
    p->pulled += need;
    return cbp_write_out(p, block, (int)need);
}

/* The call's C playout ring, for the loop's top-up to pull from in C (see the header); `fn` cbq_pop, NULL `q`:
 * none (the loop tops up from Python). Loop thread only; detaching forgets it. */
void cbp_pull(cb_port *p, cbq_pop_fn fn, cbq *q) {
    p->pull_fn = q != NULL ? fn : NULL;
    p->pull_q = p->pull_fn != NULL ? q : NULL;
}

/* Top the queue for the caller up to `target` from the pulled ring: the frames added, -1 if none is pulled. */
int cbp_fill(cb_port *p, unsigned target) {
    if (p->pull_fn == NULL)
        return -1;
    int need = cbp_out_need(p, target);
    return need > 0 ? pull_into(p, (unsigned)need) : 0;
}

/* Frames pulled from rings in C (cbp_pull) so far. */
unsigned long long cbp_pulled(cb_port *p) { return p->pulled; }

/* The loop's look at a port on each drain, in one call: the frames waiting for it (inbound, at most IN_FRAMES)
 * times 256, plus the frames to add to have `target` queued for the caller (as cbp_out_need). Where a ring is
 * pulled (cbp_pull) and no frame waits, those frames are added here from it, and none is left to add. */
/* Added to cbp_poll's answer when the echo guard heard the caller's onset since the last poll. */
#define POLL_ONSET (1 << 20)
int cbp_poll_onset(void) { return POLL_ONSET; }

int cbp_poll(cb_port *p, unsigned target) {
    if (target > OUT_FRAMES)
        target = OUT_FRAMES;
    pthread_mutex_lock(&p->lock);
    unsigned waiting = p->in_head - p->in_tail, depth = p->out_head - p->out_tail;
    pthread_mutex_unlock(&p->lock);
    int need = depth >= target ? 0 : (int)(target - depth);
    if (need > 0 && waiting == 0 && p->pull_fn != NULL) {
        pull_into(p, (unsigned)need);
        need = 0;
    }
    int onset = atomic_exchange_explicit(&p->onset, 0, memory_order_relaxed) ? POLL_ONSET : 0;
    return onset + (int)(waiting << 8) + need;
}

/* The drain's look at every attached port in one call: cbp_poll(ports[i], target) for each of the `n`, and the
 * index and answer of each port the loop must act on in `idx` and `ans` (frames waiting for it, the echo guard's
 * onset, or frames to add where no ring is pulled in C); returns how many. A pulled port with nothing for the loop
 * was topped up here and is not listed: a quiet call costs the loop nothing on a beat. */
int cbp_poll_all(cb_port *const *ports, int n, unsigned target, int *idx, int *ans) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        cb_port *p = ports[i];
        int answer = cbp_poll(p, target);
        if (answer != 0 || p->pull_fn == NULL) {
            idx[k] = i;
            ans[k] = answer;
            k++;
        }
    }
    return k;
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

/* Take back up to `n` of the newest frames queued for the caller (silence the loop queued while it had no
 * audio, now that audio has come); returns how many. The clock takes the oldest, so the newest are still there
 * unless the ring holds fewer than `n`. */
int cbp_out_drop_newest(cb_port *p, int n) {
    pthread_mutex_lock(&p->lock);
    unsigned depth = p->out_head - p->out_tail;
    unsigned k = n <= 0 ? 0 : (unsigned)n < depth ? (unsigned)n : depth;
    p->out_head -= k;
    pthread_mutex_unlock(&p->lock);
    return (int)k;
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

/* -- uplink, loop side ----------------------------------------------------------------------------------- */

/* The longest prefix or suffix an append template may have. */
int cbp_uplink_template_max(void) { return UP_TEMPLATE_MAX; }

/* Send the caller's frames from the clock thread to `fd` (a connected TCP socket whose writes all go through
 * cbp_uplink_write from now on), upsampled by `kernel` (cbr_up) with the filter state at `state` (which nothing
 * else may use while bound), each one's base64 between `prefix` and `suffix`: the constant JSON text of the call's
 * dialect's audio append (bridge/audio/wire.py, AppendTemplate). -1: a bad argument or a template too long. */
int cbp_uplink_bind(cb_port *p, int fd, cbr_up_fn kernel, cbr_up_state *state, const char *prefix, int prefix_len,
                    const char *suffix, int suffix_len) {
    if (fd < 0 || kernel == NULL || state == NULL || prefix == NULL || suffix == NULL)
        return -1;
    if (prefix_len <= 0 || suffix_len < 0 || prefix_len > UP_TEMPLATE_MAX || suffix_len > UP_TEMPLATE_MAX)
        return -1;
    pthread_mutex_lock(&p->up_lock);
    memcpy(p->up_prefix, prefix, (size_t)prefix_len);
    p->up_prefix_len = (size_t)prefix_len;
    memcpy(p->up_suffix, suffix, (size_t)suffix_len);
    p->up_suffix_len = (size_t)suffix_len;
    p->up_fd = fd;
    p->up_fn = kernel;
    p->up_state = state;
    p->up_closed = 0;
    p->up_errno = 0;
    p->pending_len = 0;
    pthread_mutex_lock(&p->lock);
    p->up_dropped += p->in_head - p->in_tail; /* captured while the session was away: never replayed */
    for (; p->in_tail != p->in_head; p->in_tail++) /* but heard by the echo guard */
        if (p->in_time[p->in_tail % IN_FRAMES] >= 0) /* (a mirrored copy was heard as it was sent) */
            up_guard_keep(p, p->in_buf[p->in_tail % IN_FRAMES], FRAME_BYTES);
    atomic_store_explicit(&p->up_on, 1, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->up_lock);
    return 0;
}

/* The call's echo guard runs here while the uplink is bound: each caller frame is handed to `fn` (cbe_uplink of
 * echo.c) with `guard` before it is upsampled, and what it gives is sent; a frame dropped unsent is handed to it too.
 * NULL: none. Set before each bind; attaching or detaching the port clears it (the loop keeps the guard alive
 * until then). */
void cbp_uplink_guard(cb_port *p, cbe_uplink_fn fn, cbe_guard *guard) {
    pthread_mutex_lock(&p->up_lock);
    p->up_guard_fn = guard != NULL ? fn : NULL;
    p->up_guard = guard;
    pthread_mutex_unlock(&p->up_lock);
}

/* Over TLS: every byte the uplink writes from now on (the caller's frames and cbp_uplink_write's) is sealed by
 * `fn` (cbt_seal of tls.c) with the call's engine `tls` first, so the socket carries one TLS stream whoever writes.
 * NULL: plain TCP. Set before each bind; unbinding clears it (the loop keeps the engine alive until then). */
void cbp_uplink_tls(cb_port *p, cbt_seal_fn fn, cbt_tls *tls) {
    pthread_mutex_lock(&p->up_lock);
    p->up_seal_fn = tls != NULL ? fn : NULL;
    p->up_tls = tls;
    pthread_mutex_unlock(&p->up_lock);
}

/* Mirror on or off (see the header): the loop gets a copy of each frame the uplink sends, its time negated. */
void cbp_uplink_mirror(cb_port *p, int on) { atomic_store(&p->mirror, on ? 1 : 0); }

/* One frame of the connection's own (already framed by websockets), in order after everything written before.
 * 0: sent or pending, -1: the socket failed (errno in cbp_uplink_counters), -2: not bound (write it yourself). */
int cbp_uplink_write(cb_port *p, const unsigned char *data, int n) {
    int rc = -2;
    pthread_mutex_lock(&p->up_lock);
    if (atomic_load_explicit(&p->up_on, memory_order_relaxed))
        rc = up_send(p, data, (size_t)n, 0) < 0 ? -1 : 0;
    pthread_mutex_unlock(&p->up_lock);
    return rc;
}

/* A close frame is about to be written: no data frame may follow it. */
void cbp_uplink_end_data(cb_port *p) {
    pthread_mutex_lock(&p->up_lock);
    p->up_closed = 1;
    pthread_mutex_unlock(&p->up_lock);
}

/* Stop: the clock thread no longer touches the socket once this returns. Returns how many bytes are still
 * pending (the loop takes them with cbp_uplink_take and writes them itself, first). */
int cbp_uplink_unbind(cb_port *p) {
    pthread_mutex_lock(&p->up_lock);
    int was = atomic_exchange_explicit(&p->up_on, 0, memory_order_acq_rel);
    if (was && p->pending_len && !p->up_errno)
        up_flush(p);
    int left = was ? (int)p->pending_len : 0;
    p->up_fd = -1;
    p->up_state = NULL;
    p->up_seal_fn = NULL; /* the engine is the loop's again (it may free it once this returns) */
    p->up_tls = NULL;
    pthread_mutex_unlock(&p->up_lock);
    return left;
}

/* After cbp_uplink_unbind: copy the `n` pending bytes out and forget them. */
void cbp_uplink_take(cb_port *p, unsigned char *out, int n) {
    pthread_mutex_lock(&p->up_lock);
    size_t k = (size_t)n < p->pending_len ? (size_t)n : p->pending_len;
    memcpy(out, p->pending, k);
    p->pending_len = 0;
    pthread_mutex_unlock(&p->up_lock);
}

/* frames sent, frames dropped, pending bytes, errno of a failed send, bound; and the last frame's capture-to-send
 * and send times (seconds) */
void cbp_uplink_counters(cb_port *p, unsigned long long out[5], double times[2]) {
    pthread_mutex_lock(&p->up_lock);
    out[0] = p->up_frames;
    out[1] = atomic_load(&p->up_dropped);
    out[2] = p->pending_len;
    out[3] = (unsigned long long)p->up_errno;
    out[4] = (unsigned long long)atomic_load(&p->up_on);
    times[0] = p->up_capture_s;
    times[1] = p->up_write_s;
    pthread_mutex_unlock(&p->up_lock);
}

/* -- downlink, loop side ------------------------------------------------------------------------------------- */

/* Play the model's audio from `fd` (a connected TCP socket carrying WebSocket frames from the server; the uplink
 * may write to it meanwhile) on the clock thread: each text frame whose "type" is `type` (the dialect's audio delta)
 * has its "delta" decoded and downsampled by `kernel` (cbr_down) with the filter state at `state` (which nothing
 * else may use while bound) into the playout ring. -1: a bad argument. */
int cbp_downlink_bind(cb_port *p, int fd, cbr_down_fn kernel, cbr_down_state *state, const char *type, int type_len) {
    if (fd < 0 || kernel == NULL || state == NULL || type == NULL || type_len <= 0 || type_len > DN_TYPE_MAX)
        return -1;
    pthread_once(&b64_once, b64_table);
    pthread_mutex_lock(&p->dn_lock);
    p->dn_fd = fd;
    p->dn_fn = kernel;
    p->dn_state = state;
    memcpy(p->dn_type, type, (size_t)type_len);
    p->dn_type_len = (size_t)type_len;
    p->dn_in_len = 0;
    p->dn_head = p->dn_tail = 0;
    p->dn_started = 0;
    p->dn_errno = 0;
    atomic_store_explicit(&p->dn_on, 1, memory_order_release);
    pthread_mutex_unlock(&p->dn_lock);
    return 0;
}

/* From the next bind on, the socket carries TLS: what it brings is fed to `tls` by `feed` (cbt_feed) and opened by
 * `read` (cbt_read) on the clock thread; the caller keeps the engine alive until unbind. NULL: plain TCP. */
void cbp_downlink_tls(cb_port *p, dn_feed_fn feed, dn_read_fn read, cbt_tls *tls) {
    pthread_mutex_lock(&p->dn_lock);
    p->dn_feed_fn = tls != NULL ? feed : NULL;
    p->dn_read_fn = tls != NULL ? read : NULL;
    p->dn_tls = feed != NULL && read != NULL ? tls : NULL;
    pthread_mutex_unlock(&p->dn_lock);
}

/* From the next bind on, the playout ring holds at least `samples` (8 kHz; a power of two at least DN_RING): a
 * model that sends ahead of real time, as the emulator does at twice it, is played whole rather than dropped past
 * 2 s. The ring stays with the port. -1: out of memory, or bound now. */
int cbp_downlink_hold(cb_port *p, unsigned samples) {
    unsigned cap = DN_RING;
    while (cap < samples && cap < (1u << 30))
        cap <<= 1;
    pthread_mutex_lock(&p->dn_lock);
    int rc = atomic_load(&p->dn_on) ? -1 : 0;
    if (rc == 0 && cap > p->dn_cap) {
        int16_t *ring = malloc(sizeof(int16_t) * cap);
        if (ring == NULL) {
            rc = -1;
        } else {
            if (p->dn_ring != p->dn_fixed)
                free(p->dn_ring);
            p->dn_ring = ring;
            p->dn_cap = cap;
        }
    }
    pthread_mutex_unlock(&p->dn_lock);
    return rc;
}

/* Stop: the clock thread no longer reads the socket once this returns (the ring plays out what it holds only
 * while bound: unbound, the port is the loop's again). Returns the errno the downlink gave up on, or 0. */
int cbp_downlink_unbind(cb_port *p) {
    pthread_mutex_lock(&p->dn_lock);
    atomic_store(&p->dn_on, 0);
    p->dn_fd = -1;
    p->dn_state = NULL;
    p->dn_tls = NULL; /* the engine is the caller's again */
    int err = p->dn_errno;
    pthread_mutex_unlock(&p->dn_lock);
    return err;
}

/* deltas played, frames given to the clock, underruns (frames short of audio after the first delta), samples
 * dropped on a full ring, bad deltas, errno the socket was given up on */
void cbp_downlink_counters(cb_port *p, unsigned long long out[6]) {
    pthread_mutex_lock(&p->dn_lock);
    out[0] = p->dn_deltas;
    out[1] = p->dn_frames;
    out[2] = p->dn_underruns;
    out[3] = p->dn_dropped;
    out[4] = p->dn_bad;
    out[5] = (unsigned long long)p->dn_errno;
    pthread_mutex_unlock(&p->dn_lock);
}
