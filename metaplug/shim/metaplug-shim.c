/* metaplug-shim: the executable a container runtime calls in daemon mode (DESIGN: "Two modes, one core").
 *
 * It forwards bytes and decides nothing: CNI_* (and TRACEPARENT, TRACESTATE, BAGGAGE) and stdin go to `metaplug
 * daemon` over a unix socket (protocol in metaplug/daemon/protocol.py), the daemon's stdout, stderr and exit status
 * come back verbatim. Only two things happen here:
 *   - VERSION is answered locally (cni.md 15): the input's cniVersion or our own, and metaplug's versions.
 *   - When the daemon cannot be reached, or the connection breaks before an answer: ADD, CHECK, STATUS and GC fail
 *     at once with CNI error 11 naming the socket; DEL is spooled durably (the request frame, fsync'd, 0600, renamed,
 *     directory fsync'd) and succeeds, so pod deletion never blocks; the daemon replays the spool before it is ready.
 * The conflist entry's `socketPath` and `spoolDir` are found by a minimal scanner of the top-level JSON object.
 * Built static (`gcc -static -Os`, see .ci/setup): no interpreter, no shared library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/metaplug/metaplug.sock"
#define OWN_VERSION "1.1.0"
/* metaplug.cni.version.SUPPORTED_VERSIONS (a unit test keeps the two equal) */
#define SUPPORTED "\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\""
#define MAX_ENV (1u << 20)
#define MAX_STDIN (16u << 20)
#define MAX_OUTPUT (16u << 20)
#define TRY_AGAIN_LATER 11
#define IO_FAILURE 5
#define INVALID_ENVIRONMENT 4
#define INVALID_CONFIG 7

extern char **environ;

struct buf { char *p; size_t len, cap; };

static char version[32] = OWN_VERSION; /* the input's cniVersion when it is a plain version string */

static void put(struct buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { fputs("metaplug-shim: out of memory\n", stderr); exit(1); }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v) {
    unsigned char be[4] = {v >> 24, v >> 16, v >> 8, v};
    put(b, be, 4);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_exact(int fd, char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- CNI error on stdout ---------------------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void cni_error(int code, const char *msg, const char *details) {
    printf("{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":", version, code);
    json_string(stdout, msg);
    fputs(",\"details\":", stdout);
    json_string(stdout, details);
    fputs("}\n", stdout);
    fflush(stdout);
}

static void die(int code, const char *msg, const char *details) {
    cni_error(code, msg, details);
    exit(1);
}

/* ---- minimal JSON scanner: members of the top-level object ------------------------------------------------------- */

static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *skip_string(const char *p, const char *e) { /* p at '"': returns past the closing quote */
    for (p++; p < e; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e) {
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') { if (!(p = skip_string(p, e))) return NULL; continue; }
            if (*p == '{' || *p == '[') depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
            p++;
        }
        return NULL;
    }
    while (p < e && !strchr(",}] \t\r\n", *p)) p++; /* number, true, false, null */
    return p;
}

static int hex4(const char *p, const char *e, unsigned *out) {
    unsigned v = 0;
    if (e - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Decode the JSON string at p (at '"') into out (NUL-terminated, UTF-8). -1 when malformed, too long or has NUL. */
static int decode_string(const char *p, const char *e, char *out, size_t size) {
    size_t n = 0;
    for (p++; p < e && *p != '"'; p++) {
        char tmp[4];
        size_t k = 1;
        unsigned cp;
        tmp[0] = *p;
        if (*p == '\\') {
            if (++p >= e) return -1;
            switch (*p) {
            case '"': case '\\': case '/': tmp[0] = *p; break;
            case 'b': tmp[0] = '\b'; break;
            case 'f': tmp[0] = '\f'; break;
            case 'n': tmp[0] = '\n'; break;
            case 'r': tmp[0] = '\r'; break;
            case 't': tmp[0] = '\t'; break;
            case 'u':
                if (hex4(p + 1, e, &cp)) return -1;
                p += 4;
                if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
                    unsigned lo;
                    if (e - p < 7 || p[1] != '\\' || p[2] != 'u' || hex4(p + 3, e, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0) return -1;
                if (cp < 0x80) tmp[0] = (char)cp;
                else if (cp < 0x800) { tmp[0] = (char)(0xC0 | cp >> 6); tmp[1] = (char)(0x80 | (cp & 0x3F)); k = 2; }
                else if (cp < 0x10000) {
                    tmp[0] = (char)(0xE0 | cp >> 12); tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    tmp[2] = (char)(0x80 | (cp & 0x3F)); k = 3;
                } else {
                    tmp[0] = (char)(0xF0 | cp >> 18); tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); tmp[3] = (char)(0x80 | (cp & 0x3F)); k = 4;
                }
                break;
            default: return -1;
            }
        } else if (*p == '\0') {
            return -1;
        }
        if (n + k >= size) return -1;
        memcpy(out + n, tmp, k);
        n += k;
    }
    if (p >= e) return -1;
    out[n] = '\0';
    return (int)n;
}

/* The string member `key` of the top-level object, decoded into out. 1 found, 0 absent or not a string, -1 bad. */
static int member(const char *json, size_t len, const char *key, char *out, size_t size) {
    const char *e = json + len, *p = ws(json, e);
    char name[64];
    if (p >= e || *p++ != '{') return 0;
    for (;;) {
        p = ws(p, e);
        if (p < e && *p == '}') return 0;
        if (p >= e || *p != '"') return 0;
        int named = decode_string(p, e, name, sizeof name) >= 0 && strcmp(name, key) == 0;
        if (!(p = skip_string(p, e))) return 0;
        p = ws(p, e);
        if (p >= e || *p++ != ':') return 0;
        p = ws(p, e);
        if (named) return (p < e && *p == '"') ? (decode_string(p, e, out, size) >= 0 ? 1 : -1) : 0;
        if (!(p = skip_value(p, e))) return 0;
        p = ws(p, e);
        if (p < e && *p == ',') { p++; continue; }
        return 0;
    }
}

/* ---- the spool: a DEL the daemon did not answer ------------------------------------------------------------------ */

static int mkdirs(char *path) { /* mkdir -p with 0700 for every directory it creates */
    for (char *s = path + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            int rc = mkdir(path, 0700);
            *s = c;
            if (rc != 0 && errno != EEXIST) return -1;
            if (c == '\0') return 0;
        }
    }
}

static int spool(const char *dir_conf, const char *socket_path, const struct buf *frame, char *where, size_t size) {
    char dir[4096], tmp[4200];
    struct timespec ts;
    if (dir_conf[0]) snprintf(dir, sizeof dir, "%s", dir_conf);
    else {
        const char *slash = strrchr(socket_path, '/');
        int n = slash ? (int)(slash - socket_path) : 1;
        snprintf(dir, sizeof dir, "%.*s/spool", n, slash ? socket_path : ".");
    }
    if (dir[0] != '/' || mkdirs(dir) != 0) { snprintf(where, size, "%s: %s", dir, strerror(errno)); return -1; }
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long ns = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
    snprintf(tmp, sizeof tmp, "%s/%llu-%d.tmp", dir, ns, (int)getpid());
    snprintf(where, size, "%s/%llu-%d.del", dir, ns, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) { snprintf(where, size, "%s: %s", tmp, strerror(errno)); return -1; }
    if (fchmod(fd, 0600) != 0 || write_all(fd, frame->p, frame->len) != 0 || fsync(fd) != 0) {
        snprintf(where, size, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, where) != 0) { snprintf(where, size, "%s: %s", tmp, strerror(errno)); unlink(tmp); return -1; }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) { snprintf(where, size, "%s: %s", dir, strerror(errno)); return -1; }
    close(dfd);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------------------------------ */

static const char *socket_path;
static const char *spool_dir;
static const char *command;
static struct buf frame;

static void unreachable(const char *why) { /* never returns */
    char details[8400], where[4400];
    snprintf(details, sizeof details, "metaplug daemon at %s: %s", socket_path, why);
    if (strcmp(command, "DEL") != 0) die(TRY_AGAIN_LATER, "metaplug daemon unreachable, try again later", details);
    if (spool(spool_dir, socket_path, &frame, where, sizeof where) != 0) {
        char both[12900];
        snprintf(both, sizeof both, "%s; spooling the DEL failed too: %s", details, where);
        die(IO_FAILURE, "metaplug daemon unreachable and the DEL could not be spooled", both);
    }
    fprintf(stderr, "metaplug-shim: %s; DEL spooled to %s, the daemon replays it before it is ready\n", details, where);
    exit(0);
}

int main(void) {
    static char sock_buf[4096], spool_buf[4096], ver[64];
    struct buf in = {0};
    char chunk[65536];
    signal(SIGPIPE, SIG_IGN);
    command = getenv("CNI_COMMAND");
    if (!command || !*command) { /* cni.md 1 */
        fputs("CNI plugin metaplug-shim (forwards to metaplug daemon); supported CNI versions: " SUPPORTED "\n",
              stderr);
        return 0;
    }
    for (;;) {
        ssize_t r = read(0, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die(IO_FAILURE, "failed to read network configuration from stdin", strerror(errno));
        if (r == 0) break;
        if (in.len + (size_t)r > MAX_STDIN) die(IO_FAILURE, "network configuration on stdin too large", "over 16 MiB");
        put(&in, chunk, (size_t)r);
    }
    if (member(in.p ? in.p : "", in.len, "cniVersion", ver, sizeof ver) == 1 && ver[0] &&
        strspn(ver, "0123456789.") == strlen(ver) && strlen(ver) < sizeof version)
        strcpy(version, ver);
    if (strcmp(command, "VERSION") == 0) { /* cni.md 15 */
        printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[" SUPPORTED "]}\n", version);
        return 0;
    }
    int found = member(in.p ? in.p : "", in.len, "socketPath", sock_buf, sizeof sock_buf);
    if (found < 0 || (found == 1 && sock_buf[0] != '/'))
        die(INVALID_CONFIG, "invalid metaplug-shim configuration", "socketPath: must be an absolute path");
    socket_path = found == 1 ? sock_buf : DEFAULT_SOCKET;
    found = member(in.p ? in.p : "", in.len, "spoolDir", spool_buf, sizeof spool_buf);
    if (found < 0 || (found == 1 && spool_buf[0] != '/'))
        die(INVALID_CONFIG, "invalid metaplug-shim configuration", "spoolDir: must be an absolute path");
    spool_dir = found == 1 ? spool_buf : "";

    struct buf env = {0};
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) == 0 || strncmp(*e, "TRACEPARENT=", 12) == 0 ||
            strncmp(*e, "TRACESTATE=", 11) == 0 || strncmp(*e, "BAGGAGE=", 8) == 0) {
            if (!strchr(*e, '=')) continue;
            put(&env, *e, strlen(*e) + 1);
        }
    }
    if (env.len > MAX_ENV) die(INVALID_ENVIRONMENT, "CNI environment too large", "over 1 MiB of CNI_* variables");
    put(&frame, "MPQ1", 4);
    put_u32(&frame, (uint32_t)env.len);
    put(&frame, env.p ? env.p : "", env.len);
    put_u32(&frame, (uint32_t)in.len);
    put(&frame, in.p ? in.p : "", in.len);

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof addr.sun_path)
        die(INVALID_CONFIG, "invalid metaplug-shim configuration", "socketPath: longer than 107 bytes");
    strcpy(addr.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) unreachable(strerror(errno));
    if (write_all(fd, frame.p, frame.len) != 0) unreachable("connection broke while sending the call");

    char head[12];
    uint32_t len[2];
    struct buf out[2] = {{0}, {0}};
    if (read_exact(fd, head, 12) != 0 || memcmp(head, "MPA1", 4) != 0)
        unreachable("connection closed before an answer");
    unsigned char *h = (unsigned char *)head;
    uint32_t status = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
    len[0] = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
    for (int i = 0; i < 2; i++) {
        if (i == 1) {
            unsigned char l[4];
            if (read_exact(fd, (char *)l, 4) != 0) unreachable("connection closed before an answer");
            len[1] = (uint32_t)l[0] << 24 | (uint32_t)l[1] << 16 | (uint32_t)l[2] << 8 | l[3];
        }
        if (len[i] > MAX_OUTPUT) unreachable("answer over the size limit");
        out[i].p = malloc(len[i] + 1);
        if (!out[i].p || read_exact(fd, out[i].p, len[i]) != 0) unreachable("connection closed before an answer");
        out[i].len = len[i];
    }
    close(fd);
    write_all(1, out[0].p, out[0].len);
    write_all(2, out[1].p, out[1].len);
    return (int)(status & 0xFF);
}
