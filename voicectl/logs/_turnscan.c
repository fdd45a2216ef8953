/* The fast path of voicectl/logs/ttft.py in C: the same per-line decision as its fast_pattern()
 * regex, over several threads, with the figures returned as sorted arrays.
 *
 * scan(buf, start, end, threads=1) -> (series, no_ttft, skipped, refs)
 *   buf[start] starts a line; each line in [start, end) is either
 *   - a trusted turn line of the writer's exact shape: its mode and ttft_ms token are counted
 *     and folded as ttft._fold does: series {mode: (values, counts)} with `values` the distinct
 *     TTFTs ascending (float64 bytes) and `counts` their turns (int64 bytes); no_ttft
 *     {mode: n} for null; skipped: tokens that are not finite JSON numbers; or
 *   - a clean line of another event: skipped; or
 *   - anything else (non-empty, or holding a NUL byte), and a trusted line this table cannot
 *     count (a token over 8 bytes, a 33rd mode in one part): appended to `refs` for the
 *     reference reader, in file order.
 *   The range is cut at line starts into `threads` parts scanned without the GIL, each into a
 *   compact hash table keyed by (mode, token); the tables are merged, then sorted per mode.
 *   OSError when the mapped file got shorter meanwhile (the SIGBUS that would kill the
 *   process is caught while the file is read).
 *
 * merge(values_a, counts_a, values_b, counts_b) -> (values, counts)
 *   Two such sorted series as one (equal values add their counts).
 *
 * ttft.py's tests compare both with the json.loads reference on odd inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__x86_64__) && defined(__GNUC__)  /* gcc and clang: SSE2 always, AVX2 at run time */
#include <immintrin.h>
#define HAVE_SSE2 1
#endif

/* -- finding where a line stops being simple */

/* Index of the first '\n', '{' or NUL in b[p, e), or e. */
static Py_ssize_t stop_portable(const char *b, Py_ssize_t p, Py_ssize_t e) {
#ifdef HAVE_SSE2
    const __m128i nl = _mm_set1_epi8('\n'), br = _mm_set1_epi8('{'), z = _mm_setzero_si128();
    for (; p + 16 <= e; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(b + p));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, nl), _mm_cmpeq_epi8(v, br)),
                                   _mm_cmpeq_epi8(v, z));
        int m = _mm_movemask_epi8(hit);
        if (m) return p + __builtin_ctz((unsigned)m);
    }
#endif
    while (p < e && b[p] != '\n' && b[p] != '{' && b[p] != '\0') p++;
    return p;
}

#ifdef HAVE_SSE2
__attribute__((target("avx2"))) static Py_ssize_t stop_avx2(const char *b, Py_ssize_t p,
                                                           Py_ssize_t e) {
    const __m256i nl = _mm256_set1_epi8('\n'), br = _mm256_set1_epi8('{');
    const __m256i z = _mm256_setzero_si256();
    for (; p + 32 <= e; p += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b + p));
        __m256i hit = _mm256_or_si256(
            _mm256_or_si256(_mm256_cmpeq_epi8(v, nl), _mm256_cmpeq_epi8(v, br)),
            _mm256_cmpeq_epi8(v, z));
        unsigned m = (unsigned)_mm256_movemask_epi8(hit);
        if (m) return p + __builtin_ctz(m);
    }
    return stop_portable(b, p, e);
}
#endif

static Py_ssize_t (*find_stop)(const char *, Py_ssize_t, Py_ssize_t) = stop_portable;

/* -- the writer's shape */

static inline int lit(const char *b, Py_ssize_t *p, Py_ssize_t e, const char *s, Py_ssize_t n) {
    if (e - *p < n || memcmp(b + *p, s, n) != 0) return 0;
    *p += n;
    return 1;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Spans of a character class: the index of the first byte at or after p (below e) outside
 * it. 16 bytes at a time while the line has them, then byte by byte. */
static inline int is_word_char(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }

static inline int token_char(char c) {
    return is_digit(c) || c == '-' || c == '.' || c == 'e' || c == 'E' || c == 'n' ||
           c == 'u' || c == 'l' || c == '+';
}

#ifdef HAVE_SSE2
static inline __m128i in_range(__m128i v, char lo, char hi) {
    __m128i x = _mm_sub_epi8(v, _mm_set1_epi8(lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8((char)(hi - lo))), x);
}

static inline __m128i is_eq(__m128i v, char c) { return _mm_cmpeq_epi8(v, _mm_set1_epi8(c)); }

#define SPAN(name, members, scalar)                                                        \
    static inline Py_ssize_t name(const char *b, Py_ssize_t p, Py_ssize_t e) {            \
        for (; p + 16 <= e; p += 16) {                                                     \
            __m128i v = _mm_loadu_si128((const __m128i *)(b + p));                          \
            unsigned m = ~(unsigned)_mm_movemask_epi8(members) & 0xFFFF;                    \
            if (m) return p + __builtin_ctz(m);                                            \
        }                                                                                  \
        while (p < e && scalar(b[p])) p++;                                                 \
        return p;                                                                          \
    }
#else
#define SPAN(name, members, scalar)                                                        \
    static inline Py_ssize_t name(const char *b, Py_ssize_t p, Py_ssize_t e) {            \
        while (p < e && scalar(b[p])) p++;                                                 \
        return p;                                                                          \
    }
#endif

SPAN(span_digits, in_range(v, '0', '9'), is_digit)
SPAN(span_word, _mm_or_si128(in_range(v, 'a', 'z'), is_eq(v, '_')), is_word_char)
SPAN(span_token,
     _mm_or_si128(_mm_or_si128(_mm_or_si128(in_range(v, '0', '9'), is_eq(v, '-')),
                               _mm_or_si128(is_eq(v, '.'), is_eq(v, '+'))),
                  _mm_or_si128(_mm_or_si128(is_eq(v, 'e'), is_eq(v, 'E')),
                               _mm_or_si128(_mm_or_si128(is_eq(v, 'n'), is_eq(v, 'u')),
                                            is_eq(v, 'l')))),
     token_char)

/* [1-9][0-9]*\.[0-9]+ */
static inline int ts(const char *b, Py_ssize_t *p, Py_ssize_t e) {
    Py_ssize_t q = *p;
    if (q >= e || b[q] < '1' || b[q] > '9') return 0;
    q = span_digits(b, q + 1, e);
    if (q >= e || b[q] != '.') return 0;
    Py_ssize_t f = span_digits(b, q + 1, e);
    if (f == q + 1) return 0;
    *p = f;
    return 1;
}

/* [a-z_]+ */
static inline int word(const char *b, Py_ssize_t *p, Py_ssize_t e) {
    Py_ssize_t q = span_word(b, *p, e);
    if (q == *p) return 0;
    *p = q;
    return 1;
}

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? */
static int json_number(const char *t, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (i < n && t[i] == '-') i++;
    if (i < n && t[i] == '0') i++;
    else if (i < n && t[i] >= '1' && t[i] <= '9') { while (i < n && is_digit(t[i])) i++; }
    else return 0;
    if (i < n && t[i] == '.') {
        i++;
        if (!(i < n && is_digit(t[i]))) return 0;
        while (i < n && is_digit(t[i])) i++;
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-')) i++;
        if (!(i < n && is_digit(t[i]))) return 0;
        while (i < n && is_digit(t[i])) i++;
    }
    return i == n;
}

/* -- counting: 16-byte entries in a table on huge pages, so that millions of lookups stay
 * in cache and in the TLB. A key is the ttft token itself (at most 8 bytes, zero-padded: a
 * token holds no NUL) and the mode's index in the table's mode list. The writer rounds TTFTs
 * to 0.01 ms, so its tokens are at most 8 bytes below 100 s; a longer token goes to the
 * reference. */

#define MAX_MODES 32    /* per thread; a line of a further mode goes to the reference */
#define MAX_THREADS 8
#define ALL_MODES (MAX_MODES * MAX_THREADS)
#define MAX_TOKEN 8
#define RING 8          /* keys wait here after their slot is prefetched (a power of two) */
#define HUGE_PAGE ((size_t)2 << 20)

typedef struct {
    uint64_t key;       /* the token's bytes; after fold() the value's double */
    uint32_t count;
    uint16_t mode;
    uint8_t valued;     /* set by fold(): key holds the double */
} Entry;

typedef struct {
    uint64_t key, hash;
    uint16_t mode;
} Key;

typedef struct {
    Entry *slots;
    Py_ssize_t size, used;
    int shift;          /* 64 - log2(size) */
    int overflow;       /* a count passed 2**32 - 1 */
    char *modes[ALL_MODES];     /* copies: the mapped file may go away */
    Py_ssize_t mlens[ALL_MODES];
    uint64_t mheads[ALL_MODES];  /* a mode's first 8 bytes, zero-padded */
    int nmodes, max_modes;
} Table;

/* Fibonacci hashing: a slot is the product's top bits, which every bit of the key moves. */
static inline uint64_t mix(uint64_t key, unsigned mode) {
    return (key ^ ((uint64_t)mode << 56)) * 0x9E3779B97F4A7C15ULL;
}

#define SLOT(tb, hash) ((Py_ssize_t)((hash) >> (tb)->shift))

static Entry *slots_alloc(Py_ssize_t size) {
    size_t bytes = (size_t)size * sizeof(Entry);
    if (bytes < HUGE_PAGE) return calloc(size, sizeof(Entry));
    void *mem = NULL;
    if (posix_memalign(&mem, HUGE_PAGE, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(mem, bytes, MADV_HUGEPAGE);
#endif
    memset(mem, 0, bytes);
    return mem;
}

static int grow(Table *tb) {
    Py_ssize_t size = tb->size ? tb->size * 2 : 1 << 14;
    int shift = tb->size ? tb->shift - 1 : 64 - 14;
    Entry *slots = slots_alloc(size);
    if (!slots) return -1;
    for (Py_ssize_t i = 0; i < tb->size; i++) {
        Entry *e = &tb->slots[i];
        if (!e->count) continue;
        Py_ssize_t j = (Py_ssize_t)(mix(e->key, e->mode) >> shift);
        while (slots[j].count) j = (j + 1) & (size - 1);
        slots[j] = *e;
    }
    free(tb->slots);
    tb->slots = slots;
    tb->size = size;
    tb->shift = shift;
    return 0;
}

/* The first n (<= 8) bytes at p as a zero-padded word; `room`: 8 bytes may be read at p. */
static inline uint64_t head(const char *p, Py_ssize_t n, int room) {
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (room) {
        memcpy(&w, p, 8);
        return n >= 8 ? w : w & ((1ULL << (8 * n)) - 1);
    }
#endif
    memcpy(&w, p, n < 8 ? n : 8);
    return w;
}

/* The mode's index, added when new; -1 when the list is full (or out of memory). */
static int mode_index(Table *tb, const char *m, Py_ssize_t ml, uint64_t mh) {
    for (int i = 0; i < tb->nmodes; i++)
        if (tb->mheads[i] == mh && tb->mlens[i] == ml &&
            (ml <= 8 || memcmp(tb->modes[i], m, ml) == 0))
            return i;
    if (tb->nmodes == tb->max_modes) return -1;
    char *copy = malloc(ml);
    if (!copy) return -1;
    memcpy(copy, m, ml);
    tb->modes[tb->nmodes] = copy;
    tb->mlens[tb->nmodes] = ml;
    tb->mheads[tb->nmodes] = mh;
    return tb->nmodes++;
}

/* Add n turns of a key. */
static inline void count_key(Table *tb, const Key *k, uint64_t n) {
    Py_ssize_t j = SLOT(tb, k->hash);
    for (;;) {
        Entry *e = &tb->slots[j];
        if (!e->count) {
            e->key = k->key; e->mode = k->mode;
            e->count = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
            tb->overflow |= n > UINT32_MAX;
            tb->used++;
            return;
        }
        if (e->key == k->key && e->mode == k->mode) {
            tb->overflow |= (uint64_t)e->count + n > UINT32_MAX;
            e->count += (uint32_t)n;
            return;
        }
        j = (j + 1) & (tb->size - 1);
    }
}

/* Room for one more key: 0, or -1 when out of memory. */
static inline int room(Table *tb) {
    return (tb->used + 1) * 2 > tb->size ? grow(tb) : 0;
}

/* -- one thread's part */

typedef struct {
    const char *b;
    Py_ssize_t lo, hi;
    Table tb;
    char *text;         /* the lines for the reference, copied one after the other */
    Py_ssize_t ntext, text_cap;
    Py_ssize_t *ends;   /* where each of them ends in `text` */
    Py_ssize_t nrefs, cap;
    int failed;         /* out of memory */
    int shrank;         /* the file got shorter than its mapping while being read */
} Part;

static int add_ref(Part *pt, const char *line, Py_ssize_t n) {
    if (pt->nrefs == pt->cap) {
        Py_ssize_t cap = pt->cap ? pt->cap * 2 : 256;
        Py_ssize_t *ends = realloc(pt->ends, cap * sizeof(Py_ssize_t));
        if (!ends) return -1;
        pt->ends = ends;
        pt->cap = cap;
    }
    if (pt->ntext + n > pt->text_cap) {
        Py_ssize_t cap = pt->text_cap ? pt->text_cap : 1 << 16;
        while (cap < pt->ntext + n) cap *= 2;
        char *text = realloc(pt->text, cap);
        if (!text) return -1;
        pt->text = text;
        pt->text_cap = cap;
    }
    memcpy(pt->text + pt->ntext, line, n);
    pt->ntext += n;
    pt->ends[pt->nrefs++] = pt->ntext;
    return 0;
}

/* -- a file that shrinks while mapped (truncated by another program): a read past its new
 * end raises SIGBUS in the reading thread. The part then stops, and scan() raises OSError
 * (ttft.py then reads the file instead). Other SIGBUS go to the handler that was there. */

static __thread sigjmp_buf *volatile bus_jump;

/* Reads of the file between bus_catch(&jump) and bus_catch(NULL) stay between them: the compiler may not move or drop the
 * stores of bus_jump around calls it knows, such as memchr. */
static inline void bus_catch(sigjmp_buf *jump) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    bus_jump = jump;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
static struct sigaction bus_previous;
static int bus_users;
static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    if (bus_jump) siglongjmp(*bus_jump, 1);
    if (bus_previous.sa_flags & SA_SIGINFO) {
        bus_previous.sa_sigaction(sig, info, ctx);
    } else if (bus_previous.sa_handler != SIG_DFL && bus_previous.sa_handler != SIG_IGN) {
        bus_previous.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

static void bus_guard(int on) {
    pthread_mutex_lock(&bus_lock);
    if (on && bus_users++ == 0) {
        struct sigaction act;
        memset(&act, 0, sizeof(act));
        act.sa_sigaction = on_sigbus;
        act.sa_flags = SA_SIGINFO;
        sigemptyset(&act.sa_mask);
        sigaction(SIGBUS, &act, &bus_previous);
    } else if (!on && --bus_users == 0) {
        sigaction(SIGBUS, &bus_previous, NULL);
    }
    pthread_mutex_unlock(&bus_lock);
}

static const char TURN[] = ",\"event\":\"turn\",\"mode\":\"";
static const char EVENT[] = ",\"event\":\"";
static const char PATH[] = "\",\"path\":\"";
static const char TTFT[] = "\",\"ttft_ms\":";
#define LEN(s) ((Py_ssize_t)sizeof(s) - 1)

static void scan_lines(Part *pt) {
    const char *b = pt->b;
    const Py_ssize_t end = pt->hi;
    Table *tb = &pt->tb;
    Key ring[RING];
    unsigned pushed = 0;
    Py_ssize_t ls = pt->lo;
    while (ls < end) {
        Py_ssize_t le;
        if (b[ls] != '{') {  /* not a record of the writer: empty, or for the reference */
            const char *nx = memchr(b + ls, '\n', end - ls);
            le = nx ? nx - b : end;
            goto reference;
        }
        /* one pass to the line's end, unless a '{' or NUL comes first (then the reference) */
        le = find_stop(b, ls + 1, end);
        if (le == end) goto reference;  /* no newline: a line being written */
        if (b[le] != '\n') {
            const char *nx = memchr(b + le, '\n', end - le);
            le = nx ? nx - b : end;
            goto reference;
        }
        if (b[le - 1] != '}') goto reference;
        Py_ssize_t p = ls + 1, q;
        if (!lit(b, &p, le, "\"ts\":", 5) || !ts(b, &p, le)) goto reference;
        q = p;
        /* A: a trusted turn line; its last '}' must come after the token's terminator */
        if (lit(b, &p, le, TURN, LEN(TURN))) {
            Py_ssize_t mode = p;
            if (word(b, &p, le)) {
                Py_ssize_t mode_end = p;
                if (lit(b, &p, le, PATH, LEN(PATH)) && word(b, &p, le) &&
                    lit(b, &p, le, TTFT, LEN(TTFT))) {
                    Py_ssize_t t = p;
                    p = span_token(b, p, le);
                    if (p > t && p < le && (b[p] == ',' || b[p] == '}') && le - 1 > p) {
                        Py_ssize_t ml = mode_end - mode, tl = p - t;
                        if (tl > MAX_TOKEN) goto reference;
                        /* 8 bytes can be read at the mode: PATH follows it */
                        int m = mode_index(tb, b + mode, ml, head(b + mode, ml, 1));
                        if (m < 0) goto reference;
                        Key k;
                        k.key = head(b + t, tl, end - t >= 8);
                        k.mode = (uint16_t)m;
                        k.hash = mix(k.key, m);
                        __builtin_prefetch(&tb->slots[SLOT(tb, k.hash)]);
                        Key *slot = &ring[pushed++ & (RING - 1)];
                        if (pushed > RING) {
                            if (room(tb) < 0) goto oom;
                            count_key(tb, slot, 1);
                        }
                        *slot = k;
                        ls = le + 1;
                        continue;
                    }
                }
            }
        }
        /* B: a clean line of another event is skipped */
        p = q;
        if (lit(b, &p, le, EVENT, LEN(EVENT)) &&
            !(le - p >= 5 && memcmp(b + p, "turn\"", 5) == 0) && le - 1 >= p) {
            ls = le + 1;
            continue;
        }
    reference:
        if (le > ls && add_ref(pt, b + ls, le - ls) < 0) goto oom;
        ls = le + 1;
    }
    for (unsigned i = pushed > RING ? pushed - RING : 0; i < pushed; i++) {
        if (room(tb) < 0) goto oom;
        count_key(tb, &ring[i & (RING - 1)], 1);
    }
    return;
oom:
    pt->failed = 1;
}

/* A part on its thread: every read of the mapped file happens in here. */
static void *scan_part(void *arg) {
    Part *pt = arg;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 1)) {
        bus_jump = NULL;
        pt->shrank = 1;
        return NULL;
    }
    bus_catch(&jump);
    scan_lines(pt);
    bus_catch(NULL);
    return NULL;
}

/* -- folding the table into sorted series */

typedef struct {
    double v;
    uint64_t n;
} Point;

static int by_value(const void *x, const void *y) {
    double a = ((const Point *)x)->v, b = ((const Point *)y)->v;
    return (a > b) - (a < b);
}

/* The series of n points (sorted here, equal values combined) as (values, counts) bytes. */
static PyObject *series(Point *pts, Py_ssize_t n) {
    qsort(pts, n, sizeof(Point), by_value);
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (k && pts[k - 1].v == pts[i].v) pts[k - 1].n += pts[i].n;
        else pts[k++] = pts[i];
    }
    PyObject *values = PyBytes_FromStringAndSize(NULL, k * 8);
    PyObject *counts = PyBytes_FromStringAndSize(NULL, k * 8);
    if (!values || !counts) {
        Py_XDECREF(values);
        Py_XDECREF(counts);
        return NULL;
    }
    double *vs = (double *)PyBytes_AS_STRING(values);
    int64_t *cs = (int64_t *)PyBytes_AS_STRING(counts);
    for (Py_ssize_t i = 0; i < k; i++) {
        vs[i] = pts[i].v;
        cs[i] = (int64_t)pts[i].n;
    }
    return Py_BuildValue("(NN)", values, counts);
}

static int add_count(PyObject *dict, PyObject *key, uint64_t n) {
    PyObject *old = PyDict_GetItemWithError(dict, key);
    if (!old && PyErr_Occurred()) return -1;
    PyObject *add = PyLong_FromUnsignedLongLong(n);
    PyObject *val = add && old ? PyNumber_Add(old, add) : add;
    if (old) Py_XDECREF(add);
    int rc = val ? PyDict_SetItem(dict, key, val) : -1;
    Py_XDECREF(val);
    return rc;
}

/* Fold the table as ttft._fold does: series per mode, no_ttft[mode] += n for null,
 * skipped += n for a token the reference would reject (not a finite JSON number). */
static int fold(Table *tb, PyObject *out, PyObject *no_ttft, uint64_t *skipped) {
    Point *pts = malloc((tb->used ? tb->used : 1) * sizeof(Point));
    Py_ssize_t per[ALL_MODES] = {0}, at[ALL_MODES] = {0};
    int rc = -1;
    if (!pts) {
        PyErr_NoMemory();
        return -1;
    }
    /* first the values (points grouped by mode: per[] counts them), then the points */
    for (int pass = 0; pass < 2; pass++) {
        for (Py_ssize_t i = 0; i < tb->size; i++) {
            Entry *e = &tb->slots[i];
            if (!e->count) continue;
            char tok[MAX_TOKEN + 1] = {0};
            memcpy(tok, &e->key, 8);
            Py_ssize_t tlen = (Py_ssize_t)strlen(tok);
            int is_null = tlen == 4 && memcmp(tok, "null", 4) == 0;
            if (pass == 0) {
                if (is_null || !json_number(tok, tlen)) continue;
                double v = PyOS_string_to_double(tok, NULL, NULL);
                if (v == -1.0 && PyErr_Occurred()) goto done;
                if (!isfinite(v)) continue;  /* skipped, in the second pass */
                e->valued = 1;
                memcpy(&e->key, &v, 8);
                per[e->mode]++;
                continue;
            }
            if (e->valued) {
                double v;
                memcpy(&v, &e->key, 8);
                pts[at[e->mode]++] = (Point){v, e->count};
                continue;
            }
            if (!is_null) { *skipped += e->count; continue; }
            PyObject *mode = PyUnicode_DecodeASCII(tb->modes[e->mode], tb->mlens[e->mode], NULL);
            int bad = !mode || add_count(no_ttft, mode, e->count) < 0;
            Py_XDECREF(mode);
            if (bad) goto done;
        }
        Py_ssize_t off = 0;
        for (int m = 0; pass == 0 && m < tb->nmodes; m++) {
            at[m] = off;
            off += per[m];
        }
    }
    Py_ssize_t off = 0;
    for (int m = 0; m < tb->nmodes; m++) {
        if (per[m]) {
            PyObject *mode = PyUnicode_DecodeASCII(tb->modes[m], tb->mlens[m], NULL);
            PyObject *s = mode ? series(pts + off, per[m]) : NULL;
            int bad = !s || PyDict_SetItem(out, mode, s) < 0;
            Py_XDECREF(mode);
            Py_XDECREF(s);
            if (bad) goto done;
        }
        off += per[m];
    }
    rc = 0;
done:
    free(pts);
    return rc;
}

/* Add part `from`'s entries to table `to` (mode indices mapped by name): 0, or -1. */
static int absorb(Table *to, const Table *from) {
    int map[ALL_MODES];
    for (int m = 0; m < from->nmodes; m++) {
        map[m] = mode_index(to, from->modes[m], from->mlens[m], from->mheads[m]);
        if (map[m] < 0) return -1;
    }
    for (Py_ssize_t i = 0; i < from->size; i++) {
        const Entry *e = &from->slots[i];
        if (!e->count) continue;
        Key k = {e->key, mix(e->key, map[e->mode]), (uint16_t)map[e->mode]};
        if (room(to) < 0) return -1;
        count_key(to, &k, e->count);
    }
    return 0;
}

/* Line starts cutting [start, end) into about n equal parts: cuts[0..n]. */
static void cut(const char *b, Py_ssize_t start, Py_ssize_t end, int n, Py_ssize_t *cuts) {
    cuts[0] = start;
    for (int i = 1; i < n; i++) {
        Py_ssize_t at = start + (end - start) / n * i;
        if (at < cuts[i - 1]) at = cuts[i - 1];
        const char *nx = at < end ? memchr(b + at, '\n', end - at) : NULL;
        cuts[i] = nx ? nx - b + 1 : end;
    }
    cuts[n] = end;
}

/* cut() where a shrinking file cannot kill the process: 1, or 0 when the file shrank. */
static int cut_guarded(const char *b, Py_ssize_t start, Py_ssize_t end, int n,
                       Py_ssize_t *cuts) {
    sigjmp_buf jump;
    if (sigsetjmp(jump, 1)) {
        bus_jump = NULL;
        return 0;
    }
    bus_catch(&jump);
    cut(b, start, end, n, cuts);
    bus_catch(NULL);
    return 1;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, end;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "y*nn|i", &view, &start, &end, &threads)) return NULL;
    if (end > view.len) end = view.len;
    if (start < 0) start = 0;
    if (end < start) end = start;
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    const char *b = (const char *)view.buf;
    Part parts[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    Py_ssize_t cuts[MAX_THREADS + 1];
    PyObject *out = PyDict_New(), *no_ttft = PyDict_New(), *refs = PyList_New(0);
    PyObject *result = NULL;
    uint64_t skipped = 0;
    memset(parts, 0, sizeof(parts));
    if (!out || !no_ttft || !refs) goto done;
    int shrank = 0, nomem = 0;
    bus_guard(1);
    Py_BEGIN_ALLOW_THREADS
    shrank = !cut_guarded(b, start, end, threads, cuts);
    for (int i = 0; i < threads && !shrank; i++) {
        parts[i] = (Part){.b = b, .lo = cuts[i], .hi = cuts[i + 1]};
        parts[i].tb.max_modes = MAX_MODES;
        nomem |= grow(&parts[i].tb) < 0;
    }
    if (!shrank && !nomem) {
        for (int i = 1; i < threads; i++)
            started[i] = pthread_create(&ids[i], NULL, scan_part, &parts[i]) == 0;
        scan_part(&parts[0]);
        for (int i = 1; i < threads; i++) {
            if (started[i]) pthread_join(ids[i], NULL);
            else scan_part(&parts[i]);
        }
        for (int i = 0; i < threads; i++) {
            shrank |= parts[i].shrank;
            nomem |= parts[i].failed;
        }
        parts[0].tb.max_modes = ALL_MODES;  /* part 0 takes in the others' modes */
        for (int i = 1; i < threads && !shrank && !nomem; i++)
            nomem |= absorb(&parts[0].tb, &parts[i].tb) < 0;
    }
    Py_END_ALLOW_THREADS
    bus_guard(0);
    if (shrank) {
        PyErr_SetString(PyExc_OSError, "the file got shorter while being read");
        goto done;
    }
    if (nomem) {
        PyErr_NoMemory();
        goto done;
    }
    int overflow = 0;
    for (int i = 0; i < threads; i++) overflow |= parts[i].tb.overflow;
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "more than 2**32 - 1 turns of one value");
        goto done;
    }
    for (int i = 0; i < threads; i++) {
        for (Py_ssize_t r = 0; r < parts[i].nrefs; r++) {
            Py_ssize_t s = r ? parts[i].ends[r - 1] : 0, e = parts[i].ends[r];
            PyObject *line = PyBytes_FromStringAndSize(parts[i].text + s, e - s);
            int bad = !line || PyList_Append(refs, line) < 0;
            Py_XDECREF(line);
            if (bad) goto done;
        }
    }
    if (fold(&parts[0].tb, out, no_ttft, &skipped) < 0) goto done;
    result = Py_BuildValue("(OOKO)", out, no_ttft, (unsigned long long)skipped, refs);
done:
    for (int i = 0; i < threads; i++) {
        free(parts[i].tb.slots);
        for (int m = 0; m < parts[i].tb.nmodes; m++) free(parts[i].tb.modes[m]);
        free(parts[i].text);
        free(parts[i].ends);
    }
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    Py_XDECREF(no_ttft);
    Py_XDECREF(refs);
    return result;
}

/* -- merging two sorted series */

static PyObject *merge(PyObject *self, PyObject *args) {
    Py_buffer va, ca, vb, cb;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &va, &ca, &vb, &cb)) return NULL;
    PyObject *result = NULL, *values = NULL, *counts = NULL;
    Py_ssize_t na = va.len / 8, nb = vb.len / 8;
    if (ca.len != va.len || cb.len != vb.len) {
        PyErr_SetString(PyExc_ValueError, "values and counts differ in length");
        goto done;
    }
    values = PyBytes_FromStringAndSize(NULL, (na + nb) * 8);
    counts = PyBytes_FromStringAndSize(NULL, (na + nb) * 8);
    if (!values || !counts) goto done;
    const double *a = va.buf, *bv = vb.buf;
    const int64_t *an = ca.buf, *bn = cb.buf;
    double *v = (double *)PyBytes_AS_STRING(values);
    int64_t *c = (int64_t *)PyBytes_AS_STRING(counts);
    Py_ssize_t i = 0, j = 0, k = 0;
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i] < bv[j])) { v[k] = a[i]; c[k++] = an[i++]; }
        else if (i == na || bv[j] < a[i]) { v[k] = bv[j]; c[k++] = bn[j++]; }
        else { v[k] = a[i]; c[k++] = an[i++] + bn[j++]; }
    }
    if (_PyBytes_Resize(&values, k * 8) < 0 || _PyBytes_Resize(&counts, k * 8) < 0) goto done;
    result = Py_BuildValue("(OO)", values, counts);
done:
    Py_XDECREF(values);
    Py_XDECREF(counts);
    PyBuffer_Release(&va);
    PyBuffer_Release(&ca);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&cb);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "scan(buf, start, end, threads=1) -> (series, no_ttft, "
     "skipped, refs): the turn lines' TTFTs counted, the other lines to read."},
    {"merge", merge, METH_VARARGS, "merge(values_a, counts_a, values_b, counts_b) -> "
     "(values, counts): two sorted series as one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_turnscan", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__turnscan(void) {
#ifdef HAVE_SSE2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) find_stop = stop_avx2;
#endif
    return PyModule_Create(&module);
}
