/* callbridge resampler kernels: the polyphase FIRs of bridge/audio/resample.py, in C, bit for bit.
 *
 * resample.py rounds every tap to an integer multiple of 2**-24, so each product of a tap and an int16 sample,
 * and every partial sum of at most 97 of them, is an exact binary fraction in a double (under 41 significant
 * bits): the sum is the same in any order. Rounded half to even (rint, the default rounding mode) and clipped to
 * int16, it is the number numpy's float64 matmul produces. Tests compare the two on random streams cut into odd
 * chunks, and the library is checked against numpy when it loads.
 *
 * The taps come from Python (cbr_set_taps), so resample.py stays the one definition of the filter.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "callbridge.h"

#define FACTOR CBR_FACTOR
#define UP_TAPS 33 /* per polyphase branch */
#define UP_HIST (UP_TAPS - 1)
#define DN_TAPS 97
#define DN_HIST (DN_TAPS - 1)
#define MAX_IN 4800 /* samples per call: resample.py cuts longer chunks */
#define PHASE_LEN ((DN_HIST + 2 + MAX_IN) / FACTOR + 2) /* the downsampler's input, split by phase */
#define BLOCK 32   /* outputs summed together, in registers (8 AVX2 vectors of doubles) */

static double up_taps[FACTOR][UP_TAPS]; /* branch p, delay k; integer taps times 2**-24 */
static double dn_taps[DN_TAPS];         /* reversed: dn_taps[i] weighs buf[FACTOR * s + i] for output s */

struct cbr_up_state {
    double hist[UP_HIST]; /* the last 32 input samples, oldest first */
};

struct cbr_down_state {
    double buf[DN_HIST + 2 + MAX_IN]; /* samples from the oldest tap of the next output on */
    int pending;                       /* how many of them are valid: 96-98 between calls */
};

int cbr_up_state_size(void) { return (int)sizeof(cbr_up_state); }
int cbr_down_state_size(void) { return (int)sizeof(cbr_down_state); }
int cbr_max_in(void) { return MAX_IN; }

void cbr_set_taps(const int64_t *up, const int64_t *dn) {
    for (int p = 0; p < FACTOR; p++)
        for (int k = 0; k < UP_TAPS; k++)
            up_taps[p][k] = (double)up[p * UP_TAPS + k] * (1.0 / 16777216.0);
    for (int i = 0; i < DN_TAPS; i++)
        dn_taps[i] = (double)dn[i] * (1.0 / 16777216.0);
}

static inline int16_t finish(double acc) {
    double y = rint(acc);
    if (y > 32767.0)
        y = 32767.0;
    if (y < -32768.0)
        y = -32768.0;
    return (int16_t)y;
}

void cbr_down_reset(cbr_down_state *st) {
    memset(st->buf, 0, sizeof st->buf);
    st->pending = DN_HIST;
}

/* The sums: BLOCK outputs at a time, in eight vectors that stay in registers across all taps (a loop over outputs
 * innermost would store and reload every sum once per tap). Each lane is one output's sum; the sums are exact,
 * so their order does not matter. They run in noinline helpers that get plain pointers: addressed inside the tap
 * loop, a __thread buffer made the compiler call __tls_get_addr there, which spilled every sum to the stack. */
typedef double v4d __attribute__((vector_size(32)));
/* Macros, not functions: a 32-byte vector passed to or returned from a function without AVX changes the ABI. */
#define LOAD4(v, p) memcpy(&(v), (p), sizeof(v))
#define MAC4(b, t, src, at)                                                                                           \
    do {                                                                                                              \
        v4d x_;                                                                                                       \
        LOAD4(x_, (src) + (at));                                                                                      \
        b += (t) * x_;                                                                                                \
    } while (0)
/* BLOCK outputs: eight independent sums in flight, enough to hide the latency of the adds. */
#define MAC32(t, src)                                                                                                 \
    do {                                                                                                              \
        MAC4(b0, t, src, 0);                                                                                          \
        MAC4(b1, t, src, 4);                                                                                          \
        MAC4(b2, t, src, 8);                                                                                          \
        MAC4(b3, t, src, 12);                                                                                         \
        MAC4(b4, t, src, 16);                                                                                         \
        MAC4(b5, t, src, 20);                                                                                         \
        MAC4(b6, t, src, 24);                                                                                         \
        MAC4(b7, t, src, 28);                                                                                         \
    } while (0)
#define STORE32(dst)                                                                                                  \
    do {                                                                                                              \
        memcpy((dst), &b0, sizeof b0);                                                                                \
        memcpy((dst) + 4, &b1, sizeof b1);                                                                            \
        memcpy((dst) + 8, &b2, sizeof b2);                                                                            \
        memcpy((dst) + 12, &b3, sizeof b3);                                                                           \
        memcpy((dst) + 16, &b4, sizeof b4);                                                                           \
        memcpy((dst) + 20, &b5, sizeof b5);                                                                           \
        memcpy((dst) + 24, &b6, sizeof b6);                                                                           \
        memcpy((dst) + 28, &b7, sizeof b7);                                                                           \
    } while (0)

/* AVX2 where the CPU has it, SSE2 otherwise (picked by the loader; the results are the same, see above). */
#define KERNEL __attribute__((target_clones("avx2", "default")))

/* The upsampler's sums: acc[p][s] for branch p and `n` inputs, from the history and input in x. */
KERNEL static void __attribute__((noinline)) up_sums(const double *x, int n, double (*acc)[MAX_IN]) {
    int blocked = n - n % BLOCK;
    for (int p = 0; p < FACTOR; p++) {
        double *a = acc[p];
        for (int s0 = 0; s0 < blocked; s0 += BLOCK) {
            v4d b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}, b4 = {0}, b5 = {0}, b6 = {0}, b7 = {0};
            for (int k = 0; k < UP_TAPS; k++) /* src[s] is the input k samples before output s's newest */
                MAC32(up_taps[p][k], x + UP_HIST - k + s0);
            STORE32(a + s0);
        }
        memset(a + blocked, 0, (size_t)(n - blocked) * sizeof *a);
        for (int k = 0; k < UP_TAPS; k++) {
            const double t = up_taps[p][k];
            const double *src = x + UP_HIST - k;
            for (int s = blocked; s < n; s++)
                a[s] += t * src[s];
        }
    }
}

/* 8 kHz -> 24 kHz (callbridge.h): `n` input samples (n <= MAX_IN) give 3n output samples. */
KERNEL int cbr_up(cbr_up_state *st, const int16_t *in, int n, int16_t *out) {
    if (n < 0 || n > MAX_IN)
        return -1;
    static __thread double x[UP_HIST + MAX_IN], acc[FACTOR][MAX_IN];
    memcpy(x, st->hist, sizeof st->hist);
    for (int i = 0; i < n; i++)
        x[UP_HIST + i] = in[i];
    up_sums(x, n, acc);
    for (int s = 0; s < n; s++) {
        out[FACTOR * s] = finish(acc[0][s]);
        out[FACTOR * s + 1] = finish(acc[1][s]);
        out[FACTOR * s + 2] = finish(acc[2][s]);
    }
    memcpy(st->hist, x + n, sizeof st->hist); /* the last 32 samples of history + input */
    return FACTOR * n;
}

/* The downsampler's sums: acc[s] for `count` outputs, from the input split by phase (each row `stride` long). */
KERNEL static void __attribute__((noinline)) down_sums(const double *phase, int stride, int count, double *acc) {
    int blocked = count - count % BLOCK;
    for (int s0 = 0; s0 < blocked; s0 += BLOCK) {
        v4d b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}, b4 = {0}, b5 = {0}, b6 = {0}, b7 = {0};
        for (int r = 0; r < FACTOR; r++) /* tap i = FACTOR * m + r reads phase row r from m on */
            for (int m = 0, i = r; i < DN_TAPS; m++, i += FACTOR)
                MAC32(dn_taps[i], phase + r * stride + m + s0);
        STORE32(acc + s0);
    }
    memset(acc + blocked, 0, (size_t)(count - blocked) * sizeof acc[0]);
    for (int i = 0; i < DN_TAPS; i++) {
        const double t = dn_taps[i];
        const double *src = phase + (i % FACTOR) * stride + i / FACTOR;
        for (int s = blocked; s < count; s++)
            acc[s] += t * src[s];
    }
}

/* 24 kHz -> 8 kHz: returns the number of output samples (those whose newest input has arrived). */
KERNEL int cbr_down(cbr_down_state *st, const int16_t *in, int n, int16_t *out) {
    if (n < 0 || n > MAX_IN || st->pending < 0 || st->pending > DN_HIST + 2)
        return -1;
    int total = st->pending + n;
    for (int i = 0; i < n; i++)
        st->buf[st->pending + i] = in[i];
    if (total < DN_TAPS) {
        st->pending = total;
        return 0;
    }
    int count = (total - DN_TAPS) / FACTOR + 1;
    /* Split the input by phase so that every tap reads a contiguous run: buf[3s + i] = phase[i % 3][s + i / 3]. */
    static __thread double phase[FACTOR][PHASE_LEN], acc[MAX_IN];
    int per = (total + FACTOR - 1) / FACTOR;
    for (int r = 0; r < FACTOR; r++) {
        int have = (total - r + FACTOR - 1) / FACTOR; /* samples of row r: FACTOR * m + r < total */
        for (int m = 0; m < have; m++)
            phase[r][m] = st->buf[FACTOR * m + r];
        for (int m = have; m < per; m++)
            phase[r][m] = 0.0;
    }
    down_sums(&phase[0][0], PHASE_LEN, count, acc);
    for (int s = 0; s < count; s++)
        out[s] = finish(acc[s]);
    int consumed = FACTOR * count;
    st->pending = total - consumed;
    memmove(st->buf, st->buf + consumed, (size_t)st->pending * sizeof st->buf[0]);
    return count;
}
