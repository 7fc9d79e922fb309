/* callbridge native downlink: the model's audio deltas from a Realtime socket's plain bytes to 8 kHz PCM, in C.
 *
 * A worker's loop reads its Realtime socket on the media beat (bridge/realtime/ws_fastpath.py) and hands the plain
 * bytes of each read (after TLS, if the native engine carries it) to this scanner in one call (cbd_feed). The
 * scanner follows the stream from its first byte: the HTTP answer of the opening handshake (up to its blank line),
 * then RFC 6455 frames. Server frames are not masked (§5.1). Each whole, unfragmented text frame whose JSON "type"
 * is one of the dialect's audio delta events (given by the loop: the dialect's tables, never named here) has its
 * "delta" base64-decoded and converted to 8 kHz PCM16 here: downsampled 24 -> 8 kHz with the resampler's C kernel
 * (cbr_down of resample.c, passed in with the call's own filter state, as the uplink's cbr_up is), or through a
 * G.711 table (passthrough sessions). Consecutive deltas of one item become one run of PCM; the events that commute
 * with the audio (the transcript's deltas, named by the loop), which the service interleaves with the deltas, are
 * carried past a run under way and handed on right after it, so a read's audio is one run. Every other frame
 * (control events, pings, the close, fragments, frames too long to hold) goes back to the loop as
 * the raw bytes it was, in order, for websockets' own parser: the loop takes the pieces one by one (cbd_next), so
 * a run of audio and the events around it keep their order, and what the loop does between pieces (a barge-in's
 * reset, an item's drained tail) happens before the next piece is decoded.
 *
 * A frame is decoded here only when this side is sure the loop's parser (orjson, then the dialect's decoder) reads
 * it the same: every byte of it valid JSON by RFC 8259 (UTF-8, escapes, surrogate pairs, literals, numbers), no
 * top-level key escaped, no key read here twice, the type and the ids plain strings (no escape, ids shorter than
 * ID_MAX), content_index absent, null or 0. Anything else goes to the loop raw: an audio frame that does not decode
 * (invalid JSON, a missing or odd field, bad base64, an odd byte count) is counted as bad, so the loop's own
 * decoder turns it into the error event it always did; one that is only unusual is the loop's to play. A masked or
 * otherwise impossible frame header ends the scan: from there on every byte is passed on as it comes, and
 * websockets fails the connection.
 *
 * The sink (cbd_sink): once the loop has taken the first run of an item into the call's playout ring (every decision
 * about that item made there), it arms the sink with the ring's cbq_push (playout.c, passed by address: the two
 * libraries are separate), the ring and the item. From then on a run of that item goes into the ring here, in the
 * same cbd_next call that finished it, and is never handed to the loop; what the loop must know of it (the deltas,
 * the last event id) rides on the next piece that is handed over (cbd_piece.sunk), or the loop takes it (cbd_sunk).
 * A push into an empty ring comes back as a piece of its own (P_SUNK: the loop reclaims the downstream's trailing
 * silence, as its own push does). The order holds: a run is pushed where it would have been handed over, so
 * whatever the loop does with the pieces after it (an item's drained tail, its end, a barge-in's flush and the
 * sink's disarming) comes after it. A failed push disarms the sink and hands the run over as usual.
 *
 * Filter state: a new item's first delta resets it (cbr_down_reset), as the loop's converter is reset for a new
 * output item; a continuous stream (items off) is never reset. Nothing here is shared with another thread: the
 * loop calls every function.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "callbridge.h"

#define HOLD_MAX (1 << 20)   /* the longest text frame held to inspect; a longer one streams on untouched */
#define TYPES_MAX 512        /* the audio event names, NUL-separated */
#define ID_MAX 128           /* an item or response id; a longer one goes to the loop */
#define DELTA_MAX 128000     /* base64 characters: more decode past OVERSIZED_DELTA_BYTES (bridge/realtime/protocol.py),
                              * a delta the loop plays, counts and reports as oversized: passed on whole */
#define KERNEL_CHUNK 4800    /* samples per cbr_down call (resample.c's MAX_IN) */

enum { ST_HTTP, ST_FRAMES, ST_RAW };                                 /* where the stream is */
enum { P_NONE = 0, P_PASS = 1, P_AUDIO = 2, P_SUNK = 3 };          /* what cbd_next gives */
enum { M_OFF = 0, M_KERNEL = 1, M_TABLE = 2 };                       /* how deltas are converted */

typedef void (*cbr_reset_fn)(cbr_down_state *st);

typedef struct {
    char id[ID_MAX];
    size_t len;
} cbd_id;

typedef struct cbd {
    int state;
    unsigned http_match;     /* bytes of "\r\n\r\n" matched so far */
    unsigned char *in;       /* bytes fed and not yet given back or decoded */
    size_t in_len, in_cap, at;
    uint64_t skip;           /* bytes of a frame streaming on untouched (too long, or not text) */
    int in_fragment;         /* a fragmented data message is under way: its frames all pass */
    int mode, items;
    char types[TYPES_MAX], later[TYPES_MAX]; /* the audio delta's names; the names that may follow a run */
    size_t types_len, later_len;
    unsigned char *dfr;      /* frames deferred to the end of the run they came in (their raw bytes) */
    size_t dfr_len, dfr_cap;
    int dfr_state;           /* 1: to be given next, 2: given (emptied on the next call) */
    cbr_down_fn kernel;
    cbr_reset_fn reset;
    cbr_down_state *fstate;
    int16_t table[256];
    cbd_id last_item;        /* the item the filter state belongs to (len SIZE_MAX: none yet, adopt) */
    int16_t *pcm;            /* the run being built (8 kHz) */
    size_t pcm_len, pcm_cap;
    unsigned char *raw;      /* one delta's decoded bytes */
    size_t raw_cap;
    cbd_id run_item, run_response, run_event;
    uint64_t run_deltas;
    uint64_t deltas, runs, passed, bad, frames;
    cbq_push_fn sink_fn;     /* the sink (cbd_sink): NULL while disarmed */
    cbq *sink_ring;
    int sink_id;
    cbd_id sink_item;
    uint64_t sunk_runs, sunk_deltas, sunk_bytes;
    uint64_t pend_deltas;    /* sunk deltas the loop has not been told of yet */
    cbd_id pend_event;       /* the last of their event ids (len 0: none) */
    int held;                /* the reader's (cbd_set_read) piece kept for the loop: its kind (P_NONE: none) */
    unsigned char held_piece[128]; /* that piece (a cbd_piece) */
} cbd;

/* -- the JSON of one event: its top-level fields, read only where the loop's parser reads them the same ----------
 *
 * The loop's parser (orjson, bridge/realtime/protocol.py) refuses what RFC 8259 refuses (invalid UTF-8, a raw control
 * character or a lone surrogate in a string, a bad escape, literal or number, anything after the value) and keeps the
 * last of duplicate keys, unescaping keys as well as values. So an event is taken here only when this validator
 * accepts every byte of it and it reads the same: a top-level key holding a backslash, a second copy of a key read
 * here, a number this side cannot be sure of (more than 18 digits, an exponent of more than two), nesting deeper
 * than NEST_MAX: the frame goes to the loop raw, whose parser then says what it is. What this validator accepts is
 * a subset of what orjson accepts, and each field it reads has the value orjson gives it. */

#define NEST_MAX 64

typedef struct {
    const unsigned char *type, *delta, *item, *response, *event;
    size_t type_len, delta_len, item_len, response_len, event_len;
    int type_escaped, delta_escaped;
    int item_bad, response_bad, event_bad, index_bad; /* present, but not as the fast path takes them */
    unsigned seen;                                    /* the read keys met, one bit each (a duplicate: unsure) */
} fields;

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

static unsigned char PLAIN[256]; /* in a JSON string, a character that stands for itself: ASCII 0x20-0x7f but " \ */

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Whether any of 8 bytes is not PLAIN: below 0x20, '"', '\\' or above 0x7f (each test exact for "any"). */
static int word_special(uint64_t w) {
    uint64_t quote = w ^ (ONES * '"'), slash = w ^ (ONES * '\\');
    uint64_t hits = ((quote - ONES) & ~quote) | ((slash - ONES) & ~slash) | ((w - ONES * 0x20) & ~w) | w;
    return (hits & HIGHS) != 0;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *cp) {
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        unsigned x = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (x > 15)
            return -1;
        v = v << 4 | x;
    }
    *cp = v;
    return 0;
}

/* The escape at p (its backslash): the byte after it, NULL if JSON has no such escape or it is a lone surrogate. */
static const unsigned char *json_escape(const unsigned char *p, const unsigned char *end) {
    if (end - p < 2)
        return NULL;
    unsigned char c = p[1];
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')
        return p + 2;
    unsigned cp, low;
    if (c != 'u' || hex4(p + 2, end, &cp) < 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
        return NULL;
    if (cp < 0xD800 || cp > 0xDBFF)
        return p + 6;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, end, &low) < 0 || low < 0xDC00 || low > 0xDFFF)
        return NULL; /* a high surrogate must be followed by a low one */
    return p + 12;
}

/* One UTF-8 character at p (its lead byte, above 0x7f): the byte after it, NULL if it is not well formed (RFC 3629:
 * no overlong form, no surrogate, nothing above U+10FFFF). */
static const unsigned char *utf8_char(const unsigned char *p, const unsigned char *end) {
    unsigned char c = *p, lo = 0x80, hi = 0xBF;
    int more;
    if (c >= 0xC2 && c <= 0xDF)
        more = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        more = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        more = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return NULL;
    if (end - p <= more || p[1] < lo || p[1] > hi)
        return NULL;
    for (int i = 2; i <= more; i++)
        if ((p[i] & 0xC0) != 0x80)
            return NULL;
    return p + more + 1;
}

/* A JSON string at p (p at its opening quote): returns the byte after its closing quote, NULL if it is not a valid
 * JSON string. *escaped: it holds a backslash. Plain ASCII goes 8 bytes at a time. */
static const unsigned char *json_str(const unsigned char *p, const unsigned char *end, int *escaped) {
    *escaped = 0;
    p++;
    for (;;) {
        uint64_t w;
        while (end - p >= 8) {
            memcpy(&w, p, 8);
            if (word_special(w))
                break;
            p += 8;
        }
        while (p < end && PLAIN[*p])
            p++;
        if (p >= end || *p < 0x20)
            return NULL;
        if (*p == '"')
            return p + 1;
        if (*p == '\\') {
            *escaped = 1;
            p = json_escape(p, end);
        } else {
            p = utf8_char(p, end);
        }
        if (p == NULL)
            return NULL;
    }
}

static const unsigned char *digits(const unsigned char *p, const unsigned char *end, int *n) {
    *n = 0;
    while (p < end && *p >= '0' && *p <= '9')
        p++, (*n)++;
    return p;
}

/* A JSON number at p: the byte after it, NULL if it is not one or this side cannot be sure orjson takes it (more
 * than 18 significant digits, an exponent of more than two digits: orjson refuses one that overflows a double). */
static const unsigned char *json_num(const unsigned char *p, const unsigned char *end) {
    int whole, frac = 0, exp;
    if (p < end && *p == '-')
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return NULL;
    if (*p == '0')
        p++, whole = 1;
    else
        p = digits(p, end, &whole);
    if (p < end && *p == '.') {
        p = digits(p + 1, end, &frac);
        if (frac == 0)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        p = digits(p, end, &exp);
        if (exp == 0 || exp > 2)
            return NULL;
    }
    return whole + frac > 18 ? NULL : p;
}

static const unsigned char *literal(const unsigned char *p, const unsigned char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* Any JSON value at p: returns the byte after it, NULL if it is not well formed or not sure (see above).
 * *escaped: a string value holding a backslash. */
static const unsigned char *json_value(const unsigned char *p, const unsigned char *end, int depth, int *escaped) {
    *escaped = 0;
    if (p >= end || depth > NEST_MAX)
        return NULL;
    switch (*p) {
    case '"':
        return json_str(p, end, escaped);
    case 't':
        return literal(p, end, "true");
    case 'f':
        return literal(p, end, "false");
    case 'n':
        return literal(p, end, "null");
    case '{':
    case '[':
        break;
    default:
        return json_num(p, end);
    }
    unsigned char close = *p == '{' ? '}' : ']';
    int object = *p == '{', inner;
    p = skip_ws(p + 1, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (object) {
            if (p >= end || *p != '"' || (p = json_str(p, end, &inner)) == NULL)
                return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p = skip_ws(p + 1, end);
        }
        if ((p = json_value(p, end, depth + 1, &inner)) == NULL)
            return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        return p < end && *p == close ? p + 1 : NULL;
    }
}

static int key_is(const unsigned char *k, size_t n, const char *name) {
    return n == strlen(name) && memcmp(k, name, n) == 0;
}

enum { K_TYPE = 1, K_DELTA = 2, K_ITEM = 4, K_RESPONSE = 8, K_EVENT = 16, K_INDEX = 32 };

/* Note one top-level member (key k..n, value v..ve, `escaped` if a string value holds a backslash). -1: a second
 * copy of a key read here (orjson keeps the last: not sure). */
static int note(fields *f, const unsigned char *k, size_t n, const unsigned char *v, const unsigned char *ve,
                int escaped) {
    int string = *v == '"';
    const unsigned char *s = v + 1;
    size_t len = string ? (size_t)(ve - v - 2) : 0;
    unsigned key = key_is(k, n, "type")            ? K_TYPE
                   : key_is(k, n, "delta")         ? K_DELTA
                   : key_is(k, n, "item_id")       ? K_ITEM
                   : key_is(k, n, "response_id")   ? K_RESPONSE
                   : key_is(k, n, "event_id")      ? K_EVENT
                   : key_is(k, n, "content_index") ? K_INDEX
                                                   : 0;
    if (f->seen & key)
        return -1;
    f->seen |= key;
    switch (key) {
    case K_TYPE:
        f->type = string ? s : NULL, f->type_len = len, f->type_escaped = escaped;
        break;
    case K_DELTA:
        f->delta = string ? s : NULL, f->delta_len = len, f->delta_escaped = escaped;
        break;
    case K_ITEM:
        f->item_bad = !string || escaped || len >= ID_MAX;
        f->item = s, f->item_len = len;
        break;
    case K_RESPONSE:
        f->response_bad = !string || escaped || len >= ID_MAX;
        f->response = s, f->response_len = len;
        break;
    case K_EVENT: /* the loop keeps a string one as its last event id; it ignores any other */
        f->event_bad = string && (escaped || len >= ID_MAX);
        f->event = string ? s : NULL, f->event_len = len;
        break;
    case K_INDEX: /* the run carries no index: only the first content part (0, null or none) is taken here */
        f->index_bad = !((ve - v == 1 && *v == '0') || (ve - v == 4 && memcmp(v, "null", 4) == 0));
        break;
    }
    return 0;
}

/* The top-level object of one text frame: 0 and its fields, -1 if it is not one well-formed JSON object, or one
 * this side is not sure it reads as orjson does (an escaped key, a duplicate of a key read here). */
static int json_fields(const unsigned char *text, size_t n, fields *f) {
    const unsigned char *end = text + n, *p = skip_ws(text, end);
    int escaped;
    memset(f, 0, sizeof *f);
    if (p >= end || *p != '{')
        return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return skip_ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        if (p >= end || *p != '"')
            return -1;
        const unsigned char *k = p + 1, *after = json_str(p, end, &escaped);
        if (after == NULL || escaped)
            return -1; /* an escaped key may be any key once unescaped */
        size_t klen = (size_t)(after - k - 1);
        p = skip_ws(after, end);
        if (p >= end || *p != ':')
            return -1;
        int value_escaped;
        const unsigned char *v = skip_ws(p + 1, end), *ve = json_value(v, end, 1, &value_escaped);
        if (ve == NULL || note(f, k, klen, v, ve, value_escaped) < 0)
            return -1;
        p = skip_ws(ve, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p >= end || *p != '}')
            return -1;
        return skip_ws(p + 1, end) == end ? 0 : -1;
    }
}

/* -- base64 (RFC 4648 §4, strict as the loop's decoder: padding required, "\/" is JSON's escaped "/") ----- */

static signed char B64[256];
static uint32_t B64_0[256], B64_1[256], B64_2[256], B64_3[256]; /* the fast decoder's (b64_decode) */
static int b64_ready;

static void b64_table(void) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(B64, -1, sizeof B64);
    for (int i = 0; i < 64; i++)
        B64[(unsigned char)alphabet[i]] = (signed char)i;
    for (int c = 0; c < 256; c++) {
        uint32_t v = (uint32_t)B64[c], stranger = B64[c] < 0 ? 0x80000000u : 0;
        B64_0[c] = stranger | (v & 63) << 18;
        B64_1[c] = stranger | (v & 63) << 12;
        B64_2[c] = stranger | (v & 63) << 6;
        B64_3[c] = stranger | (v & 63);
    }
    for (int c = 0x20; c < 0x80; c++)
        PLAIN[c] = c != '"' && c != '\\';
    b64_ready = 1;
}

/* Returns the decoded length, -1 on a character outside the alphabet, misplaced padding or a partial quantum. */
static long b64_decode_slow(const unsigned char *in, size_t n, unsigned char *out) {
    uint32_t acc = 0;
    long o = 0;
    unsigned q = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = in[i];
        if (c == '\\') {
            if (i + 1 >= n || in[i + 1] != '/')
                return -1;
            continue; /* the '/' that follows is the character */
        }
        if (c == '=') {
            if (q < 2)
                return -1;
            pad++;
            acc <<= 6;
            if (++q == 4) {
                out[o++] = (unsigned char)(acc >> 16);
                if (pad == 1)
                    out[o++] = (unsigned char)(acc >> 8);
                if (i + 1 != n)
                    return -1; /* nothing may follow the padding */
            }
            continue;
        }
        signed char v = B64[c];
        if (v < 0 || pad)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        if (++q == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            q = 0, acc = 0;
        }
    }
    return q == 0 || (q == 4 && pad) ? o : -1;
}

/* The common case four characters at a time (no escape: orjson and the service never escape "/"), the last quantum
 * and anything unusual by the careful decoder. */
static long b64_decode(const unsigned char *in, size_t n, unsigned char *out) {
    if (n % 4 != 0 || memchr(in, '\\', n) != NULL)
        return b64_decode_slow(in, n, out);
    size_t whole = n >= 4 ? n - 4 : 0, i = 0;
    unsigned char *o = out;
    uint32_t bad = 0;
    for (; i < whole; i += 4) { /* each table holds its character's 6 bits in place, bit 31 for a stranger or '=' */
        uint32_t v = B64_0[in[i]] | B64_1[in[i + 1]] | B64_2[in[i + 2]] | B64_3[in[i + 3]];
        bad |= v;
        o[0] = (unsigned char)(v >> 16);
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)v;
        o += 3;
    }
    if (bad & 0x80000000u)
        return -1;
    long last = b64_decode_slow(in + i, n - i, o);
    return last < 0 ? -1 : (long)(o - out) + last;
}

/* -- the run of audio ----------------------------------------------------------------------------------- */

static int grow(void **buf, size_t *cap, size_t need, size_t unit) {
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need)
        cap2 *= 2;
    void *grown = realloc(*buf, cap2 * unit);
    if (grown == NULL)
        return -1;
    *buf = grown;
    *cap = cap2;
    return 0;
}

static int same_id(const cbd_id *id, const unsigned char *s, size_t n) {
    return id->len == n && memcmp(id->id, s, n) == 0;
}

static void set_id(cbd_id *id, const unsigned char *s, size_t n) {
    memcpy(id->id, s, n);
    id->len = n;
}

/* Convert `n` decoded bytes onto the run. -1 if they cannot be (an odd count at 24 kHz, no memory). */
static int convert(cbd *d, const unsigned char *raw, size_t n) {
    size_t samples = d->mode == M_KERNEL ? n / 2 : n;
    if ((d->mode == M_KERNEL && (n & 1)) || grow((void **)&d->pcm, &d->pcm_cap, d->pcm_len + samples + 4, 2) < 0)
        return -1;
    if (d->mode == M_TABLE) {
        for (size_t i = 0; i < n; i++)
            d->pcm[d->pcm_len + i] = d->table[raw[i]];
        d->pcm_len += n;
        return 0;
    }
    const int16_t *in = (const int16_t *)raw; /* raw is malloc'ed: aligned */
    while (samples > 0) {
        int chunk = samples > KERNEL_CHUNK ? KERNEL_CHUNK : (int)samples;
        if (grow((void **)&d->pcm, &d->pcm_cap, d->pcm_len + (size_t)chunk / CBR_FACTOR + 4, 2) < 0)
            return -1;
        int got = d->kernel(d->fstate, in, chunk, d->pcm + d->pcm_len);
        if (got < 0)
            return -1;
        d->pcm_len += (size_t)got;
        in += chunk;
        samples -= (size_t)chunk;
    }
    return 0;
}

static int in_names(const char *names, size_t names_len, const unsigned char *t, size_t n) {
    for (size_t at = 0; at < names_len;) {
        size_t len = strlen(names + at);
        if (len == n && memcmp(names + at, t, n) == 0)
            return 1;
        at += len + 1;
    }
    return 0;
}

static int is_audio_type(const cbd *d, const unsigned char *t, size_t n) {
    return in_names(d->types, d->types_len, t, n);
}

/* Whether a frame that is not well-formed JSON names one of the audio types (counted as bad). */
static int names_audio(const cbd *d, const unsigned char *text, size_t n) {
    for (size_t at = 0; at < d->types_len;) {
        size_t len = strlen(d->types + at);
        if (len && memmem(text, n, d->types + at, len) != NULL)
            return 1;
        at += len + 1;
    }
    return 0;
}

/* One whole text frame's payload. 1: an audio delta, added to the run; 0: not audio (pass it); -1: audio that
 * does not decode (bad: pass it); 2: audio of another item or response than the run's (end the run first); 3: an
 * event that may follow the run (a run is under way: defer it to the run's end). */
static int take_event(cbd *d, const unsigned char *text, size_t n) {
    fields f;
    if (json_fields(text, n, &f) < 0)
        return names_audio(d, text, n) ? -1 : 0; /* not one object, or not sure: the loop's decoder says */
    if (f.type == NULL || f.type_escaped)
        return 0; /* no plain string type: the loop's decoder reads it */
    if (d->run_deltas && in_names(d->later, d->later_len, f.type, f.type_len))
        return 3;
    if (!is_audio_type(d, f.type, f.type_len))
        return 0;
    if (f.delta == NULL || f.item_bad || f.response_bad || f.event_bad || f.index_bad)
        return -1;
    if (f.delta_len > DELTA_MAX)
        return 0;
    if (!d->items || f.item == NULL)
        f.item = (const unsigned char *)"", f.item_len = 0;
    if (!d->items || f.response == NULL)
        f.response = (const unsigned char *)"", f.response_len = 0;
    if (d->run_deltas && (!same_id(&d->run_item, f.item, f.item_len) || !same_id(&d->run_response, f.response,
                                                                                    f.response_len)))
        return 2;
    if (grow((void **)&d->raw, &d->raw_cap, f.delta_len / 4 * 3 + 4, 1) < 0)
        return -1;
    long bytes = b64_decode(f.delta, f.delta_len, d->raw);
    if (bytes < 0 || (d->mode == M_KERNEL && (bytes & 1)))
        return -1;
    if (d->mode == M_KERNEL && d->items && d->last_item.len != SIZE_MAX && !same_id(&d->last_item, f.item,
                                                                                       f.item_len))
        d->reset(d->fstate); /* a new output item starts a new stream */
    if (d->items)
        set_id(&d->last_item, f.item, f.item_len);
    if (convert(d, d->raw, (size_t)bytes) < 0)
        return -1;
    if (d->run_deltas++ == 0) {
        set_id(&d->run_item, f.item, f.item_len);
        set_id(&d->run_response, f.response, f.response_len);
        d->run_event.len = 0;
    }
    if (f.event != NULL) /* the run's last event id: that of its last delta with one, as the loop keeps it */
        set_id(&d->run_event, f.event, f.event_len);
    d->deltas++;
    return 1;
}

/* -- the stream ------------------------------------------------------------------------------------------ */

/* The HTTP answer: pass bytes up to and including its blank line. Returns how many were taken. */
static size_t http_scan(cbd *d, const unsigned char *p, size_t n) {
    static const char end[] = "\r\n\r\n";
    for (size_t i = 0; i < n; i++) {
        if (p[i] == (unsigned char)end[d->http_match])
            d->http_match++;
        else
            d->http_match = p[i] == '\r' ? 1 : 0;
        if (d->http_match == 4) {
            d->state = ST_FRAMES;
            return i + 1;
        }
    }
    return n;
}

/* The header of the frame at `h` (`have` bytes there): 0 if incomplete, -1 if impossible, else its size, and the
 * payload's length in *len. */
static long frame_head(const unsigned char *h, size_t have, uint64_t *len) {
    if (have < 2)
        return 0;
    size_t head = 2;
    uint64_t n = h[1] & 127;
    if (n == 126) {
        if (have < 4)
            return 0;
        n = (uint64_t)h[2] << 8 | h[3];
        head = 4;
    } else if (n == 127) {
        if (have < 10)
            return 0;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | h[2 + i];
        head = 10;
        if (n >> 63)
            return -1;
    }
    if ((h[1] & 0x80) || (h[0] & 0x70))
        return -1; /* masked (a server's frames are not, RFC 6455 §5.1), or reserved bits (no extension here) */
    *len = n;
    return (long)head;
}

/* How much of the pending bytes from d->at on pass untouched, frame by frame, before the next frame to inspect
 * (a whole unfragmented text frame that may be held). Sets d->skip for a frame streaming through. */
static size_t pass_span(cbd *d, int *inspect) {
    size_t at = d->at;
    *inspect = 0;
    while (at < d->in_len) {
        if (d->state == ST_RAW)
            return d->in_len - d->at;
        if (d->skip) {
            size_t k = d->in_len - at < d->skip ? d->in_len - at : (size_t)d->skip;
            d->skip -= k;
            at += k;
            continue;
        }
        if (d->state == ST_HTTP) {
            at += http_scan(d, d->in + at, d->in_len - at);
            continue;
        }
        uint64_t len;
        long head = frame_head(d->in + at, d->in_len - at, &len);
        if (head == 0)
            break;
        if (head < 0) {
            d->state = ST_RAW;
            continue;
        }
        unsigned op = d->in[at] & 0x0f, fin = d->in[at] & 0x80;
        int data = op == 0 || op == 1 || op == 2;
        if (op == 1 && fin && !d->in_fragment && len <= HOLD_MAX && d->mode != M_OFF) {
            *inspect = 1;
            break;
        }
        if (data)
            d->in_fragment = !fin;
        d->frames++;
        at += (size_t)head;
        d->skip = len;
    }
    return at - d->at;
}

static void compact(cbd *d) {
    if (d->at == 0)
        return;
    memmove(d->in, d->in + d->at, d->in_len - d->at);
    d->in_len -= d->at;
    d->at = 0;
}

/* -- the loop's side ------------------------------------------------------------------------------------- */

cbd *cbd_new(void) {
    if (!b64_ready)
        b64_table();
    cbd *d = calloc(1, sizeof *d);
    if (d != NULL)
        d->last_item.len = SIZE_MAX;
    return d;
}

void cbd_free(cbd *d) {
    if (d == NULL)
        return;
    free(d->in);
    free(d->pcm);
    free(d->raw);
    free(d->dfr);
    free(d);
}

/* The stream starts past its handshake (a test's stream of frames alone). */
void cbd_frames_only(cbd *d) {
    if (d->state == ST_HTTP)
        d->state = ST_FRAMES;
}

/* The audio delta events' wire names, NUL-separated; and the names of events that commute with the model's audio
 * (its transcript's deltas: text, which no audio waits for), which a run under way carries past: they come right
 * after the run they arrived in, in their order, never after any other event. -1: too long. */
int cbd_types(cbd *d, const char *names, int len, const char *later, int later_len) {
    if (len < 0 || len >= TYPES_MAX || later_len < 0 || later_len >= TYPES_MAX)
        return -1;
    memcpy(d->types, names, (size_t)len);
    d->types[len] = '\0';
    d->types_len = (size_t)len;
    memcpy(d->later, later, (size_t)later_len);
    d->later[later_len] = '\0';
    d->later_len = (size_t)later_len;
    return 0;
}

/* Decode deltas from now on: `mode` M_KERNEL with `kernel`/`reset`/`state` (cbr_down, cbr_down_reset, one call's
 * filter state, which the loop may also use between cbd_next calls), M_TABLE with `table` (256 G.711 codes ->
 * PCM16), M_OFF to stop (audio frames pass on raw again). `items`: reset the filter on a new item and carry the
 * ids (0: a continuous stream, never reset, ids empty). The first delta after this adopts the filter as it is. */
int cbd_audio(cbd *d, int mode, cbr_down_fn kernel, cbr_reset_fn reset, cbr_down_state *state, const int16_t *table,
              int items) {
    if ((mode == M_KERNEL && (kernel == NULL || reset == NULL || state == NULL)) || (mode == M_TABLE && !table))
        return -1;
    if (mode != M_OFF && mode != M_KERNEL && mode != M_TABLE)
        return -1;
    d->mode = mode;
    d->kernel = kernel;
    d->reset = reset;
    d->fstate = state;
    d->items = items;
    if (table != NULL)
        memcpy(d->table, table, sizeof d->table);
    d->last_item.len = SIZE_MAX;
    d->sink_fn = NULL; /* a new converter: the loop takes the next item's first run again */
    return 0;
}

/* Append the bytes of one read. -1: no memory (the bytes are then not taken: the loop passes them on itself and
 * the scan is over); -2: the reader holds a piece for the loop (cbd_set_read), whose bytes would move: nothing is
 * taken, take the pieces first. */
int cbd_feed(cbd *d, const unsigned char *data, size_t n) {
    if (d->held != P_NONE)
        return -2;
    compact(d);
    if (grow((void **)&d->in, &d->in_cap, d->in_len + n, 1) < 0) {
        d->state = ST_RAW;
        return -1;
    }
    memcpy(d->in + d->in_len, data, n);
    d->in_len += n;
    return 0;
}

typedef struct cbd_piece {
    const unsigned char *ptr; /* P_PASS: the raw bytes; P_AUDIO: the run's PCM16 at 8 kHz */
    size_t len;               /* bytes */
    const char *item, *response, *event;
    size_t item_len, response_len, event_len;
    uint64_t deltas;
    uint64_t sunk;            /* deltas the sink took since the loop was last told, and the last of their event ids */
    const char *sunk_event;
    size_t sunk_event_len;
} cbd_piece;

_Static_assert(sizeof(cbd_piece) <= sizeof(((cbd *)0)->held_piece), "a held piece fits");

static int give_run(cbd *d, cbd_piece *out) {
    out->ptr = (const unsigned char *)d->pcm;
    out->len = d->pcm_len * 2;
    out->item = d->run_item.id, out->item_len = d->run_item.len;
    out->response = d->run_response.id, out->response_len = d->run_response.len;
    out->event = d->run_event.id, out->event_len = d->run_event.len;
    out->deltas = d->run_deltas;
    d->runs++;
    d->run_deltas = 0;
    d->pcm_len = 0; /* valid until the next call */
    if (d->dfr_len)
        d->dfr_state = 1; /* the events it carried past come next */
    return P_AUDIO;
}

/* The frame at d->at if it is one to inspect (a whole or partial unfragmented text frame short enough to hold,
 * while decoding): its header's size (and *len), else 0. */
static long inspectable(cbd *d, uint64_t *len) {
    if (d->state != ST_FRAMES || d->skip || d->mode == M_OFF || d->in_fragment || d->at >= d->in_len)
        return 0;
    long head = frame_head(d->in + d->at, d->in_len - d->at, len);
    if (head <= 0 || (d->in[d->at] & 0x8f) != 0x81 || *len > HOLD_MAX)
        return 0;
    return head;
}

static int give_pass(cbd *d, cbd_piece *out, size_t n) {
    out->ptr = d->in + d->at;
    out->len = n;
    d->at += n;
    d->passed += n;
    return P_PASS;
}

static int next_piece(cbd *d, cbd_piece *out) {
    memset(out, 0, sizeof *out);
    if (d->dfr_state == 2)
        d->dfr_len = d->dfr_state = 0;
    if (d->dfr_state == 1) {
        out->ptr = d->dfr;
        out->len = d->dfr_len;
        d->passed += d->dfr_len;
        d->dfr_state = 2;
        return P_PASS;
    }
    for (;;) {
        uint64_t len = 0;
        long head = inspectable(d, &len);
        if (head > 0 && d->in_len - d->at >= (size_t)head + len) {
            int took = take_event(d, d->in + d->at + head, (size_t)len);
            size_t whole = (size_t)head + (size_t)len;
            if (took == 3 && grow((void **)&d->dfr, &d->dfr_cap, d->dfr_len + whole, 1) == 0) {
                memcpy(d->dfr + d->dfr_len, d->in + d->at, whole);
                d->dfr_len += whole;
                took = 1;
            } else if (took == 3) {
                took = 0; /* no memory: the run ends here instead */
            }
            if (took == 1) {
                d->at += whole;
                d->frames++;
                continue;
            }
            if (d->run_deltas)
                return give_run(d, out); /* this frame is looked at again on the next call */
            d->bad += took < 0;
            d->frames++;
            return give_pass(d, out, (size_t)head + (size_t)len);
        }
        if (d->run_deltas)
            return give_run(d, out);
        if (head > 0)
            return P_NONE; /* the rest of it comes with a later read */
        int inspect;
        size_t span = pass_span(d, &inspect);
        if (span > 0)
            return give_pass(d, out, span);
        if (!inspect)
            return P_NONE;
    }
}

/* The run just finished into the sink's ring if it is the armed item's: 1 taken (2: the ring was empty), 0 not. */
static int sink_run(cbd *d, const cbd_piece *run) {
    if (d->sink_fn == NULL || !same_id(&d->sink_item, (const unsigned char *)run->item, run->item_len) ||
        run->len > (size_t)INT32_MAX)
        return 0;
    int rc = d->sink_fn(d->sink_ring, d->sink_id, run->ptr, (int)run->len);
    if (rc < 0) {
        d->sink_fn = NULL; /* no memory in the ring: the loop's own push says so */
        return 0;
    }
    d->sunk_runs++;
    d->sunk_deltas += run->deltas;
    d->sunk_bytes += run->len;
    d->pend_deltas += run->deltas;
    if (run->event_len)
        set_id(&d->pend_event, (const unsigned char *)run->event, run->event_len);
    return rc == 1 ? 2 : 1;
}

/* What the sink took since the loop was last told, onto `out` (then forgotten here). */
static void tell_sunk(cbd *d, cbd_piece *out) {
    out->sunk = d->pend_deltas;
    out->sunk_event = d->pend_event.id;
    out->sunk_event_len = d->pend_event.len;
    d->pend_deltas = 0;
    d->pend_event.len = 0; /* its bytes stay valid until the next call */
}

/* The next piece of what was fed, in stream order (a piece the reader holds first, see cbd_set_read): P_PASS (raw
 * bytes for the loop's parser), P_AUDIO (a run of
 * decoded audio), P_SUNK (a run went into the sink's ring, which was empty), P_NONE (nothing more until the next
 * read; a partial frame is kept). Runs of the sink's item go into its ring and are not given. Every piece but
 * P_NONE carries what the sink took since the last one told of it (sunk, sunk_event). A piece's bytes stay valid
 * until the next call. */
int cbd_next(cbd *d, cbd_piece *out) {
    if (d->held != P_NONE) { /* the reader's piece: its bytes are still where they were */
        int kind = d->held;
        memcpy(out, d->held_piece, sizeof *out);
        d->held = P_NONE;
        return kind;
    }
    for (;;) {
        int kind = next_piece(d, out);
        if (kind == P_AUDIO) {
            int sunk = sink_run(d, out);
            if (sunk == 1)
                continue;
            if (sunk == 2) {
                memset(out, 0, sizeof *out);
                kind = P_SUNK;
            }
        }
        if (kind != P_NONE)
            tell_sunk(d, out);
        return kind;
    }
}

/* Arm the sink: runs of `item` (`item_len` bytes) go into `ring` as its item `id` through `fn` (playout.c's
 * cbq_push). `fn` NULL or `id` < 0 disarms it. -1: the item id is too long (disarmed). */
int cbd_sink(cbd *d, cbq_push_fn fn, cbq *ring, int id, const char *item, int item_len) {
    d->sink_fn = NULL;
    if (fn == NULL || ring == NULL || id < 0)
        return 0;
    if (item_len < 0 || item_len >= ID_MAX)
        return -1;
    set_id(&d->sink_item, (const unsigned char *)item, (size_t)item_len);
    d->sink_fn = fn, d->sink_ring = ring, d->sink_id = id;
    return 0;
}

/* What the sink took since the loop was last told (cbd_next's pieces tell it too): `out`'s sunk and sunk_event. */
void cbd_sunk(cbd *d, cbd_piece *out) {
    memset(out, 0, sizeof *out);
    tell_sunk(d, out);
}

/* frames seen, deltas decoded, runs given, bytes passed, bad audio frames, bytes held, state (0 HTTP, 1 frames,
 * 2 raw), and of the sink: runs, deltas and bytes it took */
void cbd_counters(cbd *d, unsigned long long out[10]) {
    out[0] = d->frames;
    out[1] = d->deltas;
    out[2] = d->runs;
    out[3] = d->passed;
    out[4] = d->bad;
    out[5] = d->in_len - d->at;
    out[6] = (unsigned long long)d->state;
    out[7] = d->sunk_runs;
    out[8] = d->sunk_deltas;
    out[9] = d->sunk_bytes;
}

/* -- the reader: every call's Realtime socket read in one call per beat ---------------------------------------
 *
 * A worker's loop reads each call's Realtime socket once per media beat. Done socket by socket from Python, that
 * costs the loop a look (poll), a read and the hand-off to the scanner per call per beat, while nearly every read
 * brings audio only, which the sink pushes into the call's playout ring in C. The reader does it all in one call
 * (cbd_set_read): for every socket registered with it, a non-blocking read(2) (no poll: EAGAIN says there was
 * nothing), TLS opened with the connection's engine over wss:// (tls.c's cbt_feed/cbt_read, passed by address: the
 * libraries are separate), the bytes into the socket's scanner and its first piece taken (cbd_next): a run the sink
 * takes makes none. A piece for the loop (a control event, a first run, a sink's refill) is held in the scanner
 * (cbd_next gives it first, its bytes untouched) and the socket reported with R_PIECE; the loop takes that piece and
 * the rest with cbd_next. The end of the stream, a read error, the peer's close_notify, a failed engine or
 * ciphertext the engine wants sent (a key update's answer) are reported as flags; the loop acts on them (it owns
 * the sockets: their opening, closing, keepalive and writes). A socket that reported an end is read no more.
 * Nothing here is shared with another thread; the engine's own mutex covers the clock thread's seals. */

#include <errno.h>
#include <time.h>
#include <unistd.h>

#define READ_BYTES (256 * 1024) /* one read(2), as asyncio's transport reads */
#define READS_MAX 4             /* reads per socket per call: more waits for the next beat */
#define PLAIN_BYTES (64 * 1024) /* plaintext per cbt_read */

enum { R_PIECE = 1, R_END = 2, R_TLS_OUT = 4, R_TLS_CLOSED = 8, R_TLS_FAILED = 16, R_READ = 32 };

typedef struct {
    int fd;          /* -1: a free slot */
    cbd *d;
    cbt_tls *tls;    /* NULL: ws:// */
    int ended;       /* an end was reported: not read again */
    double heard;    /* CLOCK_MONOTONIC seconds of its last read that brought bytes */
} cbd_slot;

typedef struct cbd_set {
    cbd_slot *slots;
    int n, cap;
    unsigned char *buf, *plain;
    cbt_feed_fn tls_feed;
    cbt_read_fn tls_read;
    cbt_pending_fn tls_pending;
} cbd_set;

cbd_set *cbd_set_new(void) {
    cbd_set *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->buf = malloc(READ_BYTES);
    s->plain = malloc(PLAIN_BYTES);
    if (s->buf == NULL || s->plain == NULL) {
        free(s->buf);
        free(s->plain);
        free(s);
        return NULL;
    }
    return s;
}

void cbd_set_free(cbd_set *s) {
    if (s == NULL)
        return;
    free(s->slots);
    free(s->buf);
    free(s->plain);
    free(s);
}

/* The TLS engine's functions (tls.c), for the sockets over wss://. */
void cbd_set_tls(cbd_set *s, cbt_feed_fn feed, cbt_read_fn read_fn, cbt_pending_fn pending) {
    s->tls_feed = feed, s->tls_read = read_fn, s->tls_pending = pending;
}

/* Register socket `fd` with its scanner `d` (and `tls`, its engine over wss://, else NULL): its slot, -1 if it
 * cannot be (no memory, or an engine without the engine's functions). */
int cbd_set_add(cbd_set *s, int fd, cbd *d, cbt_tls *tls) {
    if (fd < 0 || d == NULL || (tls != NULL && (s->tls_feed == NULL || s->tls_read == NULL || s->tls_pending == NULL)))
        return -1;
    int slot = 0;
    while (slot < s->n && s->slots[slot].fd >= 0)
        slot++;
    if (slot == s->n) {
        if (s->n == s->cap) {
            int cap = s->cap ? 2 * s->cap : 8;
            cbd_slot *more = realloc(s->slots, (size_t)cap * sizeof *more);
            if (more == NULL)
                return -1;
            s->slots = more;
            s->cap = cap;
        }
        s->n++;
    }
    s->slots[slot] = (cbd_slot){.fd = fd, .d = d, .tls = tls, .ended = 0, .heard = 0.0};
    return slot;
}

/* Forget slot `slot` (before its socket is closed: its descriptor may be reused). */
void cbd_set_remove(cbd_set *s, int slot) {
    if (slot < 0 || slot >= s->n)
        return;
    s->slots[slot] = (cbd_slot){.fd = -1};
    while (s->n > 0 && s->slots[s->n - 1].fd < 0)
        s->n--;
}

/* When slot `slot`'s socket last brought bytes (CLOCK_MONOTONIC seconds, as Python's time.monotonic); 0: never. */
double cbd_set_heard(cbd_set *s, int slot) { return slot >= 0 && slot < s->n ? s->slots[slot].heard : 0.0; }

static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The plaintext of `n` ciphertext bytes into the scanner: the flags it raised (R_TLS_CLOSED, R_TLS_FAILED). */
static int open_tls(cbd_set *s, cbd_slot *e, const unsigned char *data, int n) {
    if (s->tls_feed(e->tls, data, n) != 0)
        return R_TLS_FAILED;
    for (;;) {
        int got = s->tls_read(e->tls, s->plain, PLAIN_BYTES);
        if (got == 0)
            return 0;
        if (got == -1)
            return R_TLS_CLOSED;
        if (got < 0 || cbd_feed(e->d, s->plain, (size_t)got) != 0)
            return R_TLS_FAILED;
    }
}

/* One socket: read what arrived, open it, scan it. Its flags. */
static int read_slot(cbd_set *s, cbd_slot *e, double *now) {
    int flags = 0;
    if (e->d->held != P_NONE)
        return R_PIECE; /* the loop has not taken the last one yet: its bytes stay where they are */
    for (int i = 0; i < READS_MAX && !(flags & (R_END | R_TLS_CLOSED | R_TLS_FAILED)); i++) {
        ssize_t n = read(e->fd, s->buf, READ_BYTES);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            flags |= R_END; /* the end of the stream, or an error: the transport meets it on its own read */
            break;
        }
        flags |= R_READ;
        if (*now == 0.0)
            *now = monotonic_s();
        e->heard = *now;
        if (e->tls != NULL)
            flags |= open_tls(s, e, s->buf, (int)n);
        else if (cbd_feed(e->d, s->buf, (size_t)n) != 0)
            flags |= R_TLS_FAILED; /* no memory: the stream cannot go on */
        if (n < READ_BYTES)
            break;
    }
    if (flags & (R_END | R_TLS_CLOSED | R_TLS_FAILED))
        e->ended = 1;
    if (flags & R_READ) {
        cbd_piece *piece = (cbd_piece *)e->d->held_piece;
        int kind = cbd_next(e->d, piece);
        if (kind != P_NONE) {
            e->d->held = kind;
            flags |= R_PIECE;
        }
        if (e->tls != NULL && s->tls_pending(e->tls) > 0)
            flags |= R_TLS_OUT;
    }
    return flags;
}

/* Read every registered socket (see above). Writes (slot, flags) pairs into `out` for each socket the loop must
 * look at (a piece, an end, ciphertext to send), at most `cap` pairs; `reads`: how many sockets brought bytes.
 * Returns the number of pairs. A socket past `cap` is read on the next call. */
int cbd_set_read(cbd_set *s, int *out, int cap, int *reads) {
    int pairs = 0, read_any = 0;
    double now = 0.0;
    for (int i = 0; i < s->n && pairs < cap; i++) {
        cbd_slot *e = &s->slots[i];
        if (e->fd < 0 || e->ended)
            continue;
        int flags = read_slot(s, e, &now);
        read_any += (flags & R_READ) != 0;
        flags &= ~R_READ;
        if (flags) {
            out[2 * pairs] = i;
            out[2 * pairs + 1] = flags;
            pairs++;
        }
    }
    if (reads != NULL)
        *reads = read_any;
    return pairs;
}
