/* The fast path of voicectl/ttft.py in C: the same per-line decision as its `_FAST` regex.
 *
 * scan(buf, start, end) -> (values, no_ttft, skipped, refs)
 *   buf[start] starts a line; each line in [start, end) is either
 *   - a trusted turn line of the writer's exact shape: its mode and ttft_ms token are counted
 *     and folded as ttft._fold does (values: {mode: {ttft: n}}, no_ttft: {mode: n} for null,
 *     skipped: tokens that are not finite JSON numbers), or
 *   - a clean line of another event: skipped, or
 *   - anything else (non-empty, or holding a NUL byte): appended to `refs` for the reference
 *     reader. Counting happens in a C hash table; `counts` is touched once per distinct key.
 * ttft.py's tests compare the result with the json.loads reference on odd inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static int lit(const char *b, Py_ssize_t *p, Py_ssize_t e, const char *s, Py_ssize_t n) {
    if (e - *p < n || memcmp(b + *p, s, n) != 0) return 0;
    *p += n;
    return 1;
}

/* [1-9][0-9]*\.[0-9]+ */
static int ts(const char *b, Py_ssize_t *p, Py_ssize_t e) {
    Py_ssize_t q = *p;
    if (q >= e || b[q] < '1' || b[q] > '9') return 0;
    q++;
    while (q < e && b[q] >= '0' && b[q] <= '9') q++;
    if (q >= e || b[q] != '.') return 0;
    q++;
    if (q >= e || b[q] < '0' || b[q] > '9') return 0;
    while (q < e && b[q] >= '0' && b[q] <= '9') q++;
    *p = q;
    return 1;
}

/* [a-z_]+ */
static int word(const char *b, Py_ssize_t *p, Py_ssize_t e) {
    Py_ssize_t q = *p;
    while (q < e && ((b[q] >= 'a' && b[q] <= 'z') || b[q] == '_')) q++;
    if (q == *p) return 0;
    *p = q;
    return 1;
}

static int token_char(char c) {
    return (c >= '0' && c <= '9') || c == '-' || c == '.' || c == 'e' || c == 'E' ||
           c == 'n' || c == 'u' || c == 'l' || c == '+';
}

/* From q to the line end: no '{', the line ends in '}' at or after q, a newline follows. */
static int clean(const char *b, Py_ssize_t q, Py_ssize_t le, int has_nl) {
    if (!has_nl || le - 1 < q || b[le - 1] != '}') return 0;
    return memchr(b + q, '{', le - q) == NULL;
}

/* Counting table: compact entries (24 bytes) so that millions of lookups stay in cache. A key
 * is the mode's index in a small mode list and the ttft token (at most 16 bytes) itself. */
#define MAX_MODES 64
#define MAX_TOKEN 16

typedef struct {
    uint64_t a, b;      /* the token's bytes, zero-padded */
    uint32_t count;
    uint8_t mode, tlen;
} Entry;

typedef struct {
    Entry *slots;
    Py_ssize_t size, used;
    const char *modes[MAX_MODES];
    Py_ssize_t mlens[MAX_MODES];
    int nmodes;
} Table;

static uint64_t mix(uint64_t a, uint64_t b, unsigned mode, unsigned tlen) {
    uint64_t h = (a * 0x9E3779B97F4A7C15ULL) ^ (b + 0x632BE59BD9B4E019ULL);
    h ^= ((uint64_t)mode << 56) ^ ((uint64_t)tlen << 48);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
    return h;
}

static int grow(Table *tb) {
    Py_ssize_t size = tb->size ? tb->size * 2 : 1 << 14;
    Entry *slots = PyMem_Calloc(size, sizeof(Entry));
    if (!slots) return -1;
    for (Py_ssize_t i = 0; i < tb->size; i++) {
        Entry *e = &tb->slots[i];
        if (!e->count) continue;
        Py_ssize_t j = mix(e->a, e->b, e->mode, e->tlen) & (size - 1);
        while (slots[j].count) j = (j + 1) & (size - 1);
        slots[j] = *e;
    }
    PyMem_Free(tb->slots);
    tb->slots = slots;
    tb->size = size;
    return 0;
}

typedef struct {
    uint64_t a, b, hash;
    uint8_t mode, tlen;
} Key;

/* The key of a trusted line: 1, or 0 when it cannot be counted here (a token over 16 bytes,
 * too many modes): the reference reads that line. */
static int make_key(Table *tb, const char *m, Py_ssize_t ml, const char *t, Py_ssize_t tl,
                    Key *k) {
    if (tl > MAX_TOKEN) return 0;
    int mode = 0;
    while (mode < tb->nmodes && !(tb->mlens[mode] == ml && memcmp(tb->modes[mode], m, ml) == 0))
        mode++;
    if (mode == tb->nmodes) {
        if (mode == MAX_MODES) return 0;
        tb->modes[mode] = m;
        tb->mlens[mode] = ml;
        tb->nmodes++;
    }
    char key[MAX_TOKEN] = {0};
    memcpy(key, t, tl);
    memcpy(&k->a, key, 8);
    memcpy(&k->b, key + 8, 8);
    k->mode = (uint8_t)mode;
    k->tlen = (uint8_t)tl;
    k->hash = mix(k->a, k->b, mode, tl);
    return 1;
}

/* Count a key: 0, or -1 with an exception set. */
static int count_key(Table *tb, const Key *k) {
    if ((tb->used + 1) * 2 > tb->size && grow(tb) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t j = k->hash & (tb->size - 1);
    for (;;) {
        Entry *e = &tb->slots[j];
        if (!e->count) {
            e->a = k->a; e->b = k->b; e->mode = k->mode; e->tlen = k->tlen; e->count = 1;
            tb->used++;
            return 0;
        }
        if (e->a == k->a && e->b == k->b && e->mode == k->mode && e->tlen == k->tlen) {
            if (e->count == UINT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "more than 2**32 turns of one value");
                return -1;
            }
            e->count++;
            return 0;
        }
        j = (j + 1) & (tb->size - 1);
    }
}

/* Keys wait in a small ring after their slot is prefetched, so that the table's cache misses
 * overlap with parsing the next lines. */
#define RING 8

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? */
static int json_number(const char *t, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (i < n && t[i] == '-') i++;
    if (i < n && t[i] == '0') i++;
    else if (i < n && t[i] >= '1' && t[i] <= '9') { while (i < n && t[i] >= '0' && t[i] <= '9') i++; }
    else return 0;
    if (i < n && t[i] == '.') {
        i++;
        if (!(i < n && t[i] >= '0' && t[i] <= '9')) return 0;
        while (i < n && t[i] >= '0' && t[i] <= '9') i++;
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-')) i++;
        if (!(i < n && t[i] >= '0' && t[i] <= '9')) return 0;
        while (i < n && t[i] >= '0' && t[i] <= '9') i++;
    }
    return i == n;
}

static int add_count(PyObject *dict, PyObject *key, long n) {
    PyObject *old = PyDict_GetItemWithError(dict, key);
    if (!old && PyErr_Occurred()) return -1;
    PyObject *val = PyLong_FromLong((old ? PyLong_AsLong(old) : 0) + n);
    int rc = val ? PyDict_SetItem(dict, key, val) : -1;
    Py_XDECREF(val);
    return rc;
}

/* Fold the table as ttft._fold does: values[mode][float] += n, no_ttft[mode] += n for null,
 * skipped += n for a token the reference would reject (not a finite JSON number). */
static int flush(Table *tb, PyObject *values, PyObject *no_ttft, long *skipped) {
    char tmp[64];
    char tok[MAX_TOKEN + 1];
    for (Py_ssize_t i = 0; i < tb->size; i++) {
        Entry *e = &tb->slots[i];
        if (!e->count) continue;
        memcpy(tok, &e->a, 8);
        memcpy(tok + 8, &e->b, 8);
        const char *etok = tok;
        const char *emode = tb->modes[e->mode];
        Py_ssize_t emlen = tb->mlens[e->mode];
        int is_null = e->tlen == 4 && memcmp(etok, "null", 4) == 0;
        double v = 0;
        if (!is_null) {
            if (!json_number(etok, e->tlen) || e->tlen >= (Py_ssize_t)sizeof(tmp)) {
                if (!json_number(etok, e->tlen)) { *skipped += e->count; continue; }
                PyObject *s = PyUnicode_DecodeASCII(etok, e->tlen, NULL);
                v = s ? PyFloat_AsDouble(PyFloat_FromString(s)) : -1;
                Py_XDECREF(s);
                if (PyErr_Occurred()) return -1;
            } else {
                memcpy(tmp, etok, e->tlen);
                tmp[e->tlen] = 0;
                v = PyOS_string_to_double(tmp, NULL, NULL);
                if (v == -1.0 && PyErr_Occurred()) return -1;
            }
            if (!isfinite(v)) { *skipped += e->count; continue; }
        }
        PyObject *mode = PyUnicode_DecodeASCII(emode, emlen, NULL);
        if (!mode) return -1;
        int rc;
        if (is_null) {
            rc = add_count(no_ttft, mode, e->count);
        } else {
            PyObject *per = PyDict_GetItemWithError(values, mode);
            if (!per && !PyErr_Occurred()) {
                per = PyDict_New();
                if (per && PyDict_SetItem(values, mode, per) < 0) { Py_DECREF(per); per = NULL; }
                else Py_XDECREF(per);  /* values holds it */
            }
            PyObject *key = per ? PyFloat_FromDouble(v) : NULL;
            rc = key ? add_count(per, key, e->count) : -1;
            Py_XDECREF(key);
        }
        Py_DECREF(mode);
        if (rc < 0) return -1;
    }
    return 0;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &end)) return NULL;
    PyObject *values = NULL, *no_ttft = NULL;
    long skipped = 0;
    const char *b = (const char *)view.buf;
    if (end > view.len) end = view.len;
    if (start < 0) start = 0;
    Table tb;
    memset(&tb, 0, sizeof(tb));
    Key ring[RING];
    int ring_head = 0, ring_n = 0;
    PyObject *refs = PyList_New(0);
    values = PyDict_New();
    no_ttft = PyDict_New();
    if (!refs || !values || !no_ttft) goto fail;
    if (grow(&tb) < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    static const char HEAD[] = "{\"ts\":";
    static const char TURN[] = ",\"event\":\"turn\",\"mode\":\"";
    static const char EVENT[] = ",\"event\":\"";
    static const char PATH[] = "\",\"path\":\"";
    static const char TTFT[] = "\",\"ttft_ms\":";
    Py_ssize_t ls = start;
    while (ls < end) {
        const char *nx = memchr(b + ls, '\n', end - ls);
        int has_nl = nx != NULL;
        Py_ssize_t le = has_nl ? nx - b : end;
        Py_ssize_t p = ls, q;
        int nul = memchr(b + ls, '\0', le - ls) != NULL;  /* the reference reads those */
        if (!nul && lit(b, &p, le, HEAD, 6) && ts(b, &p, le)) {
            q = p;
            /* A: a trusted turn line */
            if (lit(b, &p, le, TURN, sizeof(TURN) - 1)) {
                Py_ssize_t mode = p, mode_end;
                if (word(b, &p, le)) {
                    mode_end = p;
                    if (lit(b, &p, le, PATH, sizeof(PATH) - 1) && word(b, &p, le) &&
                        lit(b, &p, le, TTFT, sizeof(TTFT) - 1)) {
                        Py_ssize_t t = p;
                        while (p < le && token_char(b[p])) p++;
                        if (p > t && p < le && (b[p] == ',' || b[p] == '}') &&
                            clean(b, p + 1, le, has_nl)) {
                            Key k;
                            if (!make_key(&tb, b + mode, mode_end - mode, b + t, p - t, &k))
                                goto reference;
                            if (ring_n == RING) {
                                if (count_key(&tb, &ring[ring_head]) < 0) goto fail;
                                ring[ring_head] = k;
                                ring_head = (ring_head + 1) % RING;
                            } else {
                                ring[(ring_head + ring_n++) % RING] = k;
                            }
                            __builtin_prefetch(&tb.slots[k.hash & (tb.size - 1)]);
                            ls = le + 1;
                            continue;
                        }
                    }
                }
            }
            /* B: a clean line of another event is skipped */
            p = q;
            if (lit(b, &p, le, EVENT, sizeof(EVENT) - 1) &&
                !(le - p >= 5 && memcmp(b + p, "turn\"", 5) == 0) && clean(b, p, le, has_nl)) {
                ls = le + 1;
                continue;
            }
        }
    reference:
        if (le > ls) {
            PyObject *line = PyBytes_FromStringAndSize(b + ls, le - ls);
            if (!line || PyList_Append(refs, line) < 0) {
                Py_XDECREF(line);
                goto fail;
            }
            Py_DECREF(line);
        }
        ls = le + 1;
    }
    for (; ring_n > 0; ring_n--, ring_head = (ring_head + 1) % RING)
        if (count_key(&tb, &ring[ring_head]) < 0) goto fail;
    if (flush(&tb, values, no_ttft, &skipped) < 0) goto fail;
    PyMem_Free(tb.slots);
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNlN)", values, no_ttft, skipped, refs);
fail:
    PyMem_Free(tb.slots);
    PyBuffer_Release(&view);
    Py_XDECREF(refs);
    Py_XDECREF(values);
    Py_XDECREF(no_ttft);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Trusted turn spans (counted) and lines for the reference."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_turnscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__turnscan(void) { return PyModule_Create(&module); }
