/* tests/test_hfio.c — the Hugging Face reading layer: json.c, safetensors.c, convert_hf.c.
 *
 * Expected values come from independent code: tools/gen_hf_vision_fixture.py writes the fixtures
 * in tests/data/hfio/ with PyPI safetensors and transformers' save_pretrained, the float32 values
 * of F16/BF16 tensors as numpy/torch compute them, and transformers' SiglipVisionModel outputs (plus
 * VILA's projector run in torch) for one input. Malformed inputs are built here by hand. */
#include "test.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert_hf.h"
#include "gguf.h"
#include "json.h"
#include "quant.h"
#include "safetensors.h"
#include "util.h"
#include "vit.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

static int write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t put = fwrite(data, 1, n, fp);
    return fclose(fp) == 0 && put == n ? 0 : -1;
}

static int copy_file(const char *src, const char *dst) {
    char *data;
    size_t n;
    BlvError err;
    if (blv_read_file(src, &data, &n, &err) != 0) return -1;
    int rc = write_file(dst, data, n);
    free(data);
    return rc;
}

/* A fresh directory under the run's temporary directory; returns a static path. */
static const char *tmp_dir(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", test_tmp(name));
    mkdir(buf, 0755);
    return buf;
}

/* Copies fixture files (relative to tests/data/hfio/SRC) into DIR. */
static void copy_fixture(const char *src_dir, const char *dst_dir, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        char src[4096], dst[4400], rel[512];
        snprintf(rel, sizeof rel, "hfio/%s/%s", src_dir, names[i]);
        snprintf(src, sizeof src, "%s", test_data(rel));
        snprintf(dst, sizeof dst, "%s/%s", dst_dir, names[i]);
        CHECK(copy_file(src, dst) == 0, "cannot copy %s to %s", src, dst);
    }
}

/* A safetensors file from a header string and `data_len` bytes of data (value i is byte i). */
static int write_st(const char *path, const char *header, size_t data_len) {
    size_t n = strlen(header);
    uint8_t *buf = malloc(8 + n + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++) buf[8 + n + i] = (uint8_t)i;
    int rc = write_file(path, buf, 8 + n + data_len);
    free(buf);
    return rc;
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- JSON: valid documents -------------------------------------------------------------------- */

static int parse_str(JsonDoc *doc, const char *text, BlvError *err) {
    return json_parse(doc, "t.json", text, strlen(text), err);
}

static void test_json_valid(void) {
    const char *text =
        "\xEF\xBB\xBF{\n"
        "  \"int\": 12, \"neg\": -12, \"zero\": 0, \"negzero\": -0, \"frac\": 1.5, \"exp\": 1e3, \"Exp\": -1.25E+2,\n"
        "  \"tiny\": 1E-3, \"max\": 9223372036854775807, \"min\": -9223372036854775808, \"big\": 9223372036854775808,\n"
        "  \"t\": true, \"f\": false, \"n\": null, \"e_obj\": {}, \"e_arr\": [ ],\n"
        "  \"s\": \"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 \\u20AC \\ud83d\\ude00 \\u0000 end\",\n"
        "  \"utf8\": \"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\",\n"
        "\t\"nested\": {\"a\": [1, [2, [3, {\"b\": \"c\"}]]], \"z\": 1, \"y\": 2},\r\n"
        "  \"float_int\": 64.0, \"exp_int\": 6.4e1\n"
        "}\n";
    JsonDoc doc;
    BlvError err = {{0}};
    if (parse_str(&doc, text, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    const JsonValue *r = &doc.root;
    CHECK(r->type == JSON_OBJECT && r->count == 21, "root: type %d count %zu", r->type, r->count);
    CHECK(strcmp(r->members[0].key, "int") == 0 && strcmp(r->members[20].key, "exp_int") == 0, "member order");
    const JsonValue *v = json_get(r, "int");
    CHECK(v && v->is_int && v->integer == 12 && v->number == 12.0, "int");
    v = json_get(r, "neg");
    CHECK(v && v->is_int && v->integer == -12, "neg");
    v = json_get(r, "negzero");
    CHECK(v && v->is_int && v->integer == 0 && signbit(v->number), "-0 keeps its sign as a double");
    v = json_get(r, "frac");
    CHECK(v && !v->is_int && v->number == 1.5, "frac");
    v = json_get(r, "exp");
    CHECK(v && !v->is_int && v->number == 1000.0, "exp");
    v = json_get(r, "Exp");
    CHECK(v && v->number == -125.0, "Exp");
    v = json_get(r, "tiny");
    CHECK(v && v->number == 1e-3, "tiny");
    v = json_get(r, "max");
    CHECK(v && v->is_int && v->integer == INT64_MAX, "int64 max");
    v = json_get(r, "min");
    CHECK(v && v->is_int && v->integer == INT64_MIN, "int64 min");
    v = json_get(r, "big");
    CHECK(v && !v->is_int && v->number == 9223372036854775808.0, "beyond int64 is a double");
    CHECK(json_get(r, "t")->type == JSON_BOOL && json_get(r, "t")->boolean == 1, "true");
    CHECK(json_get(r, "f")->type == JSON_BOOL && json_get(r, "f")->boolean == 0, "false");
    CHECK(json_get(r, "n")->type == JSON_NULL, "null");
    CHECK(json_get(r, "e_obj")->type == JSON_OBJECT && json_get(r, "e_obj")->count == 0, "empty object");
    CHECK(json_get(r, "e_arr")->type == JSON_ARRAY && json_get(r, "e_arr")->count == 0, "empty array");
    v = json_get(r, "s");
    const char want[] = "q\" b\\ s/ \b\f\n\r\t \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \0 end";
    CHECK(v && v->type == JSON_STRING && v->len == sizeof want - 1 && memcmp(v->str, want, sizeof want) == 0,
          "escapes decoded (len %zu, want %zu)", v ? v->len : 0, sizeof want - 1);
    v = json_get(r, "utf8");
    CHECK(v && strcmp(v->str, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") == 0, "raw UTF-8 kept");
    const JsonValue *nested = json_get(r, "nested");
    const JsonValue *deep = json_at(json_at(json_at(json_get(nested, "a"), 1), 1), 1);
    CHECK(deep && deep->type == JSON_OBJECT && strcmp(json_get(deep, "b")->str, "c") == 0, "nested lookup");
    CHECK(nested && nested->line == 7 && nested->col == 12, "nested at %d:%d", nested ? nested->line : 0,
          nested ? nested->col : 0);
    CHECK(json_at(json_get(nested, "a"), 2) == NULL && json_get(json_get(nested, "a"), "x") == NULL, "out of range");

    /* typed getters */
    int64_t i64 = 0;
    double d = 0;
    const char *s = NULL;
    int b = -1;
    CHECK(json_get_int(&doc, r, "float_int", &i64, &err) == 0 && i64 == 64, "64.0 is an integer");
    CHECK(json_get_int(&doc, r, "exp_int", &i64, &err) == 0 && i64 == 64, "6.4e1 is an integer");
    CHECK(json_get_int(&doc, r, "frac", &i64, &err) != 0 && contains(err.msg, "\"frac\" must be an integer, got 1.5"),
          "%s", err.msg);
    CHECK(json_get_int(&doc, r, "s", &i64, &err) != 0 &&
              contains(err.msg, "t.json:5:8: \"s\" must be an integer, got string"),
          "%s", err.msg);
    CHECK(json_get_int(&doc, r, "nope", &i64, &err) != 0 && contains(err.msg, "\"nope\" is missing"), "%s", err.msg);
    CHECK(json_get_int_or(&doc, r, "nope", 7, &i64, &err) == 0 && i64 == 7, "default");
    CHECK(json_get_int_or(&doc, r, "t", 7, &i64, &err) != 0 && contains(err.msg, "got boolean"), "%s", err.msg);
    CHECK(json_get_number(&doc, r, "Exp", &d, &err) == 0 && d == -125.0, "number");
    CHECK(json_get_number_or(&doc, r, "nope", 0.25, &d, &err) == 0 && d == 0.25, "number default");
    CHECK(json_get_string(&doc, r, "int", &s, &err) != 0 && contains(err.msg, "must be a string, got number"), "%s",
          err.msg);
    CHECK(json_get_string_or(&doc, r, "nope", "dflt", &s, &err) == 0 && strcmp(s, "dflt") == 0, "string default");
    CHECK(json_get_bool_or(&doc, r, "t", 0, &b, &err) == 0 && b == 1, "bool");
    CHECK(json_get_bool_or(&doc, r, "n", 0, &b, &err) != 0 && contains(err.msg, "must be true or false, got null"),
          "%s", err.msg);
    json_free(&doc);

    /* top-level scalars, and whitespace around them */
    const char *scalars[] = {"42", " \"s\" ", "null", "true", "-0.5e-3", "\n[]\n", "{}"};
    for (size_t k = 0; k < sizeof scalars / sizeof scalars[0]; k++) {
        CHECK(parse_str(&doc, scalars[k], &err) == 0, "'%s': %s", scalars[k], err.msg);
        json_free(&doc);
    }
    /* exactly JSON_MAX_DEPTH levels are fine */
    char deepdoc[2 * JSON_MAX_DEPTH + 1];
    for (int k = 0; k < JSON_MAX_DEPTH; k++) {
        deepdoc[k] = '[';
        deepdoc[2 * JSON_MAX_DEPTH - 1 - k] = ']';
    }
    deepdoc[2 * JSON_MAX_DEPTH] = 0;
    CHECK(parse_str(&doc, deepdoc, &err) == 0, "%d levels: %s", JSON_MAX_DEPTH, err.msg);
    json_free(&doc);
    /* a NUL inside a key is kept, and does not match a C-string lookup */
    CHECK(json_parse(&doc, "t.json", "{\"a\\u0000b\": 1}", 15, &err) == 0 && doc.root.members[0].key_len == 3 &&
              json_get(&doc.root, "a") == NULL, "NUL in key: %s", err.msg);
    json_free(&doc);
}

/* ---- JSON: malformed documents ---------------------------------------------------------------- */

static void test_json_errors(void) {
    static const struct {
        const char *text;
        const char *want;   /* substring of the message, including the position */
    } cases[] = {
        {"", "t.json:1:1: expected a value, found end of input"},
        {"   \n  ", "t.json:2:3: expected a value, found end of input"},
        {"[1,2,]", "t.json:1:6: expected a value after ',', found ']' (trailing commas are not allowed)"},
        {"{\"a\":1,}", "t.json:1:8: expected a string key after ',', found '}' (trailing commas"},
        {"{\"a\" 1}", "t.json:1:6: expected ':' after object key, found '1'"},
        {"{\"a\":1 \"b\":2}", "t.json:1:8: expected ',' or '}' after object member, found '\"'"},
        {"{\n  \"a\": 1\n  \"b\": 2\n}", "t.json:3:3: expected ',' or '}' after object member, found '\"'"},
        {"[1 2]", "t.json:1:4: expected ',' or ']' after array element, found '2'"},
        {"{1:2}", "t.json:1:2: expected a string key or '}', found '1'"},
        {"{'a':2}", "t.json:1:2: expected a string key or '}', found '''"},
        {"[", "t.json:1:2: expected a value, found end of input"},
        {"{", "t.json:1:2: expected a string key or '}', found end of input"},
        {"[1", "t.json:1:3: expected ',' or ']' after array element, found end of input"},
        {"\"\\x\"", "t.json:1:2: invalid escape '\\x' in string"},
        {"\"\\u12G4\"", "t.json:1:2: invalid \\u escape: expected 4 hex digits"},
        {"\"\\u12\"", "t.json:1:2: invalid \\u escape"},
        {"\"ab\\ud800\"", "t.json:1:4: lone high surrogate \\uD800"},
        {"\"\\ud800\\u0041\"", "t.json:1:2: lone high surrogate"},
        {"\"\\ud800\\n\"", "lone high surrogate"},
        {"\"\\udc00\"", "t.json:1:2: lone low surrogate \\uDC00"},
        {"\"abc", "t.json:1:1: unterminated string"},
        {"[\"abc\\\"]", "t.json:1:2: unterminated string"},
        {"\"\\", "t.json:1:1: unterminated string"},
        {"\"a\tb\"", "t.json:1:3: control character U+0009 in string"},
        {"\"a\nb\"", "t.json:1:3: control character U+000A in string"},
        {"\"\xff\"", "t.json:1:2: invalid UTF-8 byte 0xFF in string"},
        {"\"\xc0\x80\"", "invalid UTF-8 byte 0xC0"},          /* overlong NUL */
        {"\"\xe0\x80\xaf\"", "invalid UTF-8 byte 0xE0"},      /* overlong '/' */
        {"\"\xed\xa0\x80\"", "invalid UTF-8 byte 0xED"},      /* UTF-8-encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", "invalid UTF-8 byte 0xF4"},  /* above U+10FFFF */
        {"\"\xe2\x82\"", "invalid UTF-8 byte 0xE2"},          /* truncated sequence */
        {"01", "t.json:1:1: leading zeros are not allowed in numbers"},
        {"-01", "t.json:1:2: leading zeros"},
        {"1e", "t.json:1:3: expected a digit in the exponent of a number"},
        {"1e+", "t.json:1:4: expected a digit in the exponent"},
        {"1.", "t.json:1:3: expected a digit after '.' in a number"},
        {"1.e5", "t.json:1:3: expected a digit after '.'"},
        {"-", "t.json:1:2: expected a digit after '-'"},
        {"-a", "t.json:1:2: expected a digit after '-'"},
        {".5", "t.json:1:1: expected a value, found '.'"},
        {"+1", "t.json:1:1: expected a value, found '+'"},
        {"1e400", "t.json:1:1: number is out of range"},
        {"-1e400", "number is out of range"},
        {"NaN", "t.json:1:1: expected a value, found 'N'"},
        {"Infinity", "expected a value, found 'I'"},
        {"tru", "t.json:1:1: invalid literal (expected true, false or null)"},
        {"nul", "invalid literal"},
        {"True", "expected a value, found 'T'"},
        {"truex", "t.json:1:5: unexpected 'x' after the top-level value"},
        {"[1] x", "t.json:1:5: unexpected 'x' after the top-level value"},
        {"\"a\" \"b\"", "t.json:1:5: unexpected '\"' after the top-level value"},
        {"1 2", "unexpected '2'"},
        {"/* c */ 1", "t.json:1:1: expected a value, found '/'"},
        {"[1,\n// c\n2]", "t.json:2:1: expected a value, found '/'"},
        {"{\"a\":1,\"a\":2}", "t.json:1:8: duplicate key \"a\" (first at 1:2)"},
        {"{\"k\":{\"x\":1,\"y\":2,\"x\":3}}", "t.json:1:19: duplicate key \"x\" (first at 1:7)"},
        {"\x01", "t.json:1:1: expected a value, found byte 0x01"},
        {"[1]\0", "unexpected byte 0x00 after the top-level value"},
        {"\xEF\xBB\xBF\xEF\xBB\xBF{}", "expected a value, found byte 0xEF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        JsonDoc doc;
        BlvError err = {{0}};
        size_t len = strlen(cases[i].text);
        if (strcmp(cases[i].text, "[1]") == 0) len = 4;  /* the embedded NUL case */
        int rc = json_parse(&doc, "t.json", cases[i].text, len, &err);
        CHECK(rc != 0, "case %zu accepted: %s", i, cases[i].text);
        CHECK(rc != 0 && contains(err.msg, cases[i].want), "case %zu: got \"%s\", want \"%s\"", i, err.msg,
              cases[i].want);
        CHECK(doc.root.type == JSON_NULL && doc.root.count == 0 && doc.name == NULL, "case %zu: doc not left empty", i);
        json_free(&doc);
    }
    /* one level deeper than the limit, in arrays and in objects */
    char deep[4 * (JSON_MAX_DEPTH + 1) + 8];
    size_t n = 0;
    for (int k = 0; k <= JSON_MAX_DEPTH; k++) deep[n++] = '[';
    deep[n] = 0;
    JsonDoc doc;
    BlvError err;
    CHECK(json_parse(&doc, "t.json", deep, n, &err) != 0 &&
              contains(err.msg, "t.json:1:65: nesting deeper than 64 levels"),
          "%s", err.msg);
    n = 0;
    for (int k = 0; k <= JSON_MAX_DEPTH; k++) {
        memcpy(deep + n, "{\"\":", 4);
        n += 4;
    }
    CHECK(json_parse(&doc, "t.json", deep, n, &err) != 0 && contains(err.msg, "nesting deeper than 64 levels"), "%s",
          err.msg);
    /* a missing file */
    CHECK(json_parse_file(&doc, test_tmp("no-such.json"), &err) != 0 && contains(err.msg, "no-such.json: cannot open"),
          "%s", err.msg);
}

/* Mutated documents, each in a buffer of exactly its length (so ASan sees any read past the end):
 * the parser must return 0 or -1 with a positioned message, never crash or leak. */
static void test_json_fuzz(void) {
    static const char *seeds[] = {
        "{\"architectures\": [\"SiglipVisionModel\"], \"hidden_size\": 1152, \"layer_norm_eps\": 1e-06,\n"
        " \"image_mean\": [0.5, 0.5, 0.5], \"name\": \"\\u00e9\\ud83d\\ude00\", \"ok\": true, \"none\": null}",
        "{\"__metadata__\":{\"format\":\"pt\"},\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
        "}",
        "[[[[[-0.5e+10, 1, 2, [3, {\"x\": [\"y\", {\"z\": false}]}]]]]]",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\"",
    };
    static const char alphabet[] = "{}[]:,\"\\/-+.eE0123456789tfnulrsa \n\t\x01\x80\xc3\xa9\xff";
    uint64_t rng = 0x5eed;
    int n_ok = 0, n_err = 0;
    for (int iter = 0; iter < 30000; iter++) {
        const char *seed = seeds[iter % 4];
        size_t len = strlen(seed);
        char *buf = malloc(len + 8);
        memcpy(buf, seed, len);
        int n_mut = 1 + (int)(test_rand_u64(&rng) % 4);
        for (int m = 0; m < n_mut; m++) {
            size_t pos = len ? (size_t)(test_rand_u64(&rng) % len) : 0;
            char c = alphabet[test_rand_u64(&rng) % (sizeof alphabet - 1)];
            switch (test_rand_u64(&rng) % 4) {
            case 0: if (len) buf[pos] = c; break;                                          /* replace */
            case 1: if (len) { memmove(buf + pos, buf + pos + 1, len - pos - 1); len--; } break;  /* delete */
            case 2:
                if (len < strlen(seed) + 4) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = c;
                    len++;
                }
                break;
            default: len = pos; break;                                                     /* truncate */
            }
        }
        char *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        free(buf);
        JsonDoc doc;
        BlvError err = {{0}};
        if (json_parse(&doc, "fuzz.json", exact, len, &err) == 0) {
            n_ok++;
            json_free(&doc);
        } else {
            n_err++;
            if (strncmp(err.msg, "fuzz.json:", 10) != 0) {
                CHECK(0, "message without position: %s", err.msg);
                free(exact);
                break;
            }
        }
        free(exact);
    }
    test_note("json fuzz: %d parsed, %d rejected", n_ok, n_err);
    CHECK(n_ok > 100 && n_err > 100, "fuzz should hit both outcomes (%d ok, %d errors)", n_ok, n_err);
}

/* ---- safetensors -------------------------------------------------------------------------------- */

/* Reads the fixture's expectation file: lines "name dtype shape count" / "hex hex ...". */
static void test_st_dtypes(void) {
    SafeTensors st;
    BlvError err = {{0}};
    if (st_open(&st, test_data("hfio/st_dtypes.safetensors"), &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    CHECK(st.n_tensors == 6 && st.n_shards == 1, "%lld tensors", (long long)st.n_tensors);
    FILE *fp = fopen(test_data("hfio/st_dtypes.expected.txt"), "r");
    CHECK(fp != NULL, "no expectation file");
    char line[256];
    int n_checked = 0;
    while (fp && fgets(line, sizeof line, fp)) {
        if (line[0] == '#') continue;
        char name[64], dtype[16], shape[64];
        long long count;
        if (sscanf(line, "%63s %15s %63s %lld", name, dtype, shape, &count) != 4) continue;
        const StTensor *t = st_find(&st, name);
        CHECK(t != NULL, "tensor %s missing", name);
        if (!t) continue;
        CHECK(strcmp(st_dtype_name(t->dtype), dtype) == 0, "%s: dtype %s, want %s", name, st_dtype_name(t->dtype),
              dtype);
        char got_shape[64] = "-";
        if (t->n_dims) {
            size_t o = 0;
            for (int i = 0; i < t->n_dims; i++)
                o += (size_t)snprintf(got_shape + o, sizeof got_shape - o, "%s%lld", i ? "," : "",
                                      (long long)t->shape[i]);
        }
        CHECK(strcmp(got_shape, shape) == 0 && t->n_elements == count, "%s: shape %s (%lld), want %s (%lld)", name,
              got_shape, (long long)t->n_elements, shape, count);
        float *vals = malloc((size_t)(count ? count : 1) * sizeof(float));
        CHECK(st_read_f32(&st, t, vals, &err) == 0, "%s: %s", name, err.msg);
        for (long long i = 0; i < count; i++) {
            unsigned int want;
            if (fscanf(fp, "%x", &want) != 1) {
                CHECK(0, "%s: expectation file too short", name);
                break;
            }
            CHECK(float_bits(vals[i]) == want, "%s[%lld] = %08x, want %08x", name, i, float_bits(vals[i]), want);
        }
        free(vals);
        n_checked++;
    }
    if (fp) fclose(fp);
    CHECK(n_checked == 5, "%d tensors checked", n_checked);

    const StTensor *s = st_find(&st, "scalar");
    CHECK(s && s->n_dims == 0 && s->n_elements == 1, "0-d tensor");
    const StTensor *e = st_find(&st, "empty");
    CHECK(e && e->n_dims == 2 && e->shape[0] == 0 && e->n_elements == 0 && e->n_bytes == 0, "empty tensor");
    /* rows 1..2 of a 3x5 matrix */
    const StTensor *m = st_find(&st, "f32_matrix");
    float rows[10];
    CHECK(m && st_read_rows_f32(&st, m, 1, 2, rows, &err) == 0 && float_bits(rows[0]) == 0x000116c2u &&
              float_bits(rows[9]) == 0x9eec1e4au, "row read: %s", err.msg);
    CHECK(m && st_read_rows_f32(&st, m, 2, 2, rows, &err) != 0 && contains(err.msg, "rows [2, 4) asked, it has 3"),
          "%s", err.msg);
    const StTensor *ids = st_find(&st, "position_ids");
    float tmp[4];
    CHECK(ids && ids->dtype == ST_I64 && st_read_f32(&st, ids, tmp, &err) != 0 &&
              contains(err.msg, "st_dtypes.safetensors: tensor position_ids has dtype I64, which is not a weight type "
                                "bluelmv converts"), "%s", err.msg);
    CHECK(st_find(&st, "nope") == NULL && st_find(&st, "") == NULL, "absent names");
    st_close(&st);
}

static void check_sharded_values(const SafeTensors *st, const char *expected_path) {
    FILE *fp = fopen(expected_path, "r");
    CHECK(fp != NULL, "cannot open %s", expected_path);
    char line[256];
    int n = 0;
    while (fp && fgets(line, sizeof line, fp)) {
        char name[64], shape[64];
        long long count;
        if (sscanf(line, "%63s %63s %lld", name, shape, &count) != 3) continue;
        const StTensor *t = st_find(st, name);
        CHECK(t != NULL, "%s missing", name);
        float vals[64];
        BlvError err;
        CHECK(t && count <= 64 && st_read_f32(st, t, vals, &err) == 0, "%s", name);
        for (long long i = 0; i < count; i++) {
            unsigned int want = 0;
            CHECK(fscanf(fp, "%x", &want) == 1, "short expectation");
            CHECK(t && float_bits(vals[i]) == want, "%s[%lld] = %08x, want %08x", name, i, float_bits(vals[i]), want);
        }
        n++;
    }
    if (fp) fclose(fp);
    CHECK(n == 4, "%d tensors checked", n);
}

static void test_st_sharded(void) {
    SafeTensors st;
    BlvError err = {{0}};
    char expected[4096];
    snprintf(expected, sizeof expected, "%s", test_data("hfio/st_sharded/expected.txt"));
    /* through the directory, and through the index file */
    const char *paths[2] = {"hfio/st_sharded", "hfio/st_sharded/model.safetensors.index.json"};
    for (int k = 0; k < 2; k++) {
        if (st_open(&st, test_data(paths[k]), &err) != 0) {
            CHECK(0, "%s", err.msg);
            continue;
        }
        CHECK(st.n_shards == 2 && st.n_tensors == 4, "%d shards, %lld tensors", st.n_shards, (long long)st.n_tensors);
        const StTensor *t = st_find(&st, "b.weight");
        CHECK(t && contains(st_tensor_file(&st, t), "model-00002-of-00002.safetensors") && t->dtype == ST_BF16,
              "b.weight lives in shard 2 as BF16");
        t = st_find(&st, "a.bias");
        CHECK(t && contains(st_tensor_file(&st, t), "model-00001-of-00002.safetensors") && t->dtype == ST_F16,
              "a.bias");
        check_sharded_values(&st, expected);
        st_close(&st);
    }
    /* the transformers-written sharded checkpoint */
    CHECK(st_open(&st, test_data("hfio/siglip_bf16_sharded"), &err) == 0 && st.n_shards == 3, "%s", err.msg);
    st_close(&st);
}

/* Each malformed file must be refused with a message naming the file and the problem. */
static void test_st_corrupt(void) {
    BlvError err = {{0}};
    SafeTensors st;
    char path[4200];
    static const struct {
        const char *header;
        size_t data_len;
        const char *want;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
         "tensor a: data_offsets [0, 8] run past the end of the data buffer (4 bytes)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[4,12]}}",
         12, "tensors a [0, 8) and b [4, 12) overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         "tensor a: data_offsets [0, 8] hold 8 bytes, but dtype F32 and shape [3] need 12"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4,
         "dtype BF16 and shape [2, 2] need 8"},
        {"{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
         "tensor a has dtype \"Q9\", which this reader does not know"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor a: \"dtype\" must be a string"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0] = -2 is negative"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
         "tensor a shape[0] must be an integer, got string"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "\"shape\" must be an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
         "data_offsets [8, 0] are not a valid range"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
         "\"data_offsets\" must be an array [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 8,
         "the shape's element count overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "has 9 dimensions"},
        {"{\"a\":[1]}", 0, "tensor a: header entry must be an object, got array"},
        {"[]", 0, "the header must be a JSON object, got array"},
        {"{\"__metadata__\":[1]}", 0, "__metadata__ must be an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8,
         "(JSON header):1:55: expected a string key after ',', found '}'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{}}", 8, "duplicate key \"a\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s", test_tmp("corrupt.safetensors"));
        CHECK(write_st(path, cases[i].header, cases[i].data_len) == 0, "write");
        int rc = st_open(&st, path, &err);
        CHECK(rc != 0, "case %zu accepted", i);
        CHECK(rc != 0 && contains(err.msg, "corrupt.safetensors") && contains(err.msg, cases[i].want),
              "case %zu: got \"%s\", want \"%s\"", i, err.msg, cases[i].want);
        if (rc == 0) st_close(&st);
    }
    /* a good hand-made file, with zero-size tensors sharing an offset */
    CHECK(write_st(
              path,
              "{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"U8\",\"shape\":[4],"
              "\"data_offsets\":[0,4]},\"y\":{\"dtype\":\"F64\",\"shape\":[0,3],\"data_offsets\":[4,4]}}   ",
              4) == 0,
          "write");
    CHECK(st_open(&st, path, &err) == 0 && st.n_tensors == 3 && strcmp(st.tensors[0].name, "a") == 0, "%s", err.msg);
    st_close(&st);

    /* truncations of a real file: inside the length, inside the header, inside the data */
    char *data;
    size_t n;
    CHECK(blv_read_file(test_data("hfio/st_dtypes.safetensors"), &data, &n, &err) == 0, "%s", err.msg);
    if (!data) return;
    snprintf(path, sizeof path, "%s", test_tmp("trunc.safetensors"));
    size_t cuts[] = {0, 5, 8, 60, n - 1};
    const char *wants[] = {"is too short for a safetensors file", "is too short", "runs past the end of the file",
                           "runs past the end of the file", "run past the end of the data buffer"};
    for (int i = 0; i < 5; i++) {
        CHECK(write_file(path, data, cuts[i]) == 0, "write");
        CHECK(st_open(&st, path, &err) != 0 && contains(err.msg, wants[i]), "cut at %zu: %s", cuts[i], err.msg);
    }
    /* a huge header length */
    uint8_t huge[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
    CHECK(write_file(path, huge, 16) == 0, "write");
    CHECK(st_open(&st, path, &err) != 0 &&
              contains(err.msg, "header length 1099511627776 exceeds the 100000000-byte limit"),
          "%s", err.msg);
    /* byte flips anywhere in the header: never a crash, a leak or a read outside the file */
    uint64_t rng = 77;
    int n_ok = 0;
    for (int iter = 0; iter < 1500; iter++) {
        char *copy = malloc(n);
        memcpy(copy, data, n);
        size_t pos = (size_t)(test_rand_u64(&rng) % 300);
        copy[pos] = (char)(test_rand_u64(&rng) & 0xff);
        CHECK(write_file(path, copy, n) == 0, "write");
        if (st_open(&st, path, &err) == 0) {
            n_ok++;
            for (int64_t t = 0; t < st.n_tensors; t++) {
                float *vals = malloc((size_t)(st.tensors[t].n_elements + 1) * sizeof(float));
                st_read_f32(&st, &st.tensors[t], vals, &err);
                free(vals);
            }
            st_close(&st);
        }
        free(copy);
    }
    test_note("safetensors header flips: %d of 1500 still valid", n_ok);
    free(data);

    /* directories and indexes */
    const char *empty = tmp_dir("st-empty");
    CHECK(st_open(&st, empty, &err) != 0 && contains(err.msg, "no model.safetensors or model.safetensors.index.json"),
          "%s", err.msg);
    CHECK(st_open(&st, test_tmp("absent.safetensors"), &err) != 0 &&
              contains(err.msg, "absent.safetensors: cannot open"),
          "%s", err.msg);
    const char *names[] = {"model.safetensors.index.json", "model-00001-of-00002.safetensors"};
    const char *missing = tmp_dir("st-missing-shard");
    copy_fixture("st_sharded", missing, names, 2);
    CHECK(st_open(&st, missing, &err) != 0 && contains(err.msg, "shard model-00002-of-00002.safetensors") &&
              contains(err.msg, "cannot open"), "missing shard: %s", err.msg);
    /* an index that puts a tensor in the wrong shard, names a path, or holds no map */
    const char *bad = tmp_dir("st-bad-index");
    const char *all[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    copy_fixture("st_sharded", bad, all, 2);
    struct {
        const char *index;
        const char *want;
    } idx[] = {
        {"{\"weight_map\": {\"a.weight\": \"model-00002-of-00002.safetensors\"}}",
         "weight_map puts tensor a.weight in model-00002-of-00002.safetensors, but"},
        {"{\"weight_map\": {\"a.weight\": \"../model-00001-of-00002.safetensors\"}}", "is not a plain file name"},
        {"{\"weight_map\": {\"a.weight\": 3}}", "weight_map entry \"a.weight\" must be a string, got number"},
        {"{\"metadata\": {}}", "\"weight_map\" must be an object"},
        {"{\"weight_map\": {}}", "weight_map is empty"},
        {"{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\",}}", "model.safetensors.index.json:1:"},
        {"{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", \"zz\": "
         "\"model-00002-of-00002.safetensors\"}}",
         "weight_map puts tensor zz in model-00002-of-00002.safetensors"},
    };
    char index_path[4200];
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", bad);
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        CHECK(write_file(index_path, idx[i].index, strlen(idx[i].index)) == 0, "write");
        int rc = st_open(&st, bad, &err);
        CHECK(rc != 0 && contains(err.msg, idx[i].want), "index case %zu: %s", i, rc ? err.msg : "accepted");
        if (rc == 0) st_close(&st);
    }
    /* the same tensor in two shards */
    char shard[4200];
    snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", bad);
    CHECK(copy_file(test_data("hfio/st_sharded/model-00001-of-00002.safetensors"), shard) == 0, "copy");
    const char *dup = "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", \"a.bias\": "
                      "\"model-00002-of-00002.safetensors\"}}";
    CHECK(write_file(index_path, dup, strlen(dup)) == 0, "write");
    CHECK(st_open(&st, bad, &err) != 0 && contains(err.msg, "is in both"), "%s", err.msg);
}

/* ---- convert hf-vision: what the file must hold -------------------------------------------------- */

#define D 32
#define F 86
#define H 64
#define P 7
#define K (3 * P * P)
#define GRID 7

static int convert(const char *dir, const char *proj, const char *out, int type, const HfVisionOptions *opt,
                   BlvError *err) {
    char d[4096], p[4096];
    snprintf(d, sizeof d, "%s", dir[0] == '/' ? dir : test_data(dir));
    if (proj) snprintf(p, sizeof p, "%s", proj[0] == '/' ? proj : test_data(proj));
    return convert_hf_vision_ex(d, proj ? p : NULL, out, type, opt, 0, err);
}

/* The bytes a GGUF tensor must hold: the checkpoint tensor (rows × cols after flattening) zero-padded
 * to rows_stored × cols_stored and converted to `type` with quant.h's reference rounding. */
static void check_gguf_tensor(const GgufFile *g, const char *gname, const SafeTensors *st, const char *hfname,
                              int64_t rows, int64_t cols, int64_t rows_stored, int64_t cols_stored, int n_dims,
                              int type) {
    const GgufTensor *t = gguf_find_tensor(g, gname);
    const StTensor *s = st_find(st, hfname);
    CHECK(t != NULL, "GGUF tensor %s missing", gname);
    CHECK(s != NULL, "checkpoint tensor %s missing", hfname);
    if (!t || !s) return;
    CHECK((int)t->n_dims == n_dims && t->ne[0] == cols_stored && (n_dims == 1 || t->ne[1] == rows_stored),
          "%s: dims %u [%lld, %lld], want %d [%lld, %lld]", gname, t->n_dims, (long long)t->ne[0], (long long)t->ne[1],
          n_dims, (long long)cols_stored, (long long)rows_stored);
    CHECK((int)t->type == type, "%s: type %s, want %s", gname, type_name((int)t->type), type_name(type));
    CHECK(s->n_elements == rows * cols, "%s: checkpoint has %lld elements", hfname, (long long)s->n_elements);
    if ((int)t->type != type || s->n_elements != rows * cols || t->ne[0] != cols_stored) return;
    float *src = calloc((size_t)(rows * cols), sizeof(float));
    float *padded = calloc((size_t)(rows_stored * cols_stored), sizeof(float));
    BlvError err;
    CHECK(st_read_f32(st, s, src, &err) == 0, "%s", err.msg);
    for (int64_t r = 0; r < rows; r++) memcpy(padded + r * cols_stored, src + r * cols, (size_t)cols * sizeof(float));
    int64_t rb = type_row_bytes(type, cols_stored);
    uint8_t *want = malloc((size_t)(rows_stored * rb));
    for (int64_t r = 0; r < rows_stored; r++) quantize_row(type, padded + r * cols_stored, want + r * rb, cols_stored);
    CHECK(t->n_bytes == rows_stored * rb && memcmp(t->data, want, (size_t)(rows_stored * rb)) == 0,
          "%s differs from %s", gname, hfname);
    /* and, independently of the byte comparison, the padding dequantizes to exact zeros */
    float *deq = malloc((size_t)cols_stored * sizeof(float));
    for (int64_t r = 0; r < rows_stored; r++) {
        dequantize_row(type, (const uint8_t *)t->data + r * rb, deq, cols_stored);
        for (int64_t c = 0; c < cols_stored; c++)
            if ((r >= rows || c >= cols) && deq[c] != 0.0f) {
                CHECK(0, "%s: padding [%lld][%lld] = %g", gname, (long long)r, (long long)c, deq[c]);
                r = rows_stored;
                break;
            }
    }
    free(deq);
    free(want);
    free(padded);
    free(src);
}

/* The GGUF names a converted file must list, in order. */
static int expected_names(char names[][64], int n_layers, int post_ln, int projector) {
    int n = 0;
    static const char *blk[] = {"ln1.weight", "ln1.bias", "attn_q.weight", "attn_q.bias", "attn_k.weight",
                                "attn_k.bias", "attn_v.weight", "attn_v.bias", "attn_out.weight", "attn_out.bias",
                                "ln2.weight", "ln2.bias", "ffn_up.weight", "ffn_up.bias", "ffn_down.weight",
                                "ffn_down.bias"};
    snprintf(names[n++], 64, "v.patch_embd.weight");
    snprintf(names[n++], 64, "v.patch_embd.bias");
    snprintf(names[n++], 64, "v.position_embd.weight");
    for (int L = 0; L < n_layers; L++)
        for (int i = 0; i < 16; i++) snprintf(names[n++], 64, "v.blk.%d.%s", L, blk[i]);
    if (post_ln) {
        snprintf(names[n++], 64, "v.post_ln.weight");
        snprintf(names[n++], 64, "v.post_ln.bias");
    }
    if (projector) {
        const char *mm[] = {"mm.input_norm.weight", "mm.input_norm.bias", "mm.0.weight", "mm.0.bias", "mm.2.weight",
                            "mm.2.bias"};
        for (int i = 0; i < 6; i++) snprintf(names[n++], 64, "%s", mm[i]);
    }
    return n;
}

/* snprintf into buf, returning buf: names built inline in the calls below. */
static const char *name_of(char *buf, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static const char *name_of(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, 256, fmt, ap);
    va_end(ap);
    return buf;
}

/* Checks the tensor list and every tensor of a converted file against the checkpoint. vp / pp are
 * the HF name prefixes of the vision tower and the projector. */
static void check_all_tensors(const GgufFile *g, const SafeTensors *st, const char *vp, const SafeTensors *proj,
                              const char *pp, int type, int n_layers, int post_ln) {
    int quant = type == TYPE_Q8_0 || type == TYPE_Q4_0;
    int64_t Kp = quant ? 160 : K, Fp = quant ? 96 : F;
    char names[128][64];
    int n = expected_names(names, n_layers, post_ln, proj != NULL);
    CHECK(g->n_tensors == n, "%lld tensors, want %d", (long long)g->n_tensors, n);
    for (int i = 0; i < n && i < g->n_tensors; i++)
        CHECK(g->tensors[i].name.len == strlen(names[i]) &&
                  memcmp(g->tensors[i].name.ptr, names[i], strlen(names[i])) == 0,
              "tensor %d is %.*s, want %s", i, (int)g->tensors[i].name.len, g->tensors[i].name.ptr, names[i]);
    char gn[256], hn[256];
    check_gguf_tensor(g, "v.patch_embd.weight", st, name_of(hn, "%s%s", vp, "embeddings.patch_embedding.weight"), D, K,
                      D, Kp, 2, type);
    check_gguf_tensor(g, "v.patch_embd.bias", st, name_of(hn, "%s%s", vp, "embeddings.patch_embedding.bias"), 1, D, 1,
                      D, 1, TYPE_F32);
    check_gguf_tensor(g, "v.position_embd.weight", st, name_of(hn, "%s%s", vp, "embeddings.position_embedding.weight"),
                      GRID * GRID, D, GRID * GRID, D, 2, TYPE_F32);
    static const char *attn[4][2] = {
        {"q_proj", "attn_q"}, {"k_proj", "attn_k"}, {"v_proj", "attn_v"}, {"out_proj", "attn_out"}};
    for (int L = 0; L < n_layers; L++) {
        for (int w = 0; w < 2; w++) {
            const char *ws = w ? "bias" : "weight";
            check_gguf_tensor(g, name_of(gn, "v.blk.%d.ln1.%s", L, ws), st,
                              name_of(hn, "%sencoder.layers.%d.layer_norm1.%s", vp, L, ws), 1, D, 1, D, 1, TYPE_F32);
            check_gguf_tensor(g, name_of(gn, "v.blk.%d.ln2.%s", L, ws), st,
                              name_of(hn, "%sencoder.layers.%d.layer_norm2.%s", vp, L, ws), 1, D, 1, D, 1, TYPE_F32);
        }
        for (int a = 0; a < 4; a++) {
            check_gguf_tensor(g, name_of(gn, "v.blk.%d.%s.weight", L, attn[a][1]), st,
                              name_of(hn, "%sencoder.layers.%d.self_attn.%s.weight", vp, L, attn[a][0]), D, D, D, D, 2,
                              type);
            check_gguf_tensor(g, name_of(gn, "v.blk.%d.%s.bias", L, attn[a][1]), st,
                              name_of(hn, "%sencoder.layers.%d.self_attn.%s.bias", vp, L, attn[a][0]), 1, D, 1, D, 1,
                              TYPE_F32);
        }
        /* fc1: extra zero rows (and zero bias entries); fc2: extra zero columns */
        check_gguf_tensor(g, name_of(gn, "v.blk.%d.ffn_up.weight", L), st,
                          name_of(hn, "%sencoder.layers.%d.mlp.fc1.weight", vp, L), F, D, Fp, D, 2, type);
        check_gguf_tensor(g, name_of(gn, "v.blk.%d.ffn_up.bias", L), st,
                          name_of(hn, "%sencoder.layers.%d.mlp.fc1.bias", vp, L), 1, F, 1, Fp, 1, TYPE_F32);
        check_gguf_tensor(g, name_of(gn, "v.blk.%d.ffn_down.weight", L), st,
                          name_of(hn, "%sencoder.layers.%d.mlp.fc2.weight", vp, L), D, F, D, Fp, 2, type);
        check_gguf_tensor(g, name_of(gn, "v.blk.%d.ffn_down.bias", L), st,
                          name_of(hn, "%sencoder.layers.%d.mlp.fc2.bias", vp, L), 1, D, 1, D, 1, TYPE_F32);
    }
    if (post_ln) {
        check_gguf_tensor(g, "v.post_ln.weight", st, name_of(hn, "%s%s", vp, "post_layernorm.weight"), 1, D, 1, D, 1,
                          TYPE_F32);
        check_gguf_tensor(g, "v.post_ln.bias", st, name_of(hn, "%s%s", vp, "post_layernorm.bias"), 1, D, 1, D, 1,
                          TYPE_F32);
    }
    if (proj) {
        check_gguf_tensor(g, "mm.input_norm.weight", proj, name_of(hn, "%slayers.1.weight", pp), 1, 4 * D, 1, 4 * D, 1,
                          TYPE_F32);
        check_gguf_tensor(g, "mm.input_norm.bias", proj, name_of(hn, "%slayers.1.bias", pp), 1, 4 * D, 1, 4 * D, 1,
                          TYPE_F32);
        check_gguf_tensor(g, "mm.0.weight", proj, name_of(hn, "%slayers.2.weight", pp), H, 4 * D, H, 4 * D, 2, type);
        check_gguf_tensor(g, "mm.0.bias", proj, name_of(hn, "%slayers.2.bias", pp), 1, H, 1, H, 1, TYPE_F32);
        check_gguf_tensor(g, "mm.2.weight", proj, name_of(hn, "%slayers.4.weight", pp), H, H, H, H, 2, type);
        check_gguf_tensor(g, "mm.2.bias", proj, name_of(hn, "%slayers.4.bias", pp), 1, H, 1, H, 1, TYPE_F32);
    }
}

static void check_u32(const GgufFile *g, const char *key, uint32_t want) {
    uint32_t v = 0;
    BlvError err = {{0}};
    const GgufKV *kv = gguf_find_kv(g, key);
    CHECK(kv && kv->type == GGUF_TYPE_UINT32 && gguf_get_u32(g, key, &v, &err) == 0 && v == want,
          "%s = %u, want u32 %u %s", key, v, want, err.msg);
}

static void check_f32(const GgufFile *g, const char *key, float want) {
    float v = 0;
    BlvError err = {{0}};
    const GgufKV *kv = gguf_find_kv(g, key);
    CHECK(kv && kv->type == GGUF_TYPE_FLOAT32 && gguf_get_f32(g, key, &v, &err) == 0 && v == want,
          "%s = %g, want f32 %g", key, v, want);
}

static void check_bool(const GgufFile *g, const char *key, int want) {
    int v = -1;
    BlvError err = {{0}};
    CHECK(gguf_get_bool(g, key, &v, &err) == 0 && v == want, "%s = %d, want %d %s", key, v, want, err.msg);
}

static void check_string(const GgufFile *g, const char *key, const char *want) {
    char *v = NULL;
    BlvError err = {{0}};
    CHECK(gguf_get_string(g, key, &v, &err) == 0 && strcmp(v, want) == 0, "%s = %s, want %s %s", key, v ? v : "?", want,
          err.msg);
    free(v);
}

static void check_triple(const GgufFile *g, const char *key, const float want[3]) {
    const GgufKV *kv = NULL;
    BlvError err = {{0}};
    CHECK(gguf_get_array(g, key, GGUF_TYPE_FLOAT32, &kv, &err) == 0 && kv->arr_count == 3, "%s: %s", key, err.msg);
    for (int i = 0; kv && i < 3; i++)
        CHECK((float)gguf_array_f64(kv, (uint64_t)i) == want[i], "%s[%d] = %g, want %g", key, i,
              gguf_array_f64(kv, (uint64_t)i), want[i]);
}

/* The KVs of the spec, for a file from the test model. */
static void check_keys(const GgufFile *g, int n_layers, int post_ln, uint32_t proj_dim, const float mean[3],
                       const float std[3]) {
    check_string(g, "general.architecture", "clip");
    check_bool(g, "clip.has_vision_encoder", 1);
    check_string(g, "clip.projector_type", "bluelmv");
    check_u32(g, "clip.vision.image_size", 52);
    check_u32(g, "clip.vision.patch_size", P);
    check_u32(g, "clip.vision.embedding_length", D);
    check_u32(g, "clip.vision.feed_forward_length", F);
    check_u32(g, "clip.vision.block_count", (uint32_t)n_layers);
    check_u32(g, "clip.vision.attention.head_count", 4);
    check_f32(g, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
    check_triple(g, "clip.vision.image_mean", mean);
    check_triple(g, "clip.vision.image_std", std);
    check_u32(g, "clip.vision.projection_dim", proj_dim);
    check_u32(g, "clip.vision.projector.scale_factor", 2);
    check_bool(g, "clip.use_gelu", 1);
    check_string(g, "bluelmv.merge.order", "vila");
    check_bool(g, "bluelmv.vision.post_ln", post_ln);
    check_f32(g, "bluelmv.projector.layer_norm_epsilon", 1e-5f);
    check_string(g, "bluelmv.tiling.algo", "relaxed");
    check_u32(g, "bluelmv.tiling.max_grid", 4);
    check_f32(g, "bluelmv.tiling.alpha", 0.1f);
    check_bool(g, "bluelmv.tiling.thumbnail", 1);
}

static const float half3[3] = {0.5f, 0.5f, 0.5f};

/* Converts `dir` (+ projector) with `type` and checks the whole file. */
static void convert_and_check(const char *dir, const char *vp, const char *proj, const char *pp, int type,
                              const HfVisionOptions *opt, const char *out_name, const float *mean, const float *std) {
    char out[4096];
    snprintf(out, sizeof out, "%s", test_tmp(out_name));
    BlvError err = {{0}};
    if (convert(dir, proj, out, type, opt, &err) != 0) {
        CHECK(0, "convert %s: %s", dir, err.msg);
        return;
    }
    SafeTensors st, pst;
    GgufFile g;
    int have_proj = proj != NULL;
    CHECK(st_open(&st, test_data(dir), &err) == 0, "%s", err.msg);
    CHECK(!have_proj || st_open(&pst, test_data(proj), &err) == 0, "%s", err.msg);
    if (gguf_open(&g, out, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
    } else {
        int all = opt && opt->all_layers, post = opt && opt->post_ln;
        check_keys(&g, all ? 3 : 2, post, have_proj ? H : 0, mean ? mean : half3, std ? std : half3);
        check_all_tensors(&g, &st, vp, have_proj ? &pst : NULL, pp, type, all ? 3 : 2, post);
        gguf_close(&g);
    }
    st_close(&st);
    if (have_proj) st_close(&pst);
}

static void test_hf_vision_f32(void) {
    convert_and_check("hfio/siglip_f32", "", "hfio/mm_projector", "", TYPE_F32, NULL, "hf-f32.gguf", NULL, NULL);
}

static void test_hf_vision_q8_0(void) {
    convert_and_check("hfio/siglip_f32", "", "hfio/mm_projector/model.safetensors", "", TYPE_Q8_0, NULL, "hf-q8.gguf",
                      NULL, NULL);
}

static void test_hf_vision_f16_q4_0(void) {
    convert_and_check("hfio/siglip_f32", "", "hfio/mm_projector", "", TYPE_F16, NULL, "hf-f16.gguf", NULL, NULL);
    convert_and_check("hfio/siglip_f32", "", "hfio/mm_projector", "", TYPE_Q4_0, NULL, "hf-q4.gguf", NULL, NULL);
}

static void test_hf_vision_options(void) {
    HfVisionOptions all = {1, 0}, post = {1, 1}, bad = {0, 1};
    convert_and_check("hfio/siglip_f32", "", "hfio/mm_projector", "", TYPE_F32, &all, "hf-all.gguf", NULL, NULL);
    convert_and_check("hfio/siglip_f32", "", "hfio/mm_projector", "", TYPE_Q8_0, &post, "hf-post.gguf", NULL, NULL);
    /* no projector: the vision tower alone, projection_dim 0 */
    convert_and_check("hfio/siglip_f32", "", NULL, "", TYPE_Q8_0, NULL, "hf-noproj.gguf", NULL, NULL);
    BlvError err;
    CHECK(convert("hfio/siglip_f32", NULL, test_tmp("x.gguf"), TYPE_F32, &bad, &err) != 0 &&
              contains(err.msg, "--post-ln needs --all-layers"), "%s", err.msg);
    CHECK(convert("hfio/siglip_f32", NULL, test_tmp("x.gguf"), TYPE_BF16, NULL, &err) != 0 &&
              contains(err.msg, "bf16 is not an output type for the vision model"), "%s", err.msg);
    CHECK(access(test_tmp("x.gguf"), F_OK) != 0, "no output file after a refused conversion");
}

/* The same weights as BF16 shards (with the pooling head, which is ignored), as a full SiglipModel
 * (prefix vision_model., text tower ignored) and with an mm_projector.-prefixed BF16 projector all
 * convert to exactly the tensors of the F32 files: the fixture's values are bf16-representable. */
static void test_hf_vision_sources_agree(void) {
    static const struct {
        const char *dir, *proj, *out;
        int has_pre;
    } src[] = {
        {"hfio/siglip_f32", "hfio/mm_projector", "agree-ref.gguf", 1},
        {"hfio/siglip_bf16_sharded", "hfio/projector_prefixed.safetensors", "agree-bf16.gguf", 1},
        {"hfio/siglip_full", "hfio/mm_projector/model.safetensors", "agree-full.gguf", 0},
    };
    GgufFile g[3];
    int ok[3] = {0};
    for (int i = 0; i < 3; i++) {
        BlvError err = {{0}};
        char out[4096];
        snprintf(out, sizeof out, "%s", test_tmp(src[i].out));
        CHECK(convert(src[i].dir, src[i].proj, out, TYPE_Q8_0, NULL, &err) == 0, "%s: %s", src[i].dir, err.msg);
        ok[i] = gguf_open(&g[i], out, 1, &err) == 0;
        CHECK(ok[i], "%s", err.msg);
    }
    for (int i = 1; i < 3; i++) {
        if (!ok[0] || !ok[i]) continue;
        CHECK(g[i].n_tensors == g[0].n_tensors, "%s: %lld tensors", src[i].dir, (long long)g[i].n_tensors);
        for (int64_t t = 0; t < g[0].n_tensors && t < g[i].n_tensors; t++) {
            const GgufTensor *a = &g[0].tensors[t], *b = &g[i].tensors[t];
            CHECK(a->name.len == b->name.len && memcmp(a->name.ptr, b->name.ptr, a->name.len) == 0 &&
                      a->n_bytes == b->n_bytes && memcmp(a->data, b->data, (size_t)a->n_bytes) == 0,
                  "%s: tensor %.*s differs from the F32 checkpoint's", src[i].dir, (int)a->name.len, a->name.ptr);
        }
    }
    /* preprocessor_config.json of the sharded one holds CLIP's mean/std; siglip_full has none */
    const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f},
                clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    if (ok[1]) check_keys(&g[1], 2, 0, H, clip_mean, clip_std);
    if (ok[2]) check_keys(&g[2], 2, 0, H, half3, half3);
    for (int i = 0; i < 3; i++)
        if (ok[i]) gguf_close(&g[i]);
    /* and the F16 output of the sharded BF16 checkpoint, tensor by tensor */
    convert_and_check("hfio/siglip_bf16_sharded", "", "hfio/projector_prefixed.safetensors", "mm_projector.", TYPE_F16,
                      NULL, "agree-f16.gguf", clip_mean, clip_std);
}

/* ---- convert hf-vision: refused inputs ------------------------------------------------------------ */

static void write_text(const char *dir, const char *name, const char *text) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(write_file(path, text, strlen(text)) == 0, "cannot write %s", path);
}

/* A config.json with only the fields that differ from SiglipVisionConfig's defaults. */
static const char *config_minimal =
    "{\"model_type\": \"siglip_vision_model\", \"hidden_size\": 32, \"image_size\": 52, \"intermediate_size\": 86,\n"
    " \"num_attention_heads\": 4, \"num_hidden_layers\": 3, \"patch_size\": 7}\n";

static void expect_refused(const char *dir_arg, const char *proj_arg, const char *want1, const char *want2) {
    BlvError err = {{0}};
    char out[4096], dir[4096], proj[4096];
    /* the arguments may point to test_tmp's static buffer, which the next call overwrites */
    snprintf(dir, sizeof dir, "%s", dir_arg);
    snprintf(proj, sizeof proj, "%s", proj_arg ? proj_arg : "");
    snprintf(out, sizeof out, "%s", test_tmp("refused.gguf"));
    int rc = convert(dir, proj_arg ? proj : NULL, out, TYPE_Q8_0, NULL, &err);
    CHECK(rc != 0, "%s accepted (want \"%s\")", dir, want1);
    CHECK(rc != 0 && contains(err.msg, want1) && (!want2 || contains(err.msg, want2)), "got \"%s\", want \"%s\" %s",
          err.msg, want1, want2 ? want2 : "");
    CHECK(access(out, F_OK) != 0, "a refused conversion left %s behind", out);
}

/* Replaces the first `from` in a file's bytes with `to` (same length). */
static int patch_bytes(const char *path, const char *from, const char *to) {
    char *data;
    size_t n;
    BlvError err;
    if (blv_read_file(path, &data, &n, &err) != 0) return -1;
    char *at = memmem(data, n, from, strlen(from));
    if (at) memcpy(at, to, strlen(to));
    int rc = at ? write_file(path, data, n) : -1;
    free(data);
    return rc;
}

static void test_hf_vision_errors(void) {
    const char *model[] = {"model.safetensors"};
    char path[4200];

    /* defaults fill what config.json leaves out: converts */
    const char *dir = tmp_dir("hf-minimal");
    copy_fixture("siglip_f32", dir, model, 1);
    write_text(dir, "config.json", config_minimal);
    BlvError err = {{0}};
    snprintf(path, sizeof path, "%s", test_tmp("hf-minimal.gguf"));
    CHECK(convert(dir, NULL, path, TYPE_F32, NULL, &err) == 0, "minimal config: %s", err.msg);

    /* config.json says something the checkpoint does not hold */
    dir = tmp_dir("hf-shape");
    copy_fixture("siglip_f32", dir, model, 1);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"hidden_size\": 32, \"image_size\": 52, "
                                   "\"intermediate_size\": 100, \"num_attention_heads\": 4, \"num_hidden_layers\": 3, "
                                   "\"patch_size\": 7}");
    expect_refused(dir, NULL, "hf-shape/model.safetensors: tensor encoder.layers.0.mlp.fc1.weight has shape [86, 32], "
                              "config.json says [100, 32]", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"hidden_size\": 32, \"image_size\": 52, "
                                   "\"intermediate_size\": 86, \"num_attention_heads\": 4, \"num_hidden_layers\": 6, "
                                   "\"patch_size\": 7}");
    expect_refused(dir, NULL, "tensor encoder.layers.3.layer_norm1.weight is missing", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"hidden_size\": 32, \"image_size\": 56, "
                                   "\"intermediate_size\": 86, \"num_attention_heads\": 4, \"num_hidden_layers\": 3, "
                                   "\"patch_size\": 7}");
    expect_refused(dir, NULL,
                   "tensor embeddings.position_embedding.weight has shape [49, 32], config.json says [64, 32]", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"hidden_size\": \"32\"}");
    expect_refused(dir, NULL, "hf-shape/config.json:1:54: \"hidden_size\" must be an integer, got string", NULL);
    write_text(dir, "config.json",
               "{\"model_type\": \"siglip_vision_model\",\n  \"hidden_size\": 32\n  \"patch_size\": 7}");
    expect_refused(dir, NULL, "config.json:3:3: expected ',' or '}' after object member", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"clip_vision_model\"}");
    expect_refused(dir, NULL, "model_type \"clip_vision_model\" is not a SigLIP vision model", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip\"}");
    expect_refused(dir, NULL, "model_type \"siglip\" needs a \"vision_config\" object", NULL);
    write_text(dir, "config.json", "{\"hidden_size\": 32}");
    expect_refused(dir, NULL, "\"model_type\" is missing", NULL);
    write_text(dir, "config.json",
               "{\"model_type\": \"siglip_vision_model\", \"hidden_size\": 30, \"num_attention_heads\": 4}");
    expect_refused(dir, NULL, "hidden_size 30 is not a multiple of num_attention_heads 4", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"hidden_act\": \"quick_gelu\"}");
    expect_refused(dir, NULL, "hidden_act \"quick_gelu\" is not supported", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"num_channels\": 1}");
    expect_refused(dir, NULL, "num_channels = 1", NULL);
    write_text(dir, "config.json", "{\"model_type\": \"siglip_vision_model\", \"num_hidden_layers\": 1}");
    expect_refused(dir, NULL, "leaves no layer once the last is dropped", NULL);
    write_text(dir, "config.json", config_minimal);
    write_text(dir, "preprocessor_config.json", "{\"image_mean\": [0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5]}");
    expect_refused(dir, NULL, "preprocessor_config.json:1:16: \"image_mean\" must be an array of 3 numbers", NULL);
    write_text(dir, "preprocessor_config.json", "{\"image_mean\": 0.5, \"image_std\": [0.5, 0, 0.5]}");
    expect_refused(dir, NULL, "image_std[1] = 0 must be positive", NULL);
    write_text(dir, "preprocessor_config.json", "{}");
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    expect_refused(dir, NULL, "hf-shape/config.json: cannot open", NULL);
    write_text(dir, "config.json", config_minimal);

    /* a dtype the converter cannot read; a dtype nobody knows (same byte sizes, so only the name differs) */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(patch_bytes(path, "\"embeddings.patch_embedding.weight\":{\"dtype\":\"F32\"",
                      "\"embeddings.patch_embedding.weight\":{\"dtype\":\"I32\"") == 0, "patch");
    expect_refused(dir, NULL, "tensor embeddings.patch_embedding.weight has dtype I32, which is not a weight type",
                   NULL);
    CHECK(patch_bytes(path, "{\"dtype\":\"I32\"", "{\"dtype\":\"X32\"") == 0, "patch");
    expect_refused(dir, NULL,
                   "tensor embeddings.patch_embedding.weight has dtype \"X32\", which this reader does not know", NULL);
    /* a truncated safetensors header */
    char *data;
    size_t n;
    CHECK(blv_read_file(test_data("hfio/siglip_f32/model.safetensors"), &data, &n, &err) == 0, "%s", err.msg);
    CHECK(data && write_file(path, data, 2000) == 0, "write");
    free(data);
    expect_refused(dir, NULL, "hf-shape/model.safetensors: header length 5224 runs past the end of the file", NULL);

    /* a missing shard */
    dir = tmp_dir("hf-missing-shard");
    const char *shards[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                            "model-00003-of-00003.safetensors"};
    copy_fixture("siglip_bf16_sharded", dir, shards, 4);
    expect_refused(dir, NULL, "shard model-00002-of-00003.safetensors", "No such file");

    /* not a vision checkpoint at all */
    dir = tmp_dir("hf-not-vision");
    const char *st_files[] = {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                              "model-00002-of-00002.safetensors"};
    copy_fixture("st_sharded", dir, st_files, 3);
    write_text(dir, "config.json", config_minimal);
    expect_refused(dir, NULL, "no tensor named ...embeddings.patch_embedding.weight", NULL);

    /* projectors that are not VILA's mlp_downsample, or do not fit the vision tower */
    expect_refused("hfio/siglip_f32", "hfio/st_sharded", "no tensor layers.1.weight", NULL);
    dir = tmp_dir("proj-type");
    const char *pfiles[] = {"model.safetensors"};
    copy_fixture("mm_projector", dir, pfiles, 1);
    write_text(dir, "config.json", "{\"mm_projector_type\": \"mlp2x_gelu\"}");
    expect_refused("hfio/siglip_f32", dir, "mm_projector_type is \"mlp2x_gelu\"", NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(write_st(path,
                   "{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"layers.1.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   8) == 0,
          "write");
    write_text(dir, "config.json", "{}");
    expect_refused("hfio/siglip_f32", dir, "has layers.0.weight, so it is not VILA's mlp_downsample projector", NULL);
    CHECK(write_st(path,
                   "{\"layers.1.weight\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]},"
                   "\"layers.1.bias\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[256,512]},"
                   "\"layers.2.weight\":{\"dtype\":\"F32\",\"shape\":[8,64],\"data_offsets\":[512,2560]}}",
                   2560) == 0,
          "write");
    expect_refused("hfio/siglip_f32", dir,
                   "tensor layers.1.weight has shape [64], the vision tower's hidden size says [128]", NULL);
    expect_refused("hfio/siglip_f32", test_tmp("no-such-projector.safetensors"),
                   "no-such-projector.safetensors: cannot open", NULL);
}

/* PyPI gguf (an independent reader) reads the converted file and sees the spec's keys and tensors. */
static void test_hf_vision_pypi(void) {
    const char *env = getenv("BLUELMV_PYTHON_CHECKS");
    if (!env || strcmp(env, "1") != 0) {
        test_note("skipped: set BLUELMV_PYTHON_CHECKS=1 to check with PyPI gguf");
        return;
    }
    char out[4096], json[4096], cmd[9000];
    snprintf(out, sizeof out, "%s", test_tmp("hf-pypi.gguf"));
    snprintf(json, sizeof json, "%s", test_tmp("hf-pypi.json"));
    BlvError err;
    CHECK(convert("hfio/siglip_f32", "hfio/mm_projector", out, TYPE_Q8_0, NULL, &err) == 0, "%s", err.msg);
    FILE *fp = fopen(json, "w");
    if (!fp) {
        CHECK(0, "cannot write %s", json);
        return;
    }
    fprintf(fp, "{\"kv\": {\"general.architecture\": {\"type\": \"string\", \"value\": \"clip\"},\n"
                "\"clip.has_vision_encoder\": {\"type\": \"bool\", \"value\": true},\n"
                "\"clip.projector_type\": {\"type\": \"string\", \"value\": \"bluelmv\"},\n"
                "\"clip.vision.image_size\": {\"type\": \"u32\", \"value\": 52},\n"
                "\"clip.vision.patch_size\": {\"type\": \"u32\", \"value\": 7},\n"
                "\"clip.vision.embedding_length\": {\"type\": \"u32\", \"value\": 32},\n"
                "\"clip.vision.feed_forward_length\": {\"type\": \"u32\", \"value\": 86},\n"
                "\"clip.vision.block_count\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"clip.vision.attention.head_count\": {\"type\": \"u32\", \"value\": 4},\n"
                "\"clip.vision.attention.layer_norm_epsilon\": {\"type\": \"f32\", \"value\": 1e-6},\n"
                "\"clip.vision.image_mean\": {\"type\": \"array[f32]\", \"value\": [0.5, 0.5, 0.5]},\n"
                "\"clip.vision.image_std\": {\"type\": \"array[f32]\", \"value\": [0.5, 0.5, 0.5]},\n"
                "\"clip.vision.projection_dim\": {\"type\": \"u32\", \"value\": 64},\n"
                "\"clip.vision.projector.scale_factor\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"clip.use_gelu\": {\"type\": \"bool\", \"value\": true},\n"
                "\"bluelmv.merge.order\": {\"type\": \"string\", \"value\": \"vila\"},\n"
                "\"bluelmv.vision.post_ln\": {\"type\": \"bool\", \"value\": false},\n"
                "\"bluelmv.projector.layer_norm_epsilon\": {\"type\": \"f32\", \"value\": 1e-5},\n"
                "\"bluelmv.tiling.algo\": {\"type\": \"string\", \"value\": \"relaxed\"},\n"
                "\"bluelmv.tiling.max_grid\": {\"type\": \"u32\", \"value\": 4},\n"
                "\"bluelmv.tiling.alpha\": {\"type\": \"f32\", \"value\": 0.1},\n"
                "\"bluelmv.tiling.thumbnail\": {\"type\": \"bool\", \"value\": true}},\n \"tensors\": [");
    /* the tensor list as our reader sees it (checked against the spec by the tests above) */
    GgufFile g;
    if (gguf_open(&g, out, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        fclose(fp);
        return;
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const GgufTensor *t = &g.tensors[i];
        fprintf(fp, "%s{\"name\": \"%.*s\", \"shape\": [%lld", i ? ", " : "", (int)t->name.len, t->name.ptr,
                (long long)t->ne[0]);
        for (uint32_t k = 1; k < t->n_dims; k++) fprintf(fp, ", %lld", (long long)t->ne[k]);
        fprintf(fp, "], \"type\": \"%s\"}", type_name((int)t->type));
    }
    CHECK(g.n_tensors == 3 + 2 * 16 + 6, "%lld tensors", (long long)g.n_tensors);
    gguf_close(&g);
    fprintf(fp, "]}\n");
    fclose(fp);
    snprintf(cmd, sizeof cmd, "python3 tools/check_gguf.py %s --expect-json %s", out, json);
    char *o = NULL, *e = NULL;
    int rc = test_run_command(cmd, &o, &e);
    CHECK(rc == 0, "check_gguf.py failed (%d): %s\n%s", rc, e ? e : "", o ? o : "");
    free(o);
    free(e);
}

/* ---- the converted model against transformers ---------------------------------------------------- */

typedef struct {
    float *vit_out;   /* (n_patches, D) as vit.c dumps "vit_out" */
    float *patch;     /* "patch_embed" */
} Dumps;

static void on_dump(void *user, const char *stage, int64_t tile0, int64_t n_tiles, int64_t rows, int64_t cols,
                    const float *data) {
    Dumps *d = user;
    if (tile0 != 0 || n_tiles < 1) return;
    float **slot = strcmp(stage, "vit_out") == 0 ? &d->vit_out : strcmp(stage, "patch_embed") == 0 ? &d->patch : NULL;
    if (!slot) return;
    free(*slot);
    *slot = malloc((size_t)(rows * cols) * sizeof(float));
    memcpy(*slot, data, (size_t)(rows * cols) * sizeof(float));
}

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const float *b, int64_t n) {
    double worst = 0, scale = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return worst / scale;
}

static void run_golden(int type, const HfVisionOptions *opt, const char *ref_stage, double tol_vit, double tol_out) {
    char out[4096];
    snprintf(out, sizeof out, "%s", test_tmp("hf-golden.gguf"));
    BlvError err = {{0}};
    if (convert("hfio/siglip_f32", "hfio/mm_projector", out, type, opt, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    SafeTensors gold;
    GgufFile g;
    if (st_open(&gold, test_data("hfio/vit_golden.safetensors"), &err) != 0 || gguf_open(&g, out, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    Vit v;
    VitOptions vo = {.n_threads = 2, .batch = 1, .merge_order = -1, .attn_type = -1};
    Dumps d = {NULL, NULL};
    if (vit_init(&v, &g, &vo, &err) != 0) {
        CHECK(0, "vit_init: %s", err.msg);
    } else {
        v.dump = on_dump;
        v.dump_user = &d;
        const StTensor *px = st_find(&gold, "pixel_values"), *emb = st_find(&gold, "image_embeds");
        const StTensor *ref = st_find(&gold, ref_stage), *pe = st_find(&gold, "patch_embed");
        float *pixels = malloc((size_t)px->n_elements * sizeof(float));
        float *want = malloc((size_t)emb->n_elements * sizeof(float));
        float *want_vit = malloc((size_t)ref->n_elements * sizeof(float));
        float *want_pe = malloc((size_t)pe->n_elements * sizeof(float));
        float *got = malloc((size_t)emb->n_elements * sizeof(float));
        CHECK(st_read_f32(&gold, px, pixels, &err) == 0 && st_read_f32(&gold, emb, want, &err) == 0 &&
                  st_read_f32(&gold, ref, want_vit, &err) == 0 && st_read_f32(&gold, pe, want_pe, &err) == 0,
              "%s", err.msg);
        CHECK(vit_encode(&v, pixels, 1, got, &err) == 0, "vit_encode: %s", err.msg);
        CHECK(d.patch && d.vit_out, "no dumps");
        if (d.patch && d.vit_out) {
            double e_pe = rel_err(d.patch, want_pe, pe->n_elements);
            double e_vit = rel_err(d.vit_out, want_vit, ref->n_elements);
            double e_out = rel_err(got, want, emb->n_elements);
            if (opt && opt->post_ln)
                test_note("%s, all layers + post-LN: patch_embed %.2e, %s %.2e (max abs error / max abs value)",
                          type_name(type), e_pe, ref_stage, e_vit);
            else
                test_note("%s: patch_embed %.2e, %s %.2e, image_embeds %.2e (max abs error / max abs value)",
                          type_name(type), e_pe, ref_stage, e_vit, e_out);
            CHECK(e_pe < tol_vit, "patch_embed error %g", e_pe);
            CHECK(e_vit < tol_vit, "%s error %g", ref_stage, e_vit);
            /* the golden image_embeds follow the select layer; with post-LN only the ViT is compared */
            if (!(opt && opt->post_ln)) CHECK(e_out < tol_out, "image_embeds error %g", e_out);
        }
        free(pixels);
        free(want);
        free(want_vit);
        free(want_pe);
        free(got);
        vit_free(&v);
    }
    free(d.vit_out);
    free(d.patch);
    gguf_close(&g);
    st_close(&gold);
}

static void test_hf_vision_matches_transformers(void) {
    HfVisionOptions post = {1, 1};
    run_golden(TYPE_F32, NULL, "select_layer", 1e-5, 1e-5);
    run_golden(TYPE_F32, &post, "last_hidden_state", 1e-5, 0);
    run_golden(TYPE_Q8_0, NULL, "select_layer", 3e-2, 3e-2);
}

void suite_hfio(void) {
    RUN_TEST(test_json_valid);
    RUN_TEST(test_json_errors);
    RUN_TEST(test_json_fuzz);
    RUN_TEST(test_st_dtypes);
    RUN_TEST(test_st_sharded);
    RUN_TEST(test_st_corrupt);
    RUN_TEST(test_hf_vision_f32);
    RUN_TEST(test_hf_vision_q8_0);
    RUN_TEST(test_hf_vision_f16_q4_0);
    RUN_TEST(test_hf_vision_options);
    RUN_TEST(test_hf_vision_sources_agree);
    RUN_TEST(test_hf_vision_errors);
    RUN_TEST(test_hf_vision_pypi);
    RUN_TEST(test_hf_vision_matches_transformers);
}
