/* callbridge native parts: what cport.c (the media port and its uplink), resample.c (the resampler kernels),
 * echo.c (the echo guard), tls.c (the TLS engine), downlink.c (the Realtime sockets' reader) and playout.c (the
 * playout ring) share. Each includes this header; bridge/native/build.py
 * compiles each with -I on this directory and hashes this file into each library's name, so an edit here rebuilds
 * them all.
 *
 * They are separate shared libraries, each with its own Python fallback, so the uplink links against none of the
 * others: the loop hands it the address of cbr_up (or cbr_down) and of one call's filter state (bridge/audio/resample.py,
 * c_kernel), of cbe_uplink, cbe_played and one call's guard (bridge/audio/echo_native.py,
 * NativeEchoGuard.c_uplink and c_played), and of cbt_seal and one connection's engine (bridge/realtime/tls_native.py,
 * NativeTls.seal_fn and handle), and of cbq_pop and one call's playout ring (bridge/audio/playout_native.py,
 * NativePlayout.c_ring), typed here once.
 */
#ifndef CALLBRIDGE_H
#define CALLBRIDGE_H

#include <stdint.h>

/* The telephone frame (bridge/audio/frames.py): 8 kHz PCM16 mono, 20 ms (RFC 3551 §4.5). */
#define CB_RATE_LOW 8000
#define CB_FRAME_SAMPLES 160
#define CB_FRAME_BYTES (CB_FRAME_SAMPLES * 2)

/* The resampler's ratio: 8 kHz <-> 24 kHz. */
#define CBR_FACTOR 3

/* One upsampling stream's filter state (defined in resample.c; the uplink only passes it back). */
typedef struct cbr_up_state cbr_up_state;

/* 8 kHz -> 24 kHz: `n` input samples (at most cbr_max_in()) give CBR_FACTOR * n output samples; the stream's
 * history is carried in `st`. Returns the number of output samples, or -1 if `n` is out of range. */
int cbr_up(cbr_up_state *st, const int16_t *in, int n, int16_t *out);
typedef int (*cbr_up_fn)(cbr_up_state *st, const int16_t *in, int n, int16_t *out);

/* One downsampling stream's filter state (defined in resample.c; the downlink only passes it back). */
typedef struct cbr_down_state cbr_down_state;

/* 24 kHz -> 8 kHz: `n` input samples (at most cbr_max_in()) give the output samples whose newest input has come
 * (about n / CBR_FACTOR); the phase is carried in `st`. Returns their number, or -1 if `n` is out of range. */
int cbr_down(cbr_down_state *st, const int16_t *in, int n, int16_t *out);
typedef int (*cbr_down_fn)(cbr_down_state *st, const int16_t *in, int n, int16_t *out);

/* One call's echo guard (defined in echo.c; the uplink only passes it back). A caller frame heard: kept as the
 * guard's return and, where the guard tempers, what goes on to the model written to `out` (else `in` copied);
 * `out` NULL: only kept (a frame dropped unsent is still heard). Returns 0, 1 if the frame completes the caller's
 * onset over the agent (echo.c, cbe_set_onset), or -1 if `n` is out of range. */
typedef struct cbe_guard cbe_guard;
int cbe_uplink(cbe_guard *g, const int16_t *in, int n, int16_t *out);
typedef int (*cbe_uplink_fn)(cbe_guard *g, const int16_t *in, int n, int16_t *out);

/* A frame the caller was sent (`n` samples), kept as the guard's reference: the media port hands it each frame
 * it gives pjmedia (cbp_reference), the silence it sends on its own when the loop was late included. */
void cbe_played(cbe_guard *g, const int16_t *pcm, int n);
typedef void (*cbe_played_fn)(cbe_guard *g, const int16_t *pcm, int n);

/* One TLS client connection over memory BIOs (defined in tls.c; the uplink only passes it back): over wss:// the
 * uplink encrypts its frames with it on the clock thread, while the loop feeds, reads and seals through it too. */
typedef struct cbt_tls cbt_tls;

/* Encrypt `len` plaintext bytes as application data and move ALL ciphertext waiting in the engine (this and anything
 * queued before, e.g. a handshake or key-update message) into `out` (capacity `cap`). Returns the number of bytes
 * written to `out`, -1 if `cap` is too small (nothing consumed: call again with more room; cbt_seal_room(len) is
 * always enough), -2 if the engine failed or the session is closed. Thread-safe: takes the engine's mutex. */
int cbt_seal(cbt_tls *t, const void *data, int len, void *out, int cap);
typedef int (*cbt_seal_fn)(cbt_tls *t, const void *data, int len, void *out, int cap);

/* The engine's opening side, for the downlink's reader (downlink.c, cbd_set): ciphertext from the network in
 * (cbt_feed: 0, or -2 out of memory), plaintext out (cbt_read: bytes, 0 none yet, -1 the peer's close_notify, -2 the
 * engine failed), and how much ciphertext waits to be sent (cbt_pending: e.g. a key update's answer). */
typedef int (*cbt_feed_fn)(cbt_tls *t, const void *data, int len);
typedef int (*cbt_read_fn)(cbt_tls *t, void *buf, int cap);
typedef int (*cbt_pending_fn)(cbt_tls *t);

/* One call's playout ring (defined in playout.c; the media port only passes it back). `n` frames into `out`
 * (n * CB_FRAME_BYTES): queued ones, then silence, with the ring's accounting; `now` (CLOCK_MONOTONIC seconds)
 * stamps first frames and underruns. Returns the frames of audio among them. Takes the ring's mutex. */
typedef struct cbq cbq;
int cbq_pop(cbq *q, unsigned char *out, int n, double now);
typedef int (*cbq_pop_fn)(cbq *q, unsigned char *out, int n, double now);
/* Audio of item `id` queued on the ring (`n` bytes of 8 kHz PCM16): 1 if the ring was empty before, 0 if not, -1 out
 * of memory. The downlink's sink pushes a run of an accepted item through it (downlink.c, cbd_sink). */
int cbq_push(cbq *q, int id, const unsigned char *data, int n);
typedef int (*cbq_push_fn)(cbq *q, int id, const unsigned char *data, int n);

#endif
