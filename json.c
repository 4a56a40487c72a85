/* json.c — a small, strict JSON reader (RFC 8259). See json.h.
 *
 * A recursive-descent parser over a byte range. Recursion happens only for nested arrays and objects
 * and stops at JSON_MAX_DEPTH, so the stack use is bounded whatever the input. Every value is built
 * so that it can be freed at any point of its construction: a failure anywhere leaves a tree that
 * json_free releases completely. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    const uint8_t *p, *end;
    int line;                   /* 1-based line of p */
    const uint8_t *line_start;  /* first byte of that line */
    BlvError *err;
} Parser;

/* ---- messages ------------------------------------------------------------------------------- */

static int vfail_lc(const Parser *ps, int line, int col, const char *fmt, va_list ap) {
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return blv_fail(ps->err, "%s:%d:%d: %s", ps->name, line, col, msg);
}

static int fail_lc(const Parser *ps, int line, int col, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int fail_lc(const Parser *ps, int line, int col, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_lc(ps, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

/* Reports a problem at byte `at`, which is always on the current line: strings cannot hold raw
 * newlines, and whitespace (the only place newlines are) is consumed before anything is reported. */
static int fail_at(const Parser *ps, const uint8_t *at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail_at(const Parser *ps, const uint8_t *at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_lc(ps, ps->line, (int)(at - ps->line_start) + 1, fmt, ap);
    va_end(ap);
    return rc;
}

/* What is at p, for "found ..." in messages. */
static const char *describe(const Parser *ps, const uint8_t *p, char *buf, size_t n) {
    if (p >= ps->end) return "end of input";
    if (*p >= 0x20 && *p < 0x7f) snprintf(buf, n, "'%c'", *p);
    else snprintf(buf, n, "byte 0x%02X", *p);
    return buf;
}

static void skip_ws(Parser *ps) {
    while (ps->p < ps->end) {
        uint8_t c = *ps->p;
        if (c == '\n') {
            ps->p++;
            ps->line++;
            ps->line_start = ps->p;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            ps->p++;
        } else {
            break;
        }
    }
}

/* ---- freeing --------------------------------------------------------------------------------- */

static void free_value(JsonValue *v) {
    if (v->type == JSON_STRING) free(v->str);
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->count; i++) free_value(&v->items[i]);
        free(v->items);
    }
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) {
            free(v->members[i].key);
            free_value(&v->members[i].value);
        }
        free(v->members);
    }
    memset(v, 0, sizeof *v);
}

void json_free(JsonDoc *doc) {
    if (!doc) return;
    free_value(&doc->root);
    free(doc->name);
    doc->name = NULL;
}

/* ---- strings ---------------------------------------------------------------------------------- */

static int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits after "\u" at p (p points at the backslash). */
static int read_u_escape(Parser *ps, const uint8_t *p, const uint8_t *stop, uint32_t *cp) {
    if (stop - p < 6) return fail_at(ps, p, "invalid \\u escape: expected 4 hex digits");
    uint32_t v = 0;
    for (int i = 2; i < 6; i++) {
        int h = hex_value(p[i]);
        if (h < 0) return fail_at(ps, p, "invalid \\u escape: expected 4 hex digits");
        v = v * 16 + (uint32_t)h;
    }
    *cp = v;
    return 0;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not valid UTF-8 (overlong forms,
 * surrogates and code points above U+10FFFF are invalid, per RFC 3629). */
static int utf8_sequence(const uint8_t *p, const uint8_t *stop) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    int n;
    uint8_t lo = 0x80, hi = 0xBF;  /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;  /* overlong */
        if (c == 0xED) hi = 0x9F;  /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;  /* overlong */
        if (c == 0xF4) hi = 0x8F;  /* above U+10FFFF */
    } else {
        return 0;
    }
    if (stop - p < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

/* Decodes the escape at p (a backslash) into out; returns the input bytes consumed, or -1. */
static int decode_escape(Parser *ps, const uint8_t *p, const uint8_t *stop, char *out, size_t *n_out) {
    char simple = 0;
    switch (p[1]) {
    case '"': simple = '"'; break;
    case '\\': simple = '\\'; break;
    case '/': simple = '/'; break;
    case 'b': simple = '\b'; break;
    case 'f': simple = '\f'; break;
    case 'n': simple = '\n'; break;
    case 'r': simple = '\r'; break;
    case 't': simple = '\t'; break;
    case 'u': break;
    default:
        if (p[1] >= 0x20 && p[1] < 0x7f) return fail_at(ps, p, "invalid escape '\\%c' in string", p[1]);
        return fail_at(ps, p, "invalid escape: backslash followed by byte 0x%02X in string", p[1]);
    }
    if (simple) {
        out[0] = simple;
        *n_out = 1;
        return 2;
    }
    uint32_t cp = 0;
    if (read_u_escape(ps, p, stop, &cp) != 0) return -1;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail_at(ps, p, "lone low surrogate \\u%04X in string (it must follow a high surrogate)", cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        uint32_t low = 0;
        if (stop - p < 12 || p[6] != '\\' || p[7] != 'u' || read_u_escape(ps, p + 6, stop, &low) != 0 ||
            low < 0xDC00 || low > 0xDFFF)
            return fail_at(ps, p, "lone high surrogate \\u%04X in string (a low surrogate \\uDC00-\\uDFFF must follow)",
                           cp);
        *n_out = put_utf8(out, 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00));
        return 12;
    }
    *n_out = put_utf8(out, cp);
    return 6;
}

/* Parses the string starting at ps->p (a '"') into a malloc'd NUL-terminated buffer. */
static int parse_string(Parser *ps, char **out, size_t *out_len) {
    const uint8_t *open = ps->p, *q = ps->p + 1;
    /* First find the closing quote, so the output can be allocated once: escapes never expand
     * (2 bytes -> 1, 6 -> at most 3, 12 -> 4), so the raw length bounds the decoded one. */
    while (q < ps->end && *q != '"') q += (*q == '\\' && ps->end - q > 1) ? 2 : 1;
    if (q >= ps->end) return fail_at(ps, open, "unterminated string");
    const uint8_t *stop = q;
    char *buf = malloc((size_t)(stop - open));
    if (!buf) return fail_at(ps, open, "out of memory for a string of %zu bytes", (size_t)(stop - open));
    size_t n = 0;
    const uint8_t *p = open + 1;
    while (p < stop) {
        int used;
        if (*p == '\\') {
            size_t wrote = 0;
            used = decode_escape(ps, p, stop, buf + n, &wrote);
            if (used < 0) break;
            n += wrote;
        } else if (*p < 0x20) {
            fail_at(ps, p, "control character U+%04X in string (it must be escaped)", *p);
            used = -1;
            break;
        } else {
            used = utf8_sequence(p, stop);
            if (used == 0) {
                fail_at(ps, p, "invalid UTF-8 byte 0x%02X in string", *p);
                used = -1;
                break;
            }
            memcpy(buf + n, p, (size_t)used);
            n += (size_t)used;
        }
        p += used;
    }
    if (p < stop) {
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    ps->p = stop + 1;
    return 0;
}

/* ---- numbers ---------------------------------------------------------------------------------- */

static int is_digit(const Parser *ps, const uint8_t *p) { return p < ps->end && *p >= '0' && *p <= '9'; }

/* number = [ "-" ] int [ frac ] [ exp ]  (RFC 8259 §6) */
static int parse_number(Parser *ps, JsonValue *v) {
    const uint8_t *start = ps->p, *p = ps->p;
    int integral = 1;
    if (*p == '-') p++;
    if (!is_digit(ps, p)) return fail_at(ps, p, "expected a digit after '-'");
    if (*p == '0') {
        p++;
        if (is_digit(ps, p)) return fail_at(ps, p - 1, "leading zeros are not allowed in numbers");
    } else {
        while (is_digit(ps, p)) p++;
    }
    if (p < ps->end && *p == '.') {
        integral = 0;
        p++;
        if (!is_digit(ps, p)) return fail_at(ps, p, "expected a digit after '.' in a number");
        while (is_digit(ps, p)) p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        integral = 0;
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (!is_digit(ps, p)) return fail_at(ps, p, "expected a digit in the exponent of a number");
        while (is_digit(ps, p)) p++;
    }
    size_t n = (size_t)(p - start);
    char small[64], *text = n < sizeof small ? small : malloc(n + 1);
    if (!text) return fail_at(ps, start, "out of memory for a number of %zu characters", n);
    memcpy(text, start, n);
    text[n] = 0;
    double d = strtod(text, NULL);
    if (text != small) free(text);
    if (isinf(d)) return fail_at(ps, start, "number is out of range for a double");
    v->type = JSON_NUMBER;
    v->number = d;
    if (integral) {
        /* exact int64, when it fits */
        const uint8_t *q = start;
        int neg = *q == '-';
        if (neg) q++;
        uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, acc = 0;
        int fits = 1;
        for (; q < p; q++) {
            uint64_t digit = (uint64_t)(*q - '0');
            if (acc > (limit - digit) / 10) {
                fits = 0;
                break;
            }
            acc = acc * 10 + digit;
        }
        if (fits) {
            v->is_int = 1;
            v->integer = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        }
    }
    ps->p = p;
    return 0;
}

/* ---- values ----------------------------------------------------------------------------------- */

static int parse_value(Parser *ps, JsonValue *v, int depth);

static int literal(Parser *ps, JsonValue *v) {
    static const struct { const char *word; JsonType type; int boolean; } words[] = {
        {"true", JSON_BOOL, 1}, {"false", JSON_BOOL, 0}, {"null", JSON_NULL, 0}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i].word, n) == 0) {
            v->type = words[i].type;
            v->boolean = words[i].boolean;
            ps->p += n;
            return 0;
        }
    }
    return fail_at(ps, ps->p, "invalid literal (expected true, false or null)");
}

static uint64_t hash_key(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;  /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Duplicate keys are refused; an open-addressing table keeps this linear for large objects such as
 * a safetensors header with thousands of tensors. */
static int check_duplicates(Parser *ps, const JsonValue *obj) {
    if (obj->count < 2) return 0;
    size_t cap = 4;
    while (cap < obj->count * 2) cap *= 2;
    size_t *slots = malloc(cap * sizeof *slots);
    if (!slots) return fail_at(ps, ps->p, "out of memory checking an object of %zu members", obj->count);
    for (size_t i = 0; i < cap; i++) slots[i] = SIZE_MAX;
    int rc = 0;
    for (size_t i = 0; i < obj->count && rc == 0; i++) {
        const JsonMember *m = &obj->members[i];
        size_t s = (size_t)hash_key(m->key, m->key_len) & (cap - 1);
        while (slots[s] != SIZE_MAX) {
            const JsonMember *o = &obj->members[slots[s]];
            if (o->key_len == m->key_len && memcmp(o->key, m->key, m->key_len) == 0) {
                rc = fail_lc(ps, m->line, m->col, "duplicate key \"%.200s\" (first at %d:%d)", m->key, o->line, o->col);
                break;
            }
            s = (s + 1) & (cap - 1);
        }
        slots[s] = i;
    }
    free(slots);
    return rc;
}

/* Makes room for one more element in a growable array of `size`-byte items. */
static int grow(Parser *ps, void **items, size_t count, size_t *cap, size_t size) {
    if (count < *cap) return 0;
    size_t new_cap = *cap ? *cap * 2 : 4;
    void *bigger = realloc(*items, new_cap * size);
    if (!bigger) return fail_at(ps, ps->p, "out of memory for %zu elements", new_cap);
    *items = bigger;
    *cap = new_cap;
    return 0;
}

static int parse_array(Parser *ps, JsonValue *v, int depth) {
    v->type = JSON_ARRAY;
    size_t cap = 0;
    ps->p++;  /* '[' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return 0;
    }
    for (;;) {
        skip_ws(ps);
        if (v->count > 0 && ps->p < ps->end && *ps->p == ']')
            return fail_at(ps, ps->p, "expected a value after ',', found ']' (trailing commas are not allowed)");
        if (grow(ps, (void **)&v->items, v->count, &cap, sizeof *v->items) != 0) return -1;
        JsonValue *item = &v->items[v->count++];
        memset(item, 0, sizeof *item);
        if (parse_value(ps, item, depth) != 0) return -1;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return 0;
        }
        char buf[16];
        return fail_at(ps, ps->p, "expected ',' or ']' after array element, found %s",
                       describe(ps, ps->p, buf, sizeof buf));
    }
}

static int parse_object(Parser *ps, JsonValue *v, int depth) {
    v->type = JSON_OBJECT;
    size_t cap = 0;
    char buf[16];
    ps->p++;  /* '{' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') {
            if (v->count == 0)
                return fail_at(ps, ps->p, "expected a string key or '}', found %s",
                               describe(ps, ps->p, buf, sizeof buf));
            if (ps->p < ps->end && *ps->p == '}')
                return fail_at(ps, ps->p,
                               "expected a string key after ',', found '}' (trailing commas are not allowed)");
            return fail_at(ps, ps->p, "expected a string key after ',', found %s",
                           describe(ps, ps->p, buf, sizeof buf));
        }
        if (grow(ps, (void **)&v->members, v->count, &cap, sizeof *v->members) != 0) return -1;
        JsonMember *m = &v->members[v->count];
        memset(m, 0, sizeof *m);
        m->line = ps->line;
        m->col = (int)(ps->p - ps->line_start) + 1;
        if (parse_string(ps, &m->key, &m->key_len) != 0) return -1;
        v->count++;  /* from here on the member is freed with the object */
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return fail_at(ps, ps->p, "expected ':' after object key, found %s", describe(ps, ps->p, buf, sizeof buf));
        ps->p++;
        if (parse_value(ps, &m->value, depth) != 0) return -1;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return check_duplicates(ps, v);
        }
        return fail_at(ps, ps->p, "expected ',' or '}' after object member, found %s",
                       describe(ps, ps->p, buf, sizeof buf));
    }
}

/* depth: how many arrays/objects enclose this value. */
static int parse_value(Parser *ps, JsonValue *v, int depth) {
    skip_ws(ps);
    v->line = ps->line;
    v->col = (int)(ps->p - ps->line_start) + 1;
    char buf[16];
    if (ps->p >= ps->end) return fail_at(ps, ps->p, "expected a value, found end of input");
    uint8_t c = *ps->p;
    if (c == '{' || c == '[') {
        if (depth >= JSON_MAX_DEPTH) return fail_at(ps, ps->p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
        return c == '{' ? parse_object(ps, v, depth + 1) : parse_array(ps, v, depth + 1);
    }
    if (c == '"') {
        if (parse_string(ps, &v->str, &v->len) != 0) return -1;
        v->type = JSON_STRING;
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps, v);
    if (c == 't' || c == 'f' || c == 'n') return literal(ps, v);
    return fail_at(ps, ps->p, "expected a value, found %s", describe(ps, ps->p, buf, sizeof buf));
}

int json_parse(JsonDoc *doc, const char *name, const char *text, size_t len, BlvError *err) {
    memset(doc, 0, sizeof *doc);
    Parser ps = {name ? name : "(json)", (const uint8_t *)text, (const uint8_t *)text + len, 1,
                 (const uint8_t *)text, err};
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) ps.p += 3;  /* byte order mark (RFC 8259 §8.1) */
    if (parse_value(&ps, &doc->root, 0) != 0) {
        free_value(&doc->root);
        return -1;
    }
    skip_ws(&ps);
    if (ps.p < ps.end) {
        char buf[16];
        fail_at(&ps, ps.p, "unexpected %s after the top-level value", describe(&ps, ps.p, buf, sizeof buf));
        free_value(&doc->root);
        return -1;
    }
    doc->name = strdup(ps.name);
    if (!doc->name) {
        free_value(&doc->root);
        return blv_fail(err, "%s: out of memory", ps.name);
    }
    return 0;
}

int json_parse_file(JsonDoc *doc, const char *path, BlvError *err) {
    memset(doc, 0, sizeof *doc);
    char *text;
    size_t len;
    if (blv_read_file(path, &text, &len, err) != 0) return -1;
    int rc = json_parse(doc, path, text, len, err);
    free(text);
    return rc;
}

/* ---- lookup and typed access ------------------------------------------------------------------ */

const char *json_type_name(JsonType type) {
    switch (type) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "boolean";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

const JsonValue *json_get(const JsonValue *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->count; i++)
        if (obj->members[i].key_len == n && memcmp(obj->members[i].key, key, n) == 0) return &obj->members[i].value;
    return NULL;
}

const JsonValue *json_at(const JsonValue *arr, size_t i) {
    if (!arr || arr->type != JSON_ARRAY || i >= arr->count) return NULL;
    return &arr->items[i];
}

static const char *doc_name(const JsonDoc *doc) { return doc && doc->name ? doc->name : "(json)"; }

static int wrong_type(const JsonDoc *doc, const JsonValue *v, const char *what, const char *want, BlvError *err) {
    return blv_fail(err, "%s:%d:%d: %s must be %s, got %s", doc_name(doc), v->line, v->col, what, want,
                    json_type_name(v->type));
}

int json_as_int(const JsonDoc *doc, const JsonValue *v, const char *what, int64_t *out, BlvError *err) {
    if (v->type != JSON_NUMBER) return wrong_type(doc, v, what, "an integer", err);
    if (v->is_int) {
        *out = v->integer;
        return 0;
    }
    /* 64.0 or 6.4e1: integral and exactly representable */
    if (v->number == floor(v->number) && fabs(v->number) <= 9007199254740992.0) {
        *out = (int64_t)v->number;
        return 0;
    }
    return blv_fail(err, "%s:%d:%d: %s must be an integer, got %.17g", doc_name(doc), v->line, v->col, what, v->number);
}

int json_as_number(const JsonDoc *doc, const JsonValue *v, const char *what, double *out, BlvError *err) {
    if (v->type != JSON_NUMBER) return wrong_type(doc, v, what, "a number", err);
    *out = v->number;
    return 0;
}

int json_as_bool(const JsonDoc *doc, const JsonValue *v, const char *what, int *out, BlvError *err) {
    if (v->type != JSON_BOOL) return wrong_type(doc, v, what, "true or false", err);
    *out = v->boolean;
    return 0;
}

int json_as_string(const JsonDoc *doc, const JsonValue *v, const char *what, const char **out, BlvError *err) {
    if (v->type != JSON_STRING) return wrong_type(doc, v, what, "a string", err);
    *out = v->str;
    return 0;
}

/* Looks up a member for the typed getters: 1 found, 0 absent (or an object expected), -1 error. */
static int member(const JsonDoc *doc, const JsonValue *obj, const char *key, int required, const JsonValue **v,
                  char *what, size_t what_size, BlvError *err) {
    snprintf(what, what_size, "\"%s\"", key);
    if (!obj || obj->type != JSON_OBJECT)
        return blv_fail(err, "%s: looking up %s in a %s, not an object", doc_name(doc), what,
                        obj ? json_type_name(obj->type) : "missing value");
    *v = json_get(obj, key);
    if (*v) return 1;
    if (required)
        return blv_fail(err, "%s:%d:%d: %s is missing from this object", doc_name(doc), obj->line, obj->col, what);
    return 0;
}

int json_get_int(const JsonDoc *doc, const JsonValue *obj, const char *key, int64_t *out, BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 1, &v, what, sizeof what, err);
    return found < 0 ? -1 : json_as_int(doc, v, what, out, err);
}

int json_get_int_or(const JsonDoc *doc, const JsonValue *obj, const char *key, int64_t def, int64_t *out,
                    BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 0, &v, what, sizeof what, err);
    if (found < 0) return -1;
    if (!found) {
        *out = def;
        return 0;
    }
    return json_as_int(doc, v, what, out, err);
}

int json_get_number(const JsonDoc *doc, const JsonValue *obj, const char *key, double *out, BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 1, &v, what, sizeof what, err);
    return found < 0 ? -1 : json_as_number(doc, v, what, out, err);
}

int json_get_number_or(const JsonDoc *doc, const JsonValue *obj, const char *key, double def, double *out,
                       BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 0, &v, what, sizeof what, err);
    if (found < 0) return -1;
    if (!found) {
        *out = def;
        return 0;
    }
    return json_as_number(doc, v, what, out, err);
}

int json_get_bool_or(const JsonDoc *doc, const JsonValue *obj, const char *key, int def, int *out, BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 0, &v, what, sizeof what, err);
    if (found < 0) return -1;
    if (!found) {
        *out = def;
        return 0;
    }
    return json_as_bool(doc, v, what, out, err);
}

int json_get_string(const JsonDoc *doc, const JsonValue *obj, const char *key, const char **out, BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 1, &v, what, sizeof what, err);
    return found < 0 ? -1 : json_as_string(doc, v, what, out, err);
}

int json_get_string_or(const JsonDoc *doc, const JsonValue *obj, const char *key, const char *def,
                       const char **out, BlvError *err) {
    const JsonValue *v = NULL;
    char what[160];
    int found = member(doc, obj, key, 0, &v, what, sizeof what, err);
    if (found < 0) return -1;
    if (!found) {
        *out = def;
        return 0;
    }
    return json_as_string(doc, v, what, out, err);
}
