/* callbridge native echo guard: bridge/audio/echo.py's EchoGuard, decision for decision, in C.
 *
 * The guard's per-frame work (the reference and the return kept sample for sample, the level test, the held
 * path's residual, the attenuation) and its path search (the normalised cross-correlation over the delay range by
 * FFT, the short FIR fitted by least squares) are the Python guard's, step for step: the same windows, the same
 * thresholds, the same order of decisions. Only the arithmetic's rounding differs (a radix-2 FFT here, pocketfft
 * there; Gaussian elimination here, LAPACK there), far below any threshold: tests/unit/audio/test_echo_native.py
 * runs both on the same frames and compares every frame sent on and every verdict.
 *
 * One guard per call (cbe_new); every function takes the guard's own lock, so the reference may be fed from one
 * thread while the return is kept and tempered on another: where the native port's uplink sends the caller's
 * audio from the media clock thread (cport.c), it hands each frame to cbe_uplink first (callbridge.h), while the
 * loop feeds the reference and judges barge-ins.
 *
 * A guard owns only its state (the two streams, the held path, the search's schedule). The FFT's twiddles are
 * the process's, one read-only table per transform size, built once (twiddles); the arrays a search or a frame
 * works in are the calling thread's (scratch), borrowed under the guard's lock for one call and holding nothing
 * from one call to the next, so a few threads' worth serve every call of the process.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "callbridge.h"

#define TAPS 12 /* the module constants of bridge/audio/echo.py */
#define LEAD 3
#define MIN_SPEECH_FRAMES 3
#define REFERENCE_DBFS (-50.0)
#define MAX_LEVEL_DB 0.0
#define HINT_KEPT 0.97
#define QUIET_DBFS (-60.0)
#define COHERENT 0.8
#define FOREIGN 0.5
#define RE_ESTIMATE_FRAMES 12
#define SEEK_FRAMES 2
#define LEVEL_SEEK_FRAMES 16
#define MAX_SEEK_FRAMES 64
#define AT_ONCE (1LL << 30)
#define SHORT_WINDOW (8 * CB_FRAME_SAMPLES)
#define GEIGEL_DB 6.0
#define MOVED_DB 3.0
#define KEEP_SAMPLES (2 * CB_RATE_LOW)
#define TIED 1e-9 /* lags whose correlation is this close to the best count as the best: the first is taken */
#define FRAME CB_FRAME_SAMPLES
#define COARSE 4 /* the coarse look's block (echo.py: COARSE, COARSE_NONE) */
#define COARSE_NONE 0.3

/* The last `size` samples of a stream, with the count of all ever added (the Python _Ring's contract). The samples
 * are the line's own 16-bit ones, kept so (a quarter of doubles' memory) and read out as doubles. */
typedef struct {
    int16_t *d;
    long long size, total;
} ring;

typedef struct {
    int found; /* 0: no path (the reference or the return silent over the window) */
    int lag;
    double level_db, coherence;
    double taps[TAPS];
} path_t;

typedef struct cbe_guard {
    pthread_mutex_t lock;
    int max_lag, window;
    double speech_dbfs, erle_db, suppress;
    ring ref, in;
    path_t path; /* the held path */
    long long since_estimate;
    int seek_every, foreign, broken, moved;
    double sought_db; /* the return's level over the latest search's window */
    int tempering; /* cbe_uplink tempers what goes on (the plan's echo_guard.temper) */
    int onset_frames;  /* cbe_set_onset: frames passed whole and loud in a row over the agent's audio that are an onset */
    double onset_db;   /* ...each at most this much below the frame heard */
    int passes;        /* frames passed so in a row, since the last onset reported */
    double unexplained_db; /* temper_frame: the level of what the held path leaves of the frame (-120: no path) */
    unsigned long long counts[3]; /* frames tempered, full searches, coarse looks with no candidate (cbe_counters) */
    int fft_max;             /* the largest transform (a power of two) */
    int scratch;             /* the length of x, r and left; energy holds one more than the longest reference */
    const double *cs, *sn;   /* the twiddles up to fft_max (the process's: twiddles) */
    /* Borrowed from the calling thread (borrow) for one call, under the lock; nothing in them outlives the call. */
    double *re, *im;         /* the transform's scratch */
    double *x, *r, *left, *energy; /* the window, its reference, a residual, the reference's running energy */
} cbe_guard;

/* -- what guards share ------------------------------------------------------------------------------------ */

/* The twiddles of a transform of 2^k points (cs[half + j], sn[half + j] = cos, -sin of pi j / half for every
 * stage's half < 2^k): one table per size for the whole process, built on first use under twiddle_lock and
 * never changed or freed after, so any thread reads them without a lock. */
#define MAX_LOG2 30
static pthread_mutex_t twiddle_lock = PTHREAD_MUTEX_INITIALIZER;
static double *twiddle_cs[MAX_LOG2 + 1], *twiddle_sn[MAX_LOG2 + 1];

static int twiddles(int n, const double **cs, const double **sn) {
    int k = 0;
    while ((1 << k) < n)
        k++;
    pthread_mutex_lock(&twiddle_lock);
    if (twiddle_cs[k] == NULL) {
        double *c = malloc(sizeof(double) * (size_t)n), *s = malloc(sizeof(double) * (size_t)n);
        if (c && s) {
            for (int half = 1; half < n; half <<= 1)
                for (int j = 0; j < half; j++) {
                    c[half + j] = cos(M_PI * j / half);
                    s[half + j] = -sin(M_PI * j / half);
                }
            twiddle_cs[k] = c;
            twiddle_sn[k] = s;
        } else {
            free(c);
            free(s);
        }
    }
    *cs = twiddle_cs[k];
    *sn = twiddle_sn[k];
    pthread_mutex_unlock(&twiddle_lock);
    return *cs ? 0 : -1;
}

/* A thread's working arrays, grown to the largest guard it has served; freed when the thread ends. A thread runs
 * one guard's call at a time, and no guard function reads them before writing them in the same call. */
typedef struct {
    int fft, scratch;
    double *re, *im, *x, *r, *left, *energy;
} scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_keyed; /* 0 if pthread_key_create failed */

static void scratch_free(void *p) {
    scratch_t *s = p;
    if (s == NULL)
        return;
    free(s->re);
    free(s->im);
    free(s->x);
    free(s->r);
    free(s->left);
    free(s->energy);
    free(s);
}

static void scratch_init(void) { scratch_keyed = pthread_key_create(&scratch_key, scratch_free) == 0; }

/* The calling thread's arrays, at least g's sizes, into g's pointers (under g's lock). -1: out of memory. */
static int borrow(cbe_guard *g) {
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_keyed)
        return -1;
    scratch_t *s = pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return -1;
        }
    }
    if (s->fft < g->fft_max) {
        free(s->re);
        free(s->im);
        s->re = malloc(sizeof(double) * (size_t)g->fft_max);
        s->im = malloc(sizeof(double) * (size_t)g->fft_max);
        s->fft = s->re && s->im ? g->fft_max : 0;
        if (!s->fft)
            return -1;
    }
    if (s->scratch < g->scratch) {
        free(s->x);
        free(s->r);
        free(s->left);
        free(s->energy);
        s->x = malloc(sizeof(double) * (size_t)g->scratch);
        s->r = malloc(sizeof(double) * (size_t)g->scratch);
        s->left = malloc(sizeof(double) * (size_t)g->scratch);
        s->energy = malloc(sizeof(double) * (size_t)(g->scratch + 1));
        s->scratch = s->x && s->r && s->left && s->energy ? g->scratch : 0;
        if (!s->scratch)
            return -1;
    }
    g->re = s->re;
    g->im = s->im;
    g->x = s->x;
    g->r = s->r;
    g->left = s->left;
    g->energy = s->energy;
    return 0;
}

/* -- the streams ------------------------------------------------------------------------------------------ */

static int ring_init(ring *g, long long size) {
    g->d = calloc((size_t)size, sizeof(int16_t));
    g->size = size;
    g->total = 0;
    return g->d ? 0 : -1;
}

static void ring_add(ring *g, const int16_t *pcm, int n) {
    long long at = g->total % g->size;
    for (int i = 0; i < n; i++) {
        g->d[at] = pcm[i];
        if (++at == g->size)
            at = 0;
    }
    g->total += n;
}

/* Forget the newest n samples. Their slots held the window's oldest samples before they came: zeros now. */
static void ring_drop_newest(ring *g, long long n) {
    if (n > g->size)
        n = g->size;
    if (n > g->total)
        n = g->total;
    g->total -= n;
    for (long long i = 0; i < n; i++)
        g->d[(g->total + i) % g->size] = 0;
}

/* Samples start..end (absolute counts) into out; zeros where not (or no longer) held. */
static void ring_span(const ring *g, long long start, long long end, double *out) {
    long long first = g->total - g->size, lo = start, hi = end;
    if (lo < first)
        lo = first;
    if (lo < 0)
        lo = 0;
    if (hi > g->total)
        hi = g->total;
    if (hi <= lo) {
        memset(out, 0, sizeof(double) * (size_t)(end - start));
        return;
    }
    memset(out, 0, sizeof(double) * (size_t)(lo - start));
    memset(out + (hi - start), 0, sizeof(double) * (size_t)(end - hi));
    long long at = lo % g->size, n = hi - lo, first_run = g->size - at < n ? g->size - at : n;
    double *to = out + (lo - start);
    for (long long i = 0; i < first_run; i++)
        to[i] = (double)g->d[at + i];
    for (long long i = first_run; i < n; i++)
        to[i] = (double)g->d[i - first_run];
}

/* -- levels ----------------------------------------------------------------------------------------------- */

/* sum a[i] b[i], in four interleaved sums (independent chains: four times as fast as one) */
static double dot(const double *a, const double *b, int n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static double energy_of(const double *x, int n) { return dot(x, x, n); }

/* energy_of over 16-bit samples: the same sums in the same order, so the same double */
static double energy_of16(const int16_t *x, int n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        double a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
        s0 += a0 * a0;
        s1 += a1 * a1;
        s2 += a2 * a2;
        s3 += a3 * a3;
    }
    for (; i < n; i++) {
        double a = x[i];
        s0 += a * a;
    }
    return (s0 + s1) + (s2 + s3);
}

static double db_of_rms(double rms) { return 20.0 * log10(fmax(rms, 1e-6) / 32768.0); }

static double dbfs(const double *x, int n) { return n == 0 ? -120.0 : db_of_rms(sqrt(energy_of(x, n) / n)); }

/* dbfs of samples start..end of a ring (zeros where not held), in place: ring_span's values, without the copy. */
static double ring_dbfs(const ring *g, long long start, long long end) {
    long long first = g->total - g->size, lo = start < first ? first : start, hi = end > g->total ? g->total : end;
    double e = 0.0;
    if (lo < 0)
        lo = 0;
    if (hi > lo) {
        long long at = lo % g->size, n = hi - lo, run = g->size - at < n ? g->size - at : n;
        e = energy_of16(g->d + at, (int)run) + energy_of16(g->d, (int)(n - run));
    }
    return end <= start ? -120.0 : db_of_rms(sqrt(e / (double)(end - start)));
}

/* The loudest 20 ms of `ref` (whole frames counted from its end). */
static double ref_peak(const double *ref, int n) {
    int whole = n / FRAME * FRAME;
    double peak = 0.0;
    for (int f = n - whole; f < n; f += FRAME)
        peak = fmax(peak, energy_of(ref + f, FRAME) / FRAME);
    return db_of_rms(whole ? sqrt(peak) : 0.0);
}

/* The reference through the path's filter: out[i] = sum_k taps[k] * ref[start + LEAD + i - k]. */
static void through(const double *ref, int start, int w, const double *taps, double *out) {
    for (int i = 0; i < w; i++) {
        double s = 0.0;
        const double *at = ref + start + LEAD + i;
        for (int k = 0; k < TAPS; k++)
            s += taps[k] * at[-k];
        out[i] = s;
    }
}

static int16_t clip16(double v) {
    v = nearbyint(v); /* round half to even, as numpy's round */
    return (int16_t)(v > 32767.0 ? 32767.0 : v < -32768.0 ? -32768.0 : v);
}

/* -- the path search -------------------------------------------------------------------------------------- */

/* One stage's butterflies over a block: a, b = a + w b, a - w b, with w = wr[j] + i wi[j]. */
static void butterflies(double *restrict ar, double *restrict ai, double *restrict br, double *restrict bi,
                        const double *restrict wr, const double *restrict wi, int half) {
    for (int j = 0; j < half; j++) {
        double tr = br[j] * wr[j] - bi[j] * wi[j], ti = br[j] * wi[j] + bi[j] * wr[j];
        double xr = ar[j], xi = ai[j];
        br[j] = xr - tr;
        bi[j] = xi - ti;
        ar[j] = xr + tr;
        ai[j] = xi + ti;
    }
}

/* The forward DFT in place, on g->re and g->im (n a power of two, at most fft_max): radix 2, each stage's
 * twiddles contiguous (g->cs[half + j], g->sn[half + j] = cos, -sin of pi j / half), so the butterflies
 * vectorise. The inverse (unscaled) is its conjugate: conjugate, transform, conjugate. */
static void fft(cbe_guard *g, int n) {
    double *restrict re = g->re, *restrict im = g->im;
    for (int i = 1, j = 0; i < n; i++) { /* bit reversal */
        int bit = n >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j |= bit;
        if (i < j) {
            double t = re[i];
            re[i] = re[j];
            re[j] = t;
            t = im[i];
            im[i] = im[j];
            im[j] = t;
        }
    }
    for (int i = 0; i < n; i += 2) { /* the first stage: no twiddles */
        double tr = re[i + 1], ti = im[i + 1];
        re[i + 1] = re[i] - tr;
        im[i + 1] = im[i] - ti;
        re[i] += tr;
        im[i] += ti;
    }
    for (int half = 2; half < n; half <<= 1)
        for (int i = 0; i < n; i += 2 * half)
            butterflies(re + i, im + i, re + i + half, im + i + half, g->cs + half, g->sn + half, half);
}

/* xc[k] = sum_i ref[k + i] * x[i] (circular over n) into g->re: one transform of ref + i x for both spectra, and
 * the product's inverse (a real signal) as one half-length transform of its even and odd samples. */
static void correlate(cbe_guard *g, const double *ref, int nr, const double *x, int nx, int n) {
    double *re = g->re, *im = g->im;
    for (int i = 0; i < n; i++) {
        re[i] = i < nr ? ref[i] : 0.0;
        im[i] = i < nx ? x[i] : 0.0;
    }
    fft(g, n);
    /* R[k] = (Z[k] + conj Z[-k]) / 2, X[k] = (Z[k] - conj Z[-k]) / 2i; P = R conj(X), Hermitian */
    for (int k = 0; k <= n / 2; k++) {
        int m = (n - k) & (n - 1);
        double ar = re[k], ai = im[k], br = re[m], bi = im[m];
        double rr = 0.5 * (ar + br), ri = 0.5 * (ai - bi); /* R[k] */
        double xr = 0.5 * (ai + bi), xi = 0.5 * (br - ar); /* X[k] */
        double pr = rr * xr + ri * xi, pi = ri * xr - rr * xi;
        re[k] = re[m] = pr;
        im[k] = pi;
        im[m] = -pi;
    }
    /* p's even samples e and odd samples o, as z = e + i o: Z[k] = E[k] + i O[k], E[k] = (P[k] + P[k + h]) / 2,
     * O[k] = (P[k] - P[k + h]) / 2 * e^(2 pi i k / n); z = h * IDFT_h(Z), its conjugate the DFT of conj(Z) */
    int h = n / 2;
    for (int k = 0; k < h; k++) {
        double er = 0.5 * (re[k] + re[k + h]), ei = 0.5 * (im[k] + im[k + h]);
        double dr = 0.5 * (re[k] - re[k + h]), di = 0.5 * (im[k] - im[k + h]);
        double c = g->cs[h + k], s = -g->sn[h + k]; /* cos, sin of 2 pi k / n */
        double or_ = dr * c - di * s, oi = dr * s + di * c;
        re[k] = er - oi; /* Z = E + i O, conjugated */
        im[k] = -(ei + or_);
    }
    fft(g, h);
    for (int m = h - 1; m >= 0; m--) {
        double ev = re[m] / h, od = -im[m] / h;
        re[2 * m] = ev;
        re[2 * m + 1] = od;
    }
}

/* Solve a (TAPS x TAPS, row-major, overwritten) t = b by Gaussian elimination with partial pivoting. */
static void solve(double *a, double *b, double *t) {
    for (int c = 0; c < TAPS; c++) {
        int p = c;
        for (int r = c + 1; r < TAPS; r++)
            if (fabs(a[r * TAPS + c]) > fabs(a[p * TAPS + c]))
                p = r;
        if (p != c) {
            for (int k = 0; k < TAPS; k++) {
                double s = a[c * TAPS + k];
                a[c * TAPS + k] = a[p * TAPS + k];
                a[p * TAPS + k] = s;
            }
            double s = b[c];
            b[c] = b[p];
            b[p] = s;
        }
        for (int r = c + 1; r < TAPS; r++) {
            double f = a[r * TAPS + c] / a[c * TAPS + c];
            for (int k = c; k < TAPS; k++)
                a[r * TAPS + k] -= f * a[c * TAPS + k];
            b[r] -= f * b[c];
        }
    }
    for (int c = TAPS - 1; c >= 0; c--) {
        double s = b[c];
        for (int k = c + 1; k < TAPS; k++)
            s -= a[c * TAPS + k] * t[k];
        t[c] = s / a[c * TAPS + c];
    }
}

/* The FIR that best maps the reference at `start` to x (least squares, normal equations, lightly regularised). */
static void fit(const double *x, int w, const double *ref, int start, double *taps) {
    double gram[TAPS * TAPS], rhs[TAPS], trace = 0.0;
    const double *r0 = ref + start + LEAD; /* row a is r0 - a */
    for (int b = 0; b < TAPS; b++) /* the first row; the others slide along it (the rows overlap but for ends) */
        gram[b] = gram[b * TAPS] = dot(r0, r0 - b, w);
    for (int a = 1; a < TAPS; a++)
        for (int b = a; b < TAPS; b++) {
            double s = gram[(a - 1) * TAPS + b - 1] + r0[-a] * r0[-b] - r0[w - a] * r0[w - b];
            gram[a * TAPS + b] = gram[b * TAPS + a] = s;
        }
    for (int a = 0; a < TAPS; a++) {
        rhs[a] = dot(r0 - a, x, w);
        trace += gram[a * TAPS + a];
    }
    for (int a = 0; a < TAPS; a++)
        gram[a * TAPS + a] += 1e-3 * trace / TAPS + 1e-9;
    solve(gram, rhs, taps);
}

/* The window of `w` return samples ending at n into g->x, and its reference (max_lag + TAPS earlier samples and
 * LEAD later ones) into g->r; returns the reference's length. */
static int segments(cbe_guard *g, long long n, int w) {
    long long start = n - w;
    ring_span(&g->in, start, n, g->x);
    ring_span(&g->ref, start - g->max_lag - TAPS, n + LEAD, g->r);
    return w + g->max_lag + TAPS + LEAD;
}

/* EchoGuard.estimate: the path over the window of `w` samples ending at n; hint < 0: none. */
static path_t estimate(cbe_guard *g, long long n, int hint, int w) {
    path_t p = {0};
    int nr = segments(g, n, w);
    const double *x = g->x, *ref = g->r;
    if (dbfs(ref, nr) < REFERENCE_DBFS || dbfs(x, w) < QUIET_DBFS)
        return p;
    int base = g->max_lag + TAPS, size = 1;
    while (size < nr)
        size <<= 1;
    correlate(g, ref, nr, x, w, size);
    double *e = g->energy;
    e[0] = 0.0;
    for (int i = 0; i < nr; i++)
        e[i + 1] = e[i] + ref[i] * ref[i];
    double most = 0.0, xx = energy_of(x, w);
    for (int lag = 0; lag <= g->max_lag; lag++)
        most = fmax(most, e[base - lag + w] - e[base - lag]);
    double *ncc = g->left; /* scratch: max_lag + 1 <= its length */
    int lag = 0;
    for (int l = 0; l <= g->max_lag; l++) {
        double lagged = e[base - l + w] - e[base - l];
        double norm = sqrt(fmax(lagged, 1e-3 * most) * xx) + 1e-9;
        ncc[l] = fabs(g->re[base - l]) / norm;
        if (ncc[l] > ncc[lag])
            lag = l;
    }
    for (int l = 0; l < lag; l++)
        if (ncc[l] >= ncc[lag] * (1.0 - TIED)) {
            lag = l;
            break;
        }
    if (hint >= 0 && hint <= g->max_lag && ncc[hint] >= HINT_KEPT * ncc[lag])
        lag = hint;
    fit(x, w, ref, base - lag, p.taps);
    double gain = sqrt(energy_of(p.taps, TAPS));
    through(ref, base - lag, w, p.taps, g->left);
    for (int i = 0; i < w; i++)
        g->left[i] = x[i] - g->left[i];
    p.found = 1;
    p.lag = lag;
    p.level_db = 20.0 * log10(fmax(gain, 1e-6));
    p.coherence = sqrt(fmax(0.0, 1.0 - energy_of(g->left, w) / xx));
    return p;
}

/* EchoGuard._coarse: the window of `w` samples ending at n and its reference, both summed in blocks of COARSE
 * samples; the best lag (a multiple of COARSE) and its normalised correlation into *lag and *ncc. 0: nothing to
 * look at (estimate would find no path). The sums are of 16-bit samples, exact in doubles, as numpy's. */
static int coarse(cbe_guard *g, long long n, int w, int *lag, double *ncc) {
    int nr = segments(g, n, w);
    const double *x = g->x, *ref = g->r;
    if (dbfs(ref, nr) < REFERENCE_DBFS || dbfs(x, w) < QUIET_DBFS)
        return 0;
    int base = g->max_lag + TAPS, skip = base % COARSE, b = (base - skip) / COARSE;
    int nd = (nr - skip) / COARSE, wd = w / COARSE, size = 1;
    double *rd = g->left, *xd = g->left + nd; /* nd + wd < nr: within the scratch */
    for (int t = 0; t < nd; t++) {
        const double *at = ref + skip + COARSE * t;
        rd[t] = ((at[0] + at[1]) + at[2]) + at[3];
    }
    for (int t = 0; t < wd; t++) {
        const double *at = x + COARSE * t;
        xd[t] = ((at[0] + at[1]) + at[2]) + at[3];
    }
    while (size < nd)
        size <<= 1;
    correlate(g, rd, nd, xd, wd, size);
    double *e = g->energy;
    e[0] = 0.0;
    for (int t = 0; t < nd; t++)
        e[t + 1] = e[t] + rd[t] * rd[t];
    double most = 0.0, xx = energy_of(xd, wd);
    int lags = g->max_lag / COARSE;
    for (int j = 0; j <= lags; j++)
        most = fmax(most, e[b - j + wd] - e[b - j]);
    *lag = 0;
    *ncc = -1.0;
    for (int j = 0; j <= lags; j++) {
        double lagged = e[b - j + wd] - e[b - j];
        double v = fabs(g->re[b - j]) / (sqrt(fmax(lagged, 1e-3 * most) * xx) + 1e-9);
        if (v > *ncc) {
            *ncc = v;
            *lag = COARSE * j;
        }
    }
    return 1;
}

/* EchoGuard._seek: estimate for temper; with no path held, after a coarse look that may find no candidate. */
static path_t seek(cbe_guard *g, long long n, int hint, int w) {
    if (!g->path.found) {
        path_t none = {0};
        int lag = 0;
        double ncc = 0.0;
        if (!coarse(g, n, w, &lag, &ncc))
            return none;
        if (ncc < COARSE_NONE) {
            g->counts[2]++;
            none.found = 1;
            none.lag = lag;
            none.level_db = -120.0;
            none.coherence = ncc;
            return none;
        }
    }
    g->counts[1]++;
    return estimate(g, n, hint, w);
}

/* -- the decisions ---------------------------------------------------------------------------------------- */

typedef struct {
    int echo, speaking;
    double inbound_dbfs, residual_dbfs;
    path_t path;
} verdict_t;

static verdict_t judge_over(cbe_guard *g, int w) {
    verdict_t v = {0};
    long long n = g->in.total;
    v.path = estimate(g, n, g->path.found ? g->path.lag : -1, w);
    segments(g, n, w); /* estimate may have left nothing in the scratch (a silent window): taken again */
    double *res = g->left;
    if (v.path.found) {
        through(g->r, g->max_lag + TAPS - v.path.lag, w, v.path.taps, res);
        for (int i = 0; i < w; i++)
            res[i] = g->x[i] - res[i];
    } else {
        memcpy(res, g->x, sizeof(double) * (size_t)w);
    }
    int run = 0, caller = 0, speech = 0;
    double loudest = -120.0;
    for (int f = 0; f + FRAME <= w; f += FRAME) {
        double r_db = dbfs(res + f, FRAME), x_db = dbfs(g->x + f, FRAME);
        speech = r_db > g->speech_dbfs && x_db - r_db < g->erle_db;
        run = speech ? run + 1 : 0;
        if (speech)
            loudest = fmax(loudest, r_db);
        caller = caller || run >= MIN_SPEECH_FRAMES;
    }
    v.echo = !caller;
    v.speaking = speech;
    v.inbound_dbfs = dbfs(g->x, w);
    v.residual_dbfs = caller ? loudest : dbfs(res, w);
    return v;
}

/* The level of n PCM samples (dbfs). */
static double pcm_dbfs(const int16_t *in, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += (double)in[i] * (double)in[i];
    return n == 0 ? -120.0 : db_of_rms(sqrt(s / n));
}

/* The path search temper runs when it is due (EchoGuard.temper's first half), `in` (n samples) the frame heard. */
static void temper_search(cbe_guard *g, long long total, const int16_t *in, int n) {
    g->counts[0]++;
    g->since_estimate += 1;
    int seeking = !g->path.found || g->broken;
    if (g->seek_every > LEVEL_SEEK_FRAMES) {
        if (ring_dbfs(&g->in, total - SHORT_WINDOW, total) < g->sought_db - GEIGEL_DB) { /* fell: sought at once */
            g->seek_every = LEVEL_SEEK_FRAMES;
            g->since_estimate = AT_ONCE;
            g->moved = 1;
        }
    }
    int due = seeking ? g->since_estimate >= g->seek_every && pcm_dbfs(in, n) >= QUIET_DBFS
                      : g->since_estimate >= RE_ESTIMATE_FRAMES;
    if (!due)
        return;
    g->since_estimate = 0;
    int fresh = g->broken || g->moved, w = fresh ? SHORT_WINDOW : g->window;
    path_t found = seek(g, total, !g->path.found || fresh ? -1 : g->path.lag, w);
    g->sought_db = dbfs(g->x, w); /* seek took the window into g->x */
    g->moved = 0;
    g->foreign = found.found && found.coherence < FOREIGN;
    if (found.found && found.coherence >= COHERENT && found.level_db <= MAX_LEVEL_DB) {
        g->path = found;
        g->broken = 0;
        g->seek_every = SEEK_FRAMES;
    } else if (seeking) {
        int most = !g->path.found ? MAX_SEEK_FRAMES : LEVEL_SEEK_FRAMES;
        g->seek_every = !found.found ? SEEK_FRAMES : (2 * g->seek_every < most ? 2 * g->seek_every : most);
    }
}

static void scaled(const double *x, int n, double k, int16_t *out) {
    for (int i = 0; i < n; i++)
        out[i] = clip16(x[i] * k);
}

/* EchoGuard.temper's second half: `in` (n samples) as it goes on, into out. Returns what was done: 0 passed as
 * it is, 1 the residual, 2 the residual attenuated, 3 the frame attenuated. */
static int temper_frame(cbe_guard *g, long long total, const int16_t *in, int n, int16_t *out) {
    double *x = g->x, *ref = g->r, *echo = g->left;
    int nr = n + g->max_lag + TAPS + LEAD;
    memcpy(out, in, sizeof(int16_t) * (size_t)n);
    g->unexplained_db = -120.0;
    if (!g->path.found && g->foreign)
        return 0; /* the level test's exception (EchoGuard._by_level): nothing to look at */
    for (int i = 0; i < n; i++)
        x[i] = (double)in[i];
    ring_span(&g->ref, total - n - g->max_lag - TAPS, total + LEAD, ref);
    if (!g->path.found) { /* the level test (EchoGuard._by_level) */
        double peak = ref_peak(ref, nr);
        if (peak < REFERENCE_DBFS || dbfs(x, n) >= peak - GEIGEL_DB)
            return 0;
        scaled(x, n, g->suppress, out);
        return 3;
    }
    const path_t *p = &g->path;
    through(ref, g->max_lag + TAPS - p->lag, n, p->taps, echo);
    if (dbfs(echo, n) < REFERENCE_DBFS + p->level_db)
        return 0;
    for (int i = 0; i < n; i++)
        echo[i] = x[i] - echo[i]; /* the residual, from here on */
    double x_db = dbfs(x, n), r_db = dbfs(echo, n);
    double ceiling = ref_peak(ref, nr) + p->level_db + MOVED_DB;
    if (r_db >= x_db) {
        if (!g->broken) {
            g->broken = 1;
            g->since_estimate = AT_ONCE;
            g->seek_every = SEEK_FRAMES;
        }
        if (x_db < ceiling) {
            scaled(x, n, g->suppress, out);
            return 3;
        }
        return 0;
    }
    g->unexplained_db = r_db; /* the held path explains part of it at most (a path that moved makes it louder) */
    double k = 1.0;
    if (x_db - r_db >= g->erle_db) {
        k = g->suppress;
    } else if (x_db < ceiling) {
        k = g->suppress;
        if (!g->moved) {
            g->moved = 1;
            g->since_estimate = AT_ONCE;
        }
    }
    scaled(echo, n, k, out);
    return k == 1.0 ? 1 : 2;
}

/* -- the interface (bridge/audio/echo_native.py) ---------------------------------------------------------- */

#define PATH_DOUBLES (4 + TAPS) /* found, lag, level_db, coherence, taps */
#define VERDICT_DOUBLES (4 + PATH_DOUBLES) /* echo, speaking, inbound_dbfs, residual_dbfs, path */

int cbe_taps(void) { return TAPS; }
int cbe_verdict_doubles(void) { return VERDICT_DOUBLES; }

void cbe_free(cbe_guard *g) {
    if (g == NULL)
        return;
    pthread_mutex_destroy(&g->lock);
    free(g->ref.d);
    free(g->in.d);
    free(g);
}

/* max_lag and window in samples (the Python guard checks and rounds them); suppress as a factor. */
cbe_guard *cbe_new(int max_lag, int window, double speech_dbfs, double erle_db, double suppress) {
    if (max_lag < 1 || window < FRAME || window % FRAME)
        return NULL;
    cbe_guard *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    pthread_mutex_init(&g->lock, NULL);
    g->max_lag = max_lag;
    g->window = window;
    g->speech_dbfs = speech_dbfs;
    g->erle_db = erle_db;
    g->suppress = suppress;
    g->since_estimate = AT_ONCE;
    g->seek_every = SEEK_FRAMES;
    g->sought_db = -120.0;
    int w = window > SHORT_WINDOW ? window : SHORT_WINDOW;
    int nr = w + max_lag + TAPS + LEAD;
    g->fft_max = 1;
    while (g->fft_max < nr)
        g->fft_max <<= 1;
    g->scratch = nr > max_lag + 1 ? nr : max_lag + 1;
    /* the creating thread's scratch made ready too: out of memory shows here rather than in a later call */
    if (ring_init(&g->ref, KEEP_SAMPLES + max_lag) || ring_init(&g->in, KEEP_SAMPLES) ||
        twiddles(g->fft_max, &g->cs, &g->sn) || borrow(g)) {
        cbe_free(g);
        return NULL;
    }
    return g;
}

void cbe_played(cbe_guard *g, const int16_t *pcm, int n) {
    pthread_mutex_lock(&g->lock);
    ring_add(&g->ref, pcm, n);
    pthread_mutex_unlock(&g->lock);
}

void cbe_unplayed(cbe_guard *g, int samples) {
    pthread_mutex_lock(&g->lock);
    ring_drop_newest(&g->ref, samples);
    pthread_mutex_unlock(&g->lock);
}

void cbe_heard(cbe_guard *g, const int16_t *pcm, int n) {
    pthread_mutex_lock(&g->lock);
    ring_add(&g->in, pcm, n);
    pthread_mutex_unlock(&g->lock);
}

/* One frame just heard (n <= CB_FRAME_SAMPLES * 8), as it goes on, into out; returns temper_frame's code (0, the
 * frame passed as it is, also if this thread's scratch could not be had: out of memory). */
int cbe_temper(cbe_guard *g, const int16_t *in, int n, int16_t *out) {
    if (n < 0 || n > SHORT_WINDOW)
        return -1;
    pthread_mutex_lock(&g->lock);
    int done = 0;
    if (borrow(g) == 0) {
        long long total = g->in.total;
        temper_search(g, total, in, n);
        done = temper_frame(g, total, in, n, out);
    } else {
        memcpy(out, in, sizeof(int16_t) * (size_t)n);
    }
    pthread_mutex_unlock(&g->lock);
    return done;
}

/* Whether cbe_uplink tempers the frames it is given, or only keeps them (the plan's echo_guard.temper). */
void cbe_set_temper(cbe_guard *g, int on) {
    pthread_mutex_lock(&g->lock);
    g->tempering = on;
    pthread_mutex_unlock(&g->lock);
}

/* Where the uplink reports the caller's onset (bridge/call/echo.py, EchoGuarding._passed: the rule there over the
 * loop's frames, which sees only what went on): `frames` frames in a row (0: never) louder than speech, each at
 * most `db` below the frame heard as it went on or as the held path leaves it (a caller under a loud echo is
 * attenuated with it, as the path may have moved, while the path explains none of their voice), while the agent's
 * audio may be coming back (the reference over the longest echo delay above REFERENCE_DBFS), are an onset; the
 * count starts again after each (the loop judges each one's window). */
void cbe_set_onset(cbe_guard *g, int frames, double db) {
    pthread_mutex_lock(&g->lock);
    g->onset_frames = frames > 0 ? frames : 0;
    g->onset_db = db;
    g->passes = 0;
    pthread_mutex_unlock(&g->lock);
}

/* The frame `in` went on as `out`: 1 if it completes an onset (cbe_set_onset). Under the lock. */
static int onset_after(cbe_guard *g, const int16_t *in, const int16_t *out, int n) {
    if (g->onset_frames == 0)
        return 0;
    double heard = pcm_dbfs(in, n), level = fmax(pcm_dbfs(out, n), g->unexplained_db);
    int whole = level > g->speech_dbfs && level >= heard - g->onset_db &&
                ring_dbfs(&g->ref, g->ref.total - g->max_lag - n, g->ref.total) >= REFERENCE_DBFS;
    g->passes = whole ? g->passes + 1 : 0;
    if (g->passes < g->onset_frames)
        return 0;
    g->passes = 0;
    return 1;
}

/* callbridge.h: a caller frame heard where the uplink sends it (the media clock thread): cbe_heard, then
 * cbe_temper if the guard tempers, under one lock; 1 if the frame completes an onset (cbe_set_onset). */
int cbe_uplink(cbe_guard *g, const int16_t *in, int n, int16_t *out) {
    if (n < 0 || n > SHORT_WINDOW)
        return -1;
    pthread_mutex_lock(&g->lock);
    ring_add(&g->in, in, n);
    int onset = 0;
    if (out != NULL) {
        if (g->tempering && borrow(g) == 0) { /* no scratch (out of memory): passed as it is */
            long long total = g->in.total;
            temper_search(g, total, in, n);
            temper_frame(g, total, in, n, out);
            onset = onset_after(g, in, out, n);
        } else {
            memcpy(out, in, sizeof(int16_t) * (size_t)n);
        }
    }
    pthread_mutex_unlock(&g->lock);
    return onset;
}

/* Frames tempered, full path searches, and coarse looks that found no candidate (the full search skipped). */
void cbe_counters(cbe_guard *g, unsigned long long out[3]) {
    pthread_mutex_lock(&g->lock);
    memcpy(out, g->counts, sizeof g->counts);
    pthread_mutex_unlock(&g->lock);
}

static void path_out(const path_t *p, double *out) {
    out[0] = p->found;
    out[1] = p->lag;
    out[2] = p->level_db;
    out[3] = p->coherence;
    memcpy(out + 4, p->taps, sizeof p->taps);
}

/* The held path into out (PATH_DOUBLES). */
void cbe_path(cbe_guard *g, double *out) {
    pthread_mutex_lock(&g->lock);
    path_out(&g->path, out);
    pthread_mutex_unlock(&g->lock);
}

/* EchoGuard.estimate: n < 0 the latest sample, hint < 0 none, window 0 the guard's own. Returns 0, -1 for a
 * window out of range, -2 out of memory (this thread's scratch). */
int cbe_estimate(cbe_guard *g, long long n, int hint, int window, double *out) {
    pthread_mutex_lock(&g->lock);
    int w = window > 0 ? window : g->window;
    int done = w >= 1 && w <= (g->window > SHORT_WINDOW ? g->window : SHORT_WINDOW) ? 0 : -1;
    if (done == 0 && borrow(g) != 0)
        done = -2;
    if (done == 0) {
        path_t p = estimate(g, n < 0 ? g->in.total : n, hint, w);
        path_out(&p, out);
    }
    pthread_mutex_unlock(&g->lock);
    return done;
}

/* EchoGuard.judge into out (VERDICT_DOUBLES). Returns 0, or -1 out of memory (this thread's scratch; out not
 * written). */
int cbe_judge(cbe_guard *g, double *out) {
    pthread_mutex_lock(&g->lock);
    if (borrow(g) != 0) {
        pthread_mutex_unlock(&g->lock);
        return -1;
    }
    verdict_t v = judge_over(g, g->window);
    if (!v.echo && v.path.found) {
        verdict_t again = judge_over(g, SHORT_WINDOW);
        if (again.echo)
            v = again;
    }
    if (v.echo && v.path.found && (!g->path.found || g->broken))
        g->seek_every = SEEK_FRAMES; /* the agent's echo, and no path holds: sought again soon (temper) */
    pthread_mutex_unlock(&g->lock);
    out[0] = v.echo;
    out[1] = v.speaking;
    out[2] = v.inbound_dbfs;
    out[3] = v.residual_dbfs;
    path_out(&v.path, out + 4);
    return 0;
}
