/* callbridge native parts: what cport.c (the media port and its uplink), resample.c (the resampler kernels) and
 * echo.c (the echo guard) share. Each includes this header; bridge/native/build.py compiles each with -I on this
 * directory and hashes this file into each library's name, so an edit here rebuilds them all.
 *
 * They are separate shared libraries, each with its own Python fallback, so the uplink links against neither the
 * resampler nor the guard: the loop hands it the address of cbr_up and of one call's filter state
 * (bridge/audio/resample.py, Upsampler.c_kernel), and of cbe_uplink, cbe_played and one call's guard
 * (bridge/audio/echo_native.py, NativeEchoGuard.c_uplink and c_played), typed here once.
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

/* One call's echo guard (defined in echo.c; the uplink only passes it back). A caller frame heard: kept as the
 * guard's return and, where the guard tempers, what goes on to the model written to `out` (else `in` copied);
 * `out` NULL: only kept (a frame dropped unsent is still heard). Returns 0, or -1 if `n` is out of range. */
typedef struct cbe_guard cbe_guard;
int cbe_uplink(cbe_guard *g, const int16_t *in, int n, int16_t *out);
typedef int (*cbe_uplink_fn)(cbe_guard *g, const int16_t *in, int n, int16_t *out);

/* A frame the caller was sent (`n` samples), kept as the guard's reference: the media port hands it each frame
 * it gives pjmedia (cbp_reference), the silence it sends on its own when the loop was late included. */
void cbe_played(cbe_guard *g, const int16_t *pcm, int n);
typedef void (*cbe_played_fn)(cbe_guard *g, const int16_t *pcm, int n);

#endif
