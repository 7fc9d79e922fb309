/* callbridge native playout ring: the model's audio in 20 ms frames between the call's loop and the media port, in C.
 *
 * The same contract as bridge/audio/playout.py (PlayoutBuffer), decision for decision: read that module's doc for
 * what each counter means. Python face: bridge/audio/playout_native.py (NativePlayout), which keeps the item ids
 * (strings) and gives C small integers for them, and speaks to the downstream stage (the native port's queue ahead
 * of the wire) itself; this side keeps every frame and all the accounting: the queue, the frames played per item,
 * the first frame's time, underruns and their times, frames dropped on a full ring, late audio, and the last pops
 * (a frame or silence) that a flush or a reclaim of trailing silence takes back.
 *
 * The queue grows as audio comes (a call mostly holds a few seconds, the bound is 60 s by default) and is given
 * back when a flush empties it. One mutex per ring: the loop pushes and flushes, and the consumer (the loop's
 * top-up of the native port, or pjmedia's clock thread through a Python port) pops, a block of frames per call.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "callbridge.h"

#define RECENT 32          /* pops remembered for a downstream stage (it holds at most 16 frames) */
#define UNDERRUN_TIMES 3000 /* underrun times kept: a minute of dead air */
#define POP_NONE (-1)      /* a remembered pop of idle silence */
#define POP_DEAD (-2)      /* a remembered pop of silence counted as an underrun */
#define INITIAL_FRAMES 64  /* queue slots allocated at first */

typedef struct {
    int64_t received; /* bytes of real audio */
    int64_t played;   /* frames handed out */
    double first_at;  /* NAN until the first frame is handed out */
    int closed;
} cbq_item;

struct cbq {
    pthread_mutex_t mu;
    int fb;           /* frame bytes */
    int max_frames;
    unsigned char *silence;
    /* the queue: a ring of slots */
    int32_t *s_item, *s_seq;
    unsigned char *s_data;
    int cap, head, len;
    /* items */
    cbq_item *items;
    int items_cap;
    /* producer */
    int cur, open, overflowing;
    int32_t seq;
    unsigned char *rem;
    int rem_len;
    /* consumer */
    int last_played;
    int32_t rec_item[RECENT], rec_seq[RECENT];
    int rec_head, rec_len;
    double *utimes;
    int ut_head, ut_len;
    /* counters: frames_played, underruns, dropped_frames, late_frames */
    int64_t frames_played, underruns, dropped, late;
};

/* -- helpers (the mutex held) ------------------------------------------------------------------------------------ */

static int ensure_item(cbq *q, int id) {
    if (id < 0)
        return -1;
    if (id < q->items_cap)
        return 0;
    int cap = q->items_cap ? q->items_cap : 16;
    while (cap <= id)
        cap *= 2;
    cbq_item *grown = realloc(q->items, (size_t)cap * sizeof(cbq_item));
    if (!grown)
        return -1;
    for (int k = q->items_cap; k < cap; k++)
        grown[k] = (cbq_item){0, 0, NAN, 0};
    q->items = grown;
    q->items_cap = cap;
    return 0;
}

static int grow(cbq *q) {
    int cap = q->cap ? q->cap * 2 : INITIAL_FRAMES;
    if (cap > q->max_frames)
        cap = q->max_frames;
    int32_t *si = malloc((size_t)cap * sizeof(int32_t)), *ss = malloc((size_t)cap * sizeof(int32_t));
    unsigned char *sd = malloc((size_t)cap * (size_t)q->fb);
    if (!si || !ss || !sd) {
        free(si), free(ss), free(sd);
        return -1;
    }
    for (int k = 0; k < q->len; k++) {
        int at = (q->head + k) % q->cap;
        si[k] = q->s_item[at];
        ss[k] = q->s_seq[at];
        memcpy(sd + (size_t)k * q->fb, q->s_data + (size_t)at * q->fb, (size_t)q->fb);
    }
    free(q->s_item), free(q->s_seq), free(q->s_data);
    q->s_item = si, q->s_seq = ss, q->s_data = sd;
    q->cap = cap, q->head = 0;
    return 0;
}

static void release_queue(cbq *q) {
    free(q->s_item), free(q->s_seq), free(q->s_data);
    q->s_item = q->s_seq = NULL, q->s_data = NULL;
    q->cap = q->head = q->len = 0;
}

static void enqueue(cbq *q, const unsigned char *frame) {
    if (q->overflowing || q->len >= q->max_frames || (q->len == q->cap && grow(q) != 0)) {
        q->overflowing = 1;
        q->dropped++;
        return;
    }
    int at = (q->head + q->len) % q->cap;
    q->s_item[at] = q->cur;
    q->s_seq[at] = q->seq++;
    memcpy(q->s_data + (size_t)at * q->fb, frame, (size_t)q->fb);
    q->len++;
}

static void close_item(cbq *q) {
    if (q->cur < 0 || !q->open)
        return;
    if (q->rem_len) {
        memcpy(q->rem + q->rem_len, q->silence + q->rem_len, (size_t)(q->fb - q->rem_len));
        enqueue(q, q->rem);
        q->rem_len = 0;
    }
    q->items[q->cur].closed = 1;
    q->open = 0;
}

static void remember(cbq *q, int32_t item, int32_t seq) {
    int at = (q->rec_head + q->rec_len) % RECENT;
    if (q->rec_len == RECENT)
        q->rec_head = (q->rec_head + 1) % RECENT;
    else
        q->rec_len++;
    q->rec_item[at] = item, q->rec_seq[at] = seq;
}

/* the k-th newest remembered pop (0: the newest) */
static int recent_at(const cbq *q, int k) { return (q->rec_head + q->rec_len - 1 - k) % RECENT; }

static int trailing(const cbq *q, int dead_only) {
    int n = 0;
    for (; n < q->rec_len; n++) {
        int32_t item = q->rec_item[recent_at(q, n)];
        if (item >= 0 || (dead_only && item != POP_DEAD))
            break;
    }
    return n;
}

/* -- the ring ---------------------------------------------------------------------------------------------------- */

cbq *cbq_new(int frame_bytes, int max_frames, const unsigned char *silence) {
    if (frame_bytes <= 0 || max_frames <= 0)
        return NULL;
    cbq *q = calloc(1, sizeof(cbq));
    if (!q)
        return NULL;
    q->silence = malloc((size_t)frame_bytes);
    q->rem = malloc((size_t)frame_bytes);
    if (!q->silence || !q->rem) {
        free(q->silence), free(q->rem), free(q);
        return NULL;
    }
    if (silence)
        memcpy(q->silence, silence, (size_t)frame_bytes);
    else
        memset(q->silence, 0, (size_t)frame_bytes);
    pthread_mutex_init(&q->mu, NULL);
    q->fb = frame_bytes, q->max_frames = max_frames;
    q->cur = -1, q->last_played = -1;
    return q;
}

void cbq_free(cbq *q) {
    if (!q)
        return;
    release_queue(q);
    free(q->items), free(q->utimes), free(q->silence), free(q->rem);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* Audio of item `id` (any length). Returns 1 if the queue was empty before (the caller may reclaim trailing silence
 * downstream), 0 if not, -1 out of memory (the item table). */
int cbq_push(cbq *q, int id, const unsigned char *data, int n) {
    pthread_mutex_lock(&q->mu);
    int was_empty = q->len == 0;
    if (ensure_item(q, id) != 0) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    if (id != q->cur || !q->open) {
        if (q->items[id].closed) {
            q->late += (n + q->fb - 1) / q->fb;
            pthread_mutex_unlock(&q->mu);
            return 0;
        }
        close_item(q);
        q->cur = id, q->seq = 0, q->rem_len = 0, q->overflowing = 0;
        q->items[id].received = 0;
        q->open = 1;
    }
    q->items[id].received += n;
    int at = 0;
    if (q->rem_len) {
        int take = q->fb - q->rem_len < n ? q->fb - q->rem_len : n;
        memcpy(q->rem + q->rem_len, data, (size_t)take);
        q->rem_len += take, at = take;
        if (q->rem_len == q->fb) {
            enqueue(q, q->rem);
            q->rem_len = 0;
        }
    }
    for (; n - at >= q->fb; at += q->fb)
        enqueue(q, data + at);
    if (n > at) {
        memcpy(q->rem, data + at, (size_t)(n - at));
        q->rem_len = n - at;
    }
    pthread_mutex_unlock(&q->mu);
    return was_empty;
}

/* No more audio for `id`: its tail padded and queued. Returns 1 if it was the open item and the queue was empty. */
int cbq_end_item(cbq *q, int id) {
    pthread_mutex_lock(&q->mu);
    int was_empty = 0;
    if (id == q->cur && q->open) {
        was_empty = q->len == 0;
        close_item(q);
    }
    pthread_mutex_unlock(&q->mu);
    return was_empty;
}

/* `n` frames into `out` (n * frame bytes): queued ones, then silence; `now` stamps first frames and underruns.
 * Returns the frames of audio among them. */
int cbq_pop(cbq *q, unsigned char *out, int n, double now) {
    int audio = 0;
    pthread_mutex_lock(&q->mu);
    for (int k = 0; k < n; k++) {
        unsigned char *to = out + (size_t)k * q->fb;
        if (q->len == 0) {
            if (q->open && q->last_played == q->cur) {
                q->underruns++;
                if (!q->utimes)
                    q->utimes = malloc(UNDERRUN_TIMES * sizeof(double));
                if (q->utimes) {
                    q->utimes[(q->ut_head + q->ut_len) % UNDERRUN_TIMES] = now;
                    if (q->ut_len == UNDERRUN_TIMES)
                        q->ut_head = (q->ut_head + 1) % UNDERRUN_TIMES;
                    else
                        q->ut_len++;
                }
                remember(q, POP_DEAD, 0);
            } else {
                remember(q, POP_NONE, 0);
            }
            memcpy(to, q->silence, (size_t)q->fb);
            continue;
        }
        int at = q->head;
        int32_t item = q->s_item[at], seq = q->s_seq[at];
        memcpy(to, q->s_data + (size_t)at * q->fb, (size_t)q->fb);
        q->head = (q->head + 1) % q->cap;
        q->len--;
        remember(q, item, seq);
        if (seq == 0)
            q->items[item].first_at = now;
        q->items[item].played = seq + 1;
        q->last_played = item;
        q->frames_played++;
        audio++;
    }
    pthread_mutex_unlock(&q->mu);
    return audio;
}

/* Un-count the newest `held` pops (a downstream stage dropped them unsent); the remembered pops are forgotten.
 * Their items and seqs (audio only), oldest first, go to `it`/`sq` (room for RECENT). Returns how many. */
static int take_back(cbq *q, int held, int32_t *it, int32_t *sq) {
    if (held <= 0)
        return 0;
    int from = held < q->rec_len ? held : q->rec_len, n = 0;
    for (int k = from - 1; k >= 0; k--) {
        int at = recent_at(q, k);
        if (q->rec_item[at] >= 0)
            it[n] = q->rec_item[at], sq[n] = q->rec_seq[at], n++;
    }
    q->rec_len = 0;
    for (int k = 0; k < n; k++) {
        cbq_item *item = &q->items[it[k]];
        if (item->played > sq[k])
            item->played = sq[k];
        if (sq[k] == 0)
            item->first_at = NAN;
        q->frames_played--;
    }
    return n;
}

static int add_later(int32_t *later, int n, int cap, int32_t item) {
    for (int k = 0; k < n; k++)
        if (later[k] == item)
            return n;
    if (n < cap)
        later[n++] = item;
    return n;
}

/* A flush (barge-in): `held` frames were dropped downstream unsent. Empties the queue; out[0..3]: the item cut (-1:
 * none), its frames played, its bytes received, the number of later items written to `later` (room for `cap`). */
void cbq_flush(cbq *q, int held, int64_t *out, int32_t *later, int cap) {
    int32_t it[RECENT], sq[RECENT];
    pthread_mutex_lock(&q->mu);
    int back = take_back(q, held, it, sq);
    int total = back + q->len;
    int32_t current = total ? (back ? it[0] : q->s_item[q->head]) : q->cur;
    int32_t first_seq = total ? (back ? sq[0] : q->s_seq[q->head]) : 0;
    int open_item = q->open ? q->cur : -1;
    int nlater = 0, prev = -1;
    for (int k = 0; k < total; k++) {
        int32_t item = k < back ? it[k] : q->s_item[(q->head + k - back) % q->cap];
        q->items[item].closed = 1;
        if (item != prev && item != current)
            nlater = add_later(later, nlater, cap, item);
        prev = item;
    }
    if (q->cur >= 0)
        q->items[q->cur].closed = 1;
    int32_t played_tail = q->seq;
    q->cur = -1, q->open = 0, q->rem_len = 0;
    release_queue(q);
    if (current < 0) {
        out[0] = -1, out[1] = out[2] = out[3] = 0;
        pthread_mutex_unlock(&q->mu);
        return;
    }
    if (open_item >= 0 && open_item != current)
        nlater = add_later(later, nlater, cap, open_item);
    out[0] = current;
    out[1] = total ? first_seq : played_tail;
    out[2] = q->items[current].received;
    out[3] = nlater;
    pthread_mutex_unlock(&q->mu);
}

/* Trailing silence a downstream stage may give back: the pops of silence since the last frame, if audio is queued
 * now and the newest pop was silence; else 0. */
int cbq_trailing_silence(cbq *q) {
    pthread_mutex_lock(&q->mu);
    int n = q->len ? trailing(q, 0) : 0;
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* The downstream stage dropped the `taken` newest frames (silence: cbq_trailing_silence): forgotten; dead air
 * among them is no longer an underrun (the caller never hears it). Returns the underruns un-counted. */
int cbq_forget_silence(cbq *q, int taken) {
    int undone = 0;
    pthread_mutex_lock(&q->mu);
    for (int k = 0; k < taken && q->rec_len > 0; k++) {
        int at = recent_at(q, 0);
        if (q->rec_item[at] == POP_DEAD) {
            q->underruns--, undone++;
            if (q->ut_len > 0)
                q->ut_len--;
        }
        q->rec_len--;
    }
    pthread_mutex_unlock(&q->mu);
    return undone;
}

/* PlayoutBuffer.ran_dry's state: -1 if `id` is not open with all its queued audio gone out as the last thing
 * played, else the dead air popped since (to compare with what the downstream stage holds). */
int cbq_dry(cbq *q, int id) {
    pthread_mutex_lock(&q->mu);
    int n = (!q->open || q->cur != id || q->len || q->last_played != id) ? -1 : trailing(q, 1);
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* Everything queued sent (none of the `held` newest pops, still downstream, is audio) and no item open. */
int cbq_idle(cbq *q, int held) {
    pthread_mutex_lock(&q->mu);
    int idle = !q->open && !q->len;
    for (int k = 0; idle && k < held && k < q->rec_len; k++)
        if (q->rec_item[recent_at(q, k)] >= 0)
            idle = 0;
    pthread_mutex_unlock(&q->mu);
    return idle;
}

/* Frames of item `id` among the `held` newest pops (those a downstream stage still holds, not yet on the wire). */
int cbq_held_of(cbq *q, int held, int id) {
    pthread_mutex_lock(&q->mu);
    int n = 0;
    for (int k = 0; k < held && k < q->rec_len; k++)
        if (q->rec_item[recent_at(q, k)] == id)
            n++;
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* Item `id`: out[0] frames played, out[1] bytes received; *first the first frame's time (NAN: not yet). */
void cbq_item_state(cbq *q, int id, int64_t *out, double *first) {
    pthread_mutex_lock(&q->mu);
    if (id >= 0 && id < q->items_cap)
        out[0] = q->items[id].played, out[1] = q->items[id].received, *first = q->items[id].first_at;
    else
        out[0] = out[1] = 0, *first = NAN;
    pthread_mutex_unlock(&q->mu);
}

/* out: frames_played, underruns, dropped_frames, late_frames, frames queued, frames allocated. */
void cbq_counters(cbq *q, int64_t *out) {
    pthread_mutex_lock(&q->mu);
    out[0] = q->frames_played, out[1] = q->underruns, out[2] = q->dropped, out[3] = q->late;
    out[4] = q->len, out[5] = q->cap;
    pthread_mutex_unlock(&q->mu);
}

/* The times of the latest underruns, oldest first, into `out` (room for `cap`); returns how many. */
int cbq_underrun_times(cbq *q, double *out, int cap) {
    pthread_mutex_lock(&q->mu);
    int n = q->ut_len < cap ? q->ut_len : cap;
    for (int k = 0; k < n; k++)
        out[k] = q->utimes[(q->ut_head + q->ut_len - n + k) % UNDERRUN_TIMES];
    pthread_mutex_unlock(&q->mu);
    return n;
}

int cbq_recent_max(void) { return RECENT; }
int cbq_underrun_times_max(void) { return UNDERRUN_TIMES; }
