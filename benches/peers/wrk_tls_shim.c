/* LD_PRELOAD shim for wrk's https cases (built by harness.build_tls_shim).
 *
 * wrk keeps one SSL object per connection slot and, on reconnect, calls
 * SSL_shutdown + SSL_clear on it; SSL_clear keeps the last session (with its
 * TLS 1.3 ticket), so the next SSL_connect offers it and the server resumes:
 * a "new connection per request" run is then all resumed handshakes.
 *
 *   WRK_TLS_RESUME=0   drop the session after SSL_clear: every handshake is a
 *                      full one (what a new client does)
 *   WRK_TLS_RESUME=1   leave wrk alone (resumed handshakes after the first)
 *   WRK_TLS_COUNT=FILE at exit, write "<full> <resumed>": handshakes that
 *                      completed, split by SSL_session_reused()
 *
 * No OpenSSL headers or link flags: the functions are looked up in the
 * libssl wrk already loaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

static int (*real_clear)(SSL *);
static int (*real_connect)(SSL *);
static int (*set_session)(SSL *, SSL_SESSION *);
static int (*session_reused)(const SSL *);
static int drop_session;
static unsigned long full, resumed;

static void resolve(void) {
    if (real_clear)
        return;
    real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    session_reused = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_session_reused");
    if (!real_clear || !real_connect || !set_session || !session_reused) {
        fprintf(stderr, "wrk_tls_shim: libssl functions not found\n");
        abort();
    }
    const char *r = getenv("WRK_TLS_RESUME");
    drop_session = r && r[0] == '0';
}

int SSL_clear(SSL *s) {
    resolve();
    int rc = real_clear(s);
    if (rc == 1 && drop_session)
        set_session(s, NULL);
    return rc;
}

int SSL_connect(SSL *s) {
    resolve();
    int rc = real_connect(s);
    if (rc == 1) {
        if (session_reused(s))
            resumed++;
        else
            full++;
    }
    return rc;
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("WRK_TLS_COUNT");
    if (!path)
        return;
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%lu %lu\n", full, resumed);
        fclose(f);
    }
}
