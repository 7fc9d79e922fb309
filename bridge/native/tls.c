/* callbridge TLS engine: a TLS client over memory BIOs, so C code can encrypt WebSocket frames for wss://.
 *
 * The native uplink (cport.c) sends the caller's audio from pjmedia's media clock thread without entering
 * Python; over wss:// each frame has to be encrypted there too. This engine is one TLS client connection whose
 * records go through two memory BIOs: it never touches a socket. The caller feeds it the ciphertext that came
 * from the network (cbt_feed) and takes the ciphertext to send (cbt_take, or what cbt_seal returns), so whoever
 * owns the socket (the event loop, or the uplink's send(2) on the clock thread) stays in charge of it.
 *
 * OpenSSL is the process's own, reached through dlopen/dlsym (cbt_load, given the libssl the interpreter's ssl
 * module has mapped, bridge/realtime/tls_native.py), with every prototype declared here by hand: no OpenSSL
 * header is needed to build it, so a machine without libssl-dev still gets it. Only functions (no macros) of
 * OpenSSL 1.1.1 and 3 are used; the few macros needed are spelled as the ctrl calls they expand to.
 *
 * Threading: one mutex per engine, taken by every function. The clock thread calls cbt_seal (through a
 * cbt_seal_fn, callbridge.h) while the event loop feeds, reads and seals on the same engine; the mutex keeps
 * the records in one order. Each call clears the calling thread's OpenSSL error queue first, so one engine's
 * errors never show up as another's. The SSL_CTX for the default trust store is made once per process, and the
 * one for the last CA file/directory given is kept while that file is unchanged (loading a bundle takes ~15 ms).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "callbridge.h"

typedef struct ssl_st SSL; /* opaque: only pointers to them are passed around */
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
typedef struct ssl_cipher_st SSL_CIPHER;
typedef struct bio_st BIO;
typedef struct bio_method_st BIO_METHOD;
typedef struct X509_VERIFY_PARAM_st X509_VERIFY_PARAM;
typedef struct x509_store_ctx_st X509_STORE_CTX;

/* Constants of ssl.h, bio.h, tls1.h and x509_vfy.h (the same in 1.1.1 and 3). */
#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_ZERO_RETURN 6
#define SSL_VERIFY_NONE 0
#define SSL_VERIFY_PEER 1
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define TLSEXT_NAMETYPE_host_name 0
#define SSL_CTRL_SET_MIN_PROTO_VERSION 123
#define TLS1_2_VERSION 0x0303
#define BIO_C_SET_BUF_MEM_EOF_RETURN 130
#define X509_V_OK 0

/* Every function used: its return type, name and parameters. Loaded into `ossl` by cbt_load. */
#define OPENSSL_FUNCTIONS(X)                                                                                   \
    X(const SSL_METHOD *, TLS_client_method, (void))                                                           \
    X(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *))                                                            \
    X(void, SSL_CTX_free, (SSL_CTX *))                                                                         \
    X(long, SSL_CTX_ctrl, (SSL_CTX *, int, long, void *))                                                      \
    X(int, SSL_CTX_set_default_verify_paths, (SSL_CTX *))                                                      \
    X(int, SSL_CTX_load_verify_locations, (SSL_CTX *, const char *, const char *))                             \
    X(SSL *, SSL_new, (SSL_CTX *))                                                                             \
    X(void, SSL_free, (SSL *))                                                                                 \
    X(void, SSL_set_connect_state, (SSL *))                                                                    \
    X(void, SSL_set_verify, (SSL *, int, int (*)(int, X509_STORE_CTX *)))                                       \
    X(long, SSL_ctrl, (SSL *, int, long, void *))                                                              \
    X(int, SSL_set1_host, (SSL *, const char *))                                                               \
    X(X509_VERIFY_PARAM *, SSL_get0_param, (SSL *))                                                            \
    X(int, X509_VERIFY_PARAM_set1_ip_asc, (X509_VERIFY_PARAM *, const char *))                                 \
    X(void, SSL_set_bio, (SSL *, BIO *, BIO *))                                                                \
    X(int, SSL_do_handshake, (SSL *))                                                                          \
    X(int, SSL_is_init_finished, (const SSL *))                                                                \
    X(int, SSL_read, (SSL *, void *, int))                                                                     \
    X(int, SSL_write, (SSL *, const void *, int))                                                              \
    X(int, SSL_shutdown, (SSL *))                                                                              \
    X(int, SSL_get_error, (const SSL *, int))                                                                  \
    X(long, SSL_get_verify_result, (const SSL *))                                                              \
    X(const char *, SSL_get_version, (const SSL *))                                                            \
    X(const SSL_CIPHER *, SSL_get_current_cipher, (const SSL *))                                               \
    X(const char *, SSL_CIPHER_get_name, (const SSL_CIPHER *))                                                 \
    X(const BIO_METHOD *, BIO_s_mem, (void))                                                                   \
    X(BIO *, BIO_new, (const BIO_METHOD *))                                                                    \
    X(int, BIO_free, (BIO *))                                                                                  \
    X(long, BIO_ctrl, (BIO *, int, long, void *))                                                              \
    X(size_t, BIO_ctrl_pending, (BIO *))                                                                       \
    X(int, BIO_read, (BIO *, void *, int))                                                                     \
    X(int, BIO_write, (BIO *, const void *, int))                                                              \
    X(unsigned long, ERR_get_error, (void))                                                                    \
    X(void, ERR_error_string_n, (unsigned long, char *, size_t))                                               \
    X(void, ERR_clear_error, (void))                                                                           \
    X(const char *, X509_verify_cert_error_string, (long))

#define DECLARE(ret, name, params) ret(*name) params;
static struct {
    OPENSSL_FUNCTIONS(DECLARE)
} ossl;

static pthread_mutex_t global = PTHREAD_MUTEX_INITIALIZER; /* guards loading and the contexts */
static int loaded;
static char load_error[512];
static SSL_CTX *shared_ctx; /* TLS 1.2 and up, the default trust store: made by the first cbt_new without a CA */
static struct {             /* the context of the last CA file/directory given, while they name the same file */
    SSL_CTX *ctx;
    char *cafile, *capath;
    struct stat st; /* the file's identity, size and time: a bundle rewritten in place is loaded again */
} last;

struct cbt_tls {
    pthread_mutex_t lock;
    SSL *ssl;
    BIO *rbio, *wbio; /* from the network, to the network: owned by ssl */
    int verify;       /* the peer's certificate is checked: a failed check ends the handshake */
    int failed;       /* a fatal error: OpenSSL forbids further use of the connection */
    int closing;      /* close_notify queued: no more application data */
    char error[256];
};

/* dlsym the libssl handle (its dependency libcrypto answers for BIO_, ERR_ and X509_), else libcrypto opened by
 * the name of libssl's sibling. */
static void *symbol(void *ssl_lib, void **crypto_lib, const char *path, const char *name) {
    void *found = dlsym(ssl_lib, name);
    if (found)
        return found;
    if (!*crypto_lib) {
        char sibling[PATH_MAX];
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        const char *at = strstr(base, "libssl");
        if (!at || strlen(path) + 2 >= sizeof sibling)
            return NULL;
        snprintf(sibling, sizeof sibling, "%.*slibcrypto%s", (int)(at - path), path, at + 6);
        *crypto_lib = dlopen(sibling, RTLD_NOW | RTLD_LOCAL);
        if (!*crypto_lib)
            return NULL;
    }
    return dlsym(*crypto_lib, name);
}

int cbt_load(const char *libssl_path) {
    pthread_mutex_lock(&global);
    if (!loaded) {
        void *ssl_lib = libssl_path ? dlopen(libssl_path, RTLD_NOW | RTLD_LOCAL) : NULL, *crypto_lib = NULL;
        const char *missing = NULL;
        if (!ssl_lib) {
            snprintf(load_error, sizeof load_error, "dlopen %s: %s", libssl_path ? libssl_path : "(no path)",
                     libssl_path ? dlerror() : "no libssl given");
        } else {
#define LOAD(ret, name, params)                                                                                \
    if (!missing) {                                                                                            \
        void *sym = symbol(ssl_lib, &crypto_lib, libssl_path, #name);                                          \
        if (sym)                                                                                               \
            memcpy(&ossl.name, &sym, sizeof sym); /* POSIX: a function's address fits in a void * */          \
        else                                                                                                   \
            missing = #name;                                                                                   \
    }
            OPENSSL_FUNCTIONS(LOAD)
            if (missing)
                snprintf(load_error, sizeof load_error, "%s has no %s (OpenSSL 1.1.1 or later is needed)",
                         libssl_path, missing);
            else
                loaded = 1; /* the handles stay open for the life of the process */
        }
    }
    int ok = loaded;
    pthread_mutex_unlock(&global);
    return ok ? 0 : -1;
}

const char *cbt_load_error(void) { return load_error; }

/* A context for TLS 1.2 and up trusting `cafile` and `capath`, or (both NULL) the default store (SSL_CERT_FILE /
 * SSL_CERT_DIR when it is made, else the system's: what Python's ssl.create_default_context loads). Verification
 * itself is set per engine. */
static SSL_CTX *new_ctx(const char *cafile, const char *capath) {
    SSL_CTX *ctx = ossl.SSL_CTX_new(ossl.TLS_client_method());
    if (!ctx)
        return NULL;
    int ok = ossl.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, NULL) == 1;
    ok = ok && (cafile || capath ? ossl.SSL_CTX_load_verify_locations(ctx, cafile, capath) == 1
                                 : ossl.SSL_CTX_set_default_verify_paths(ctx) == 1);
    if (!ok) {
        ossl.SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int same_text(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The context for these trust paths, under `global`: loading a CA bundle takes milliseconds (parsing every
 * certificate), so the one made for the last paths is kept while the file is unchanged. */
static SSL_CTX *ctx_for(const char *cafile, const char *capath) {
    if (!cafile && !capath)
        return shared_ctx ? shared_ctx : (shared_ctx = new_ctx(NULL, NULL));
    struct stat st = {0};
    if (cafile && stat(cafile, &st) != 0)
        return NULL;
    if (last.ctx && same_text(cafile, last.cafile) && same_text(capath, last.capath) && same_file(&st, &last.st))
        return last.ctx;
    SSL_CTX *ctx = new_ctx(cafile, capath);
    char *file = cafile ? strdup(cafile) : NULL, *dir = capath ? strdup(capath) : NULL;
    if (!ctx || (cafile && !file) || (capath && !dir)) {
        ossl.SSL_CTX_free(ctx);
        free(file);
        free(dir);
        return NULL;
    }
    ossl.SSL_CTX_free(last.ctx); /* engines made from it hold their own references */
    free(last.cafile);
    free(last.capath);
    last.ctx = ctx, last.cafile = file, last.capath = dir, last.st = st;
    return ctx;
}

static int is_ip_literal(const char *host) {
    unsigned char addr[16];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

cbt_tls *cbt_new(const char *host, int verify, const char *cafile, const char *capath) {
    if (verify && (!host || !*host))
        return NULL; /* a certificate verified without a name to check it against proves nothing */
    cbt_tls *t = calloc(1, sizeof *t);
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    pthread_mutex_lock(&global);
    if (loaded && t) {
        ossl.ERR_clear_error();
        ctx = ctx_for(cafile, capath);
        ssl = ctx ? ossl.SSL_new(ctx) : NULL; /* takes its reference while `last` cannot be replaced */
    }
    pthread_mutex_unlock(&global);
    int ok = ssl != NULL, ip = host && is_ip_literal(host);
    if (ok) {
        ossl.SSL_set_connect_state(ssl);
        ossl.SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    }
    if (ok && host && *host && !ip) /* SNI carries DNS names only (RFC 6066 §3) */
        ok = ossl.SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, (void *)host) == 1;
    /* An address is checked against the certificate's iPAddress names, a name against its dNSName ones:
     * SSL_set1_host tells an address from a name itself only since OpenSSL 3, set1_ip_asc does in 1.1.1 too. */
    if (ok && verify)
        ok = ip ? ossl.X509_VERIFY_PARAM_set1_ip_asc(ossl.SSL_get0_param(ssl), host) == 1
                : ossl.SSL_set1_host(ssl, host) == 1;
    BIO *rbio = ok ? ossl.BIO_new(ossl.BIO_s_mem()) : NULL, *wbio = rbio ? ossl.BIO_new(ossl.BIO_s_mem()) : NULL;
    if (!wbio) {
        if (rbio)
            ossl.BIO_free(rbio);
        if (ssl)
            ossl.SSL_free(ssl);
        free(t);
        return NULL;
    }
    ossl.BIO_ctrl(rbio, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, NULL); /* empty means "retry", not end of stream */
    ossl.SSL_set_bio(ssl, rbio, wbio);
    *t = (cbt_tls){.ssl = ssl, .rbio = rbio, .wbio = wbio, .verify = verify != 0};
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

/* Records why the last SSL_* call returning `rc` failed; the engine is unusable afterwards. Called under the lock
 * on the thread that made the call, whose error queue holds the reason. */
static void fail(cbt_tls *t, int rc) {
    long verify = ossl.SSL_get_verify_result(t->ssl);
    unsigned long code = ossl.ERR_get_error();
    t->failed = 1;
    if (t->verify && verify != X509_V_OK) /* unverified, the result is kept but the handshake goes on */
        snprintf(t->error, sizeof t->error, "certificate verify failed: %s",
                 ossl.X509_verify_cert_error_string(verify));
    else if (code)
        ossl.ERR_error_string_n(code, t->error, sizeof t->error);
    else
        snprintf(t->error, sizeof t->error, "TLS failure (SSL_get_error %d)", ossl.SSL_get_error(t->ssl, rc));
}

int cbt_handshake(cbt_tls *t) {
    pthread_mutex_lock(&t->lock);
    int result = -1;
    if (!t->failed) {
        ossl.ERR_clear_error();
        int rc = ossl.SSL_do_handshake(t->ssl);
        if (rc == 1)
            result = 1;
        else if (ossl.SSL_get_error(t->ssl, rc) == SSL_ERROR_WANT_READ)
            result = 0;
        else
            fail(t, rc);
    }
    pthread_mutex_unlock(&t->lock);
    return result;
}

int cbt_feed(cbt_tls *t, const void *data, int len) {
    if (len <= 0)
        return len == 0 ? 0 : -2;
    pthread_mutex_lock(&t->lock);
    ossl.ERR_clear_error();
    int result = ossl.BIO_write(t->rbio, data, len) == len ? 0 : -2; /* a memory BIO grows: only malloc fails */
    if (result)
        snprintf(t->error, sizeof t->error, "out of memory buffering %d bytes from the network", len);
    pthread_mutex_unlock(&t->lock);
    return result;
}

int cbt_read(cbt_tls *t, void *buf, int cap) {
    if (cap <= 0)
        return -2;
    pthread_mutex_lock(&t->lock);
    int result = -2;
    if (!t->failed) {
        ossl.ERR_clear_error();
        int rc = ossl.SSL_read(t->ssl, buf, cap); /* also takes post-handshake messages (session tickets) */
        int why = rc > 0 ? 0 : ossl.SSL_get_error(t->ssl, rc);
        if (rc > 0)
            result = rc;
        else if (why == SSL_ERROR_WANT_READ)
            result = 0;
        else if (why == SSL_ERROR_ZERO_RETURN)
            result = -1;
        else
            fail(t, rc);
    }
    pthread_mutex_unlock(&t->lock);
    return result;
}

/* The most ciphertext `len` plaintext bytes become: per record of up to 16 KiB, at most 128 bytes of header, IV,
 * MAC or tag and padding (CBC with HMAC-SHA384 needs 85). */
static long long sealed_size(int len) { return (long long)len + 128LL * (len / 16384 + 1); }

int cbt_seal_room(int len) {
    long long room = sealed_size(len < 0 ? 0 : len) + 4096; /* and small post-handshake messages queued before */
    return room > INT_MAX ? INT_MAX : (int)room;
}

/* Moves up to `cap` bytes of the ciphertext waiting in the write BIO into `out`; the count moved. */
static int drain(cbt_tls *t, void *out, int cap) {
    int total = 0;
    while (total < cap && ossl.BIO_ctrl_pending(t->wbio) > 0) {
        int n = ossl.BIO_read(t->wbio, (char *)out + total, cap - total);
        if (n <= 0)
            break;
        total += n;
    }
    return total;
}

int cbt_seal(cbt_tls *t, const void *data, int len, void *out, int cap) {
    if (len < 0 || cap < 0 || (len > 0 && !data))
        return -2;
    pthread_mutex_lock(&t->lock);
    int result = -2;
    if (t->failed || t->closing || !ossl.SSL_is_init_finished(t->ssl)) {
        if (!t->failed)
            snprintf(t->error, sizeof t->error, t->closing ? "the session is closed" : "the handshake is not done");
    } else if ((long long)ossl.BIO_ctrl_pending(t->wbio) + sealed_size(len) > cap) {
        result = -1; /* checked before anything is consumed: the caller retries with more room */
    } else {
        ossl.ERR_clear_error();
        int rc = len > 0 ? ossl.SSL_write(t->ssl, data, len) : 0; /* the write BIO grows: all of it or a failure */
        if (rc == len)
            result = drain(t, out, cap);
        else
            fail(t, rc);
    }
    pthread_mutex_unlock(&t->lock);
    return result;
}

int cbt_pending(cbt_tls *t) {
    pthread_mutex_lock(&t->lock);
    size_t n = ossl.BIO_ctrl_pending(t->wbio);
    pthread_mutex_unlock(&t->lock);
    return n > INT_MAX ? INT_MAX : (int)n;
}

int cbt_take(cbt_tls *t, void *buf, int cap) {
    if (cap <= 0)
        return 0;
    pthread_mutex_lock(&t->lock);
    int n = drain(t, buf, cap);
    pthread_mutex_unlock(&t->lock);
    return n;
}

int cbt_close_notify(cbt_tls *t) {
    pthread_mutex_lock(&t->lock);
    int result = 0;
    if (t->failed) {
        result = -2;
    } else if (!t->closing) {
        ossl.ERR_clear_error();
        int rc = ossl.SSL_shutdown(t->ssl); /* 0: sent, the peer's not yet seen; 1: both seen */
        if (rc < 0) {
            fail(t, rc);
            result = -2;
        } else {
            t->closing = 1;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return result;
}

/* The texts below live as long as the engine (error) or the process (OpenSSL's static strings). A failed engine's
 * error text no longer changes, so the thread that saw the failure reads it safely after the lock is dropped. */
const char *cbt_error(cbt_tls *t) { return t->error; }

const char *cbt_version(cbt_tls *t) {
    pthread_mutex_lock(&t->lock);
    const char *v = ossl.SSL_get_version(t->ssl);
    pthread_mutex_unlock(&t->lock);
    return v ? v : "";
}

const char *cbt_cipher(cbt_tls *t) {
    pthread_mutex_lock(&t->lock);
    const SSL_CIPHER *c = ossl.SSL_get_current_cipher(t->ssl);
    pthread_mutex_unlock(&t->lock);
    return c ? ossl.SSL_CIPHER_get_name(c) : "";
}

void cbt_free(cbt_tls *t) {
    if (!t)
        return;
    ossl.SSL_free(t->ssl);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
