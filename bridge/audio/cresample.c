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

#define FACTOR 3
#define UP_TAPS 33 /* per polyphase branch */
#define UP_HIST (UP_TAPS - 1)
#define DN_TAPS 97
#define DN_HIST (DN_TAPS - 1)
#define MAX_IN 4800 /* samples per call: resample.py cuts longer chunks */

static double up_taps[FACTOR][UP_TAPS]; /* branch p, delay k; integer taps times 2**-24 */
static double dn_taps[DN_TAPS];         /* reversed: dn_taps[i] weighs buf[FACTOR * s + i] for output s */

typedef struct {
    double hist[UP_HIST]; /* the last 32 input samples, oldest first */
} cbr_up_state;

typedef struct {
    double buf[DN_HIST + 2 + MAX_IN]; /* samples from the oldest tap of the next output on */
    int pending;                       /* how many of them are valid: 96-98 between calls */
} cbr_down_state;

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

/* 8 kHz -> 24 kHz: `n` input samples (n <= MAX_IN) give 3n output samples.
 * The loops run over outputs innermost (each output's sum keeps its order, so the compiler may vectorize them
 * without reassociating anything; the sums are exact anyway). */
/* AVX2 where the CPU has it, SSE2 otherwise (picked by the loader; the results are the same, see above). */
#define KERNEL __attribute__((target_clones("avx2", "default")))

KERNEL int cbr_up(cbr_up_state *st, const int16_t *in, int n, int16_t *out) {
    if (n < 0 || n > MAX_IN)
        return -1;
    static __thread double x[UP_HIST + MAX_IN], acc[FACTOR][MAX_IN];
    memcpy(x, st->hist, sizeof st->hist);
    for (int i = 0; i < n; i++)
        x[UP_HIST + i] = in[i];
    for (int p = 0; p < FACTOR; p++) {
        double *a = acc[p];
        memset(a, 0, (size_t)n * sizeof *a);
        for (int k = 0; k < UP_TAPS; k++) {
            const double t = up_taps[p][k];
            const double *src = x + UP_HIST - k; /* src[s] is the input k samples before output s's newest */
            for (int s = 0; s < n; s++)
                a[s] += t * src[s];
        }
    }
    for (int s = 0; s < n; s++) {
        out[FACTOR * s] = finish(acc[0][s]);
        out[FACTOR * s + 1] = finish(acc[1][s]);
        out[FACTOR * s + 2] = finish(acc[2][s]);
    }
    memcpy(st->hist, x + n, sizeof st->hist); /* the last 32 samples of history + input */
    return FACTOR * n;
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
    static __thread double phase[FACTOR][(DN_HIST + 2 + MAX_IN) / FACTOR + 2], acc[MAX_IN];
    int per = (total + FACTOR - 1) / FACTOR;
    for (int r = 0; r < FACTOR; r++)
        for (int m = 0; m < per; m++)
            phase[r][m] = FACTOR * m + r < total ? st->buf[FACTOR * m + r] : 0.0;
    memset(acc, 0, (size_t)count * sizeof acc[0]);
    for (int i = 0; i < DN_TAPS; i++) {
        const double t = dn_taps[i];
        const double *src = phase[i % FACTOR] + i / FACTOR;
        for (int s = 0; s < count; s++)
            acc[s] += t * src[s];
    }
    for (int s = 0; s < count; s++)
        out[s] = finish(acc[s]);
    int consumed = FACTOR * count;
    st->pending = total - consumed;
    memmove(st->buf, st->buf + consumed, (size_t)st->pending * sizeof st->buf[0]);
    return count;
}
