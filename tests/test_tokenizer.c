/* tests/test_tokenizer.c — the SentencePiece tokenizer against llama.cpp's own expectations
 * (tests/data/vocab/ggml-vocab-*.gguf with .inp/.out, made by llama.cpp's tests), hand-checked
 * facts, special-token parsing, malformed vocabularies, fuzzing and speed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "test.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* ---- helpers -------------------------------------------------------------------------------- */

/* Loads a tokenizer from a GGUF file and closes the file again (the tokenizer keeps copies). */
static int load_vocab_file(const char *path, Tokenizer *t, BlvError *err) {
    GgufFile f;
    if (gguf_open(&f, path, 1, err) != 0) return -1;
    int rc = tokenizer_load(t, &f, err);
    gguf_close(&f);
    return rc;
}

/* Encodes into a malloc'd array; *n = count, or -1 on error (message in err). */
static int32_t *encode(const Tokenizer *t, const char *text, size_t len, int add_bos, int parse_special, int64_t *n,
                       BlvError *err) {
    *n = tokenizer_encode(t, text, len, add_bos, parse_special, NULL, 0, err);
    if (*n < 0) return NULL;
    int32_t *ids = malloc((size_t)(*n ? *n : 1) * sizeof(int32_t));
    int64_t again = tokenizer_encode(t, text, len, add_bos, parse_special, ids, *n, err);
    if (again != *n) *n = -1;
    return ids;
}

/* Decodes into a malloc'd NUL-terminated string. */
static char *decode(const Tokenizer *t, const int32_t *ids, int64_t n, size_t *len) {
    int64_t need = tokenizer_decode(t, ids, n, NULL, 0);
    char *buf = malloc((size_t)need + 1);
    int64_t got = tokenizer_decode(t, ids, n, buf, (size_t)need);
    *len = (size_t)(got < need ? got : need);
    buf[*len] = 0;
    return buf;
}

/* Writes len bytes as a C string literal body into out (for messages). */
static void escape(const char *s, size_t len, char *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') n += (size_t)snprintf(out + n, cap - n, "\\n");
        else if (c == '\t') n += (size_t)snprintf(out + n, cap - n, "\\t");
        else if (c == '"' || c == '\\') n += (size_t)snprintf(out + n, cap - n, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f) n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        else out[n++] = (char)c;
    }
    out[n] = 0;
}

static void format_ids(const int32_t *ids, int64_t n, char *out, size_t cap) {
    size_t used = 0;
    out[0] = 0;
    for (int64_t i = 0; i < n && used + 16 < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%d", i ? " " : "", ids[i]);
}

static int ids_equal(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    if (na != nb) return 0;
    for (int64_t i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Checks that text encodes (no BOS, no special parsing) to exactly the given ids. */
static void check_encoding(const Tokenizer *t, const char *text, const int32_t *want, int64_t n_want) {
    BlvError err = {{0}};
    int64_t n;
    int32_t *got = encode(t, text, strlen(text), 0, 0, &n, &err);
    char esc[256], sw[256], sg[256];
    escape(text, strlen(text), esc, sizeof esc);
    format_ids(want, n_want, sw, sizeof sw);
    if (n < 0) {
        CHECK(0, "\"%s\": encode failed: %s", esc, err.msg);
    } else {
        format_ids(got, n, sg, sizeof sg);
        CHECK(ids_equal(got, n, want, n_want), "\"%s\": expected [%s], got [%s]", esc, sw, sg);
    }
    free(got);
}

/* ---- llama.cpp's test-tokenizer-0 data ------------------------------------------------------- */

/* The .inp file: test strings each followed by "\n__ggml_vocab_test__\n"; the .out file: one line of
 * space-separated ids per test. llama.cpp's test-tokenizer-0 encodes with add_special = false and
 * parse_special = false. */
static void run_vocab_tests(const char *name) {
    char path[4096], inp_path[4200], out_path[4200];
    snprintf(path, sizeof path, "%s", test_data(name));
    snprintf(inp_path, sizeof inp_path, "%s.inp", path);
    snprintf(out_path, sizeof out_path, "%s.out", path);

    BlvError err = {{0}};
    Tokenizer t;
    if (load_vocab_file(path, &t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    char *inp = NULL, *out = NULL;
    size_t inp_len = 0, out_len = 0;
    if (blv_read_file(inp_path, &inp, &inp_len, &err) != 0 || blv_read_file(out_path, &out, &out_len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        free(inp);
        free(out);
        tokenizer_free(&t);
        return;
    }

    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t sep_len = strlen(sep);
    int n_tests = 0, n_encoded_ok = 0, n_decoded_ok = 0;
    size_t ipos = 0;
    char *line = out;
    while (ipos < inp_len) {
        char *next = memmem(inp + ipos, inp_len - ipos, sep, sep_len);
        if (!next) {
            CHECK(0, "%s: test %d is not followed by the separator", inp_path, n_tests);
            break;
        }
        const char *text = inp + ipos;
        size_t text_len = (size_t)(next - text);
        ipos = (size_t)(next - inp) + sep_len;

        /* the expected ids: one line of the .out file */
        if (!line || !*line) {
            CHECK(0, "%s: has fewer lines than %s has tests", out_path, inp_path);
            break;
        }
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        int32_t want[1024];
        int64_t n_want = 0;
        for (char *p = line, *end; n_want < 1024; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            want[n_want++] = (int32_t)v;
        }
        line = eol ? eol + 1 : NULL;

        char esc[1024], sw[4096], sg[4096];
        escape(text, text_len, esc, sizeof esc);
        format_ids(want, n_want, sw, sizeof sw);
        int64_t n_got;
        int32_t *got = encode(&t, text, text_len, 0, 0, &n_got, &err);
        if (n_got < 0) {
            CHECK(0, "%s test %d \"%s\": encode failed: %s", name, n_tests, esc, err.msg);
        } else {
            format_ids(got, n_got, sg, sizeof sg);
            int same = ids_equal(got, n_got, want, n_want);
            CHECK(same, "%s test %d \"%s\":\n    expected %s\n    got      %s", name, n_tests, esc, sw, sg);
            n_encoded_ok += same;
        }
        free(got);

        /* Decoding drops exactly the dummy-prefix space, so every input round-trips unless it holds a
         * literal U+2581 (which encodes like a space and decodes as one); these inputs have none. */
        size_t dec_len;
        char *dec = decode(&t, want, n_want, &dec_len);
        int round_trips = dec_len == text_len && memcmp(dec, text, text_len) == 0;
        char edec[1024];
        escape(dec, dec_len, edec, sizeof edec);
        CHECK(round_trips, "%s test %d: decode(expected ids) = \"%s\", input \"%s\"", name, n_tests, edec, esc);
        n_decoded_ok += round_trips;
        free(dec);
        n_tests++;
    }
    CHECK(n_tests == 46, "%s: expected 46 tests, found %d", inp_path, n_tests);
    test_note("%s: %d/%d encodings match llama.cpp, %d/%d decode back to the input", name, n_encoded_ok, n_tests,
              n_decoded_ok, n_tests);
    free(inp);
    free(out);
    tokenizer_free(&t);
}

static void test_llama_spm_vocab(void) { run_vocab_tests("vocab/ggml-vocab-llama-spm.gguf"); }
static void test_phi3_vocab(void) { run_vocab_tests("vocab/ggml-vocab-phi-3.gguf"); }

/* ---- hand-checked facts (SOURCES.md) --------------------------------------------------------- */

static void test_llama_spm_facts(void) {
    BlvError err = {{0}};
    Tokenizer t;
    if (load_vocab_file(test_data("vocab/ggml-vocab-llama-spm.gguf"), &t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    CHECK(t.n_vocab == 32000, "n_vocab %d", t.n_vocab);
    CHECK(t.bos_id == 1 && t.eos_id == 2 && t.unk_id == 0 && t.pad_id == -1, "bos %d eos %d unk %d pad %d", t.bos_id,
          t.eos_id, t.unk_id, t.pad_id);
    CHECK(t.add_bos == 1 && t.add_eos == 0 && t.add_space_prefix == 1, "add_bos %d add_eos %d add_space_prefix %d",
          t.add_bos, t.add_eos, t.add_space_prefix);
    CHECK(t.byte_ids[0] == 3 && t.byte_ids['\n'] == 13 && t.byte_ids[255] == 258, "byte ids %d %d %d", t.byte_ids[0],
          t.byte_ids['\n'], t.byte_ids[255]);
    CHECK(tokenizer_find(&t, "\xe2\x96\x81Hello", 8) == 15043, "find ▁Hello");
    CHECK(tokenizer_find(&t, "Hello", 5) != 15043, "find Hello");
    CHECK(tokenizer_find(&t, "no such piece at all", 20) == -1, "find missing");

    check_encoding(&t, "Hello world", (const int32_t[]){15043, 3186}, 2);
    check_encoding(&t, " Hello world", (const int32_t[]){29871, 15043, 3186}, 3);
    check_encoding(&t, "\n", (const int32_t[]){29871, 13}, 2);
    check_encoding(&t, "", NULL, 0);

    /* BOS with add_bos; none without */
    int64_t n;
    int32_t *ids = encode(&t, "Hello world", 11, 1, 0, &n, &err);
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186, "with BOS: n=%lld", (long long)n);
    free(ids);
    ids = encode(&t, "", 0, 1, 0, &n, &err);
    CHECK(n == 1 && ids[0] == 1, "empty text with BOS: n=%lld", (long long)n);
    free(ids);

    /* a small output buffer: the count is still the full one, the buffer holds the first ids */
    int32_t small[2] = {-7, -7};
    n = tokenizer_encode(&t, " Hello world", 12, 1, 0, small, 1, &err);
    CHECK(n == 4 && small[0] == 1 && small[1] == -7, "truncated: n=%lld [%d %d]", (long long)n, small[0], small[1]);

    /* decoding one token: the dummy-prefix space goes after BOS or at the start only */
    char buf[64];
    int len = tokenizer_decode_token(&t, 1, 15043, buf, sizeof buf);
    CHECK(len == 5 && memcmp(buf, "Hello", 5) == 0, "after BOS: %d '%.*s'", len, len, buf);
    len = tokenizer_decode_token(&t, -1, 15043, buf, sizeof buf);
    CHECK(len == 5 && memcmp(buf, "Hello", 5) == 0, "at start: %d '%.*s'", len, len, buf);
    len = tokenizer_decode_token(&t, 3186, 15043, buf, sizeof buf);
    CHECK(len == 6 && memcmp(buf, " Hello", 6) == 0, "mid-text: %d '%.*s'", len, len, buf);
    len = tokenizer_decode_token(&t, 15043, 13, buf, sizeof buf);
    CHECK(len == 1 && buf[0] == '\n', "byte token <0x0A>: %d", len);
    len = tokenizer_decode_token(&t, 15043, 1, buf, sizeof buf);
    CHECK(len == 0, "BOS decodes to nothing: %d", len);
    len = tokenizer_decode_token(&t, 15043, 0, buf, sizeof buf);
    CHECK(len == 0, "<unk> decodes to nothing: %d", len);
    len = tokenizer_decode_token(&t, 15043, 3186, buf, 3);
    CHECK(len == 3 && memcmp(buf, " wo", 3) == 0, "cut to cap: %d '%.*s'", len, len, buf);
    CHECK(tokenizer_decode_token(&t, -1, -5, buf, sizeof buf) == 0, "bad id");
    CHECK(tokenizer_decode_token(&t, -1, 32000, buf, sizeof buf) == 0, "id past the vocabulary");

    /* NUL bytes and invalid UTF-8 go out as byte tokens */
    ids = encode(&t, "a\0b", 3, 0, 0, &n, &err);
    int has_nul = 0;
    for (int64_t i = 0; i < n; i++) has_nul |= ids[i] == 3;
    CHECK(n > 0 && has_nul, "NUL becomes <0x00>: n=%lld", (long long)n);
    size_t dlen;
    char *dec = decode(&t, ids, n, &dlen);
    CHECK(dlen == 3 && memcmp(dec, "a\0b", 3) == 0, "NUL round trip: %zu", dlen);
    free(dec);
    free(ids);
    /* a lead byte promising more bytes than remain is clipped: <0xE2> <0x96> */
    check_encoding(&t, "\xe2\x96", (const int32_t[]){29871, 3 + 0xE2, 3 + 0x96}, 3);
    /* a literal U+2581 is the same as a space (the one input that does not round-trip) */
    check_encoding(&t, "\xe2\x96\x81Hello", (const int32_t[]){29871, 15043}, 2);
    tokenizer_free(&t);
}

/* ---- special tokens ------------------------------------------------------------------------- */

static int contains_id(const int32_t *ids, int64_t n, int32_t id) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

static void test_special_tokens(void) {
    BlvError err = {{0}};
    Tokenizer t;
    if (load_vocab_file(test_data("vocab/ggml-vocab-phi-3.gguf"), &t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    CHECK(t.n_vocab == 32064 && t.eos_id == 32000 && t.bos_id == 1, "n_vocab %d eos %d bos %d", t.n_vocab, t.eos_id,
          t.bos_id);
    int32_t user = tokenizer_find(&t, "<|user|>", 8);
    int32_t end = tokenizer_find(&t, "<|end|>", 7);
    int32_t endoftext = tokenizer_find(&t, "<|endoftext|>", 13);
    CHECK(user >= 32000 && end >= 32000 && endoftext == 32000, "ids: user %d end %d endoftext %d", user, end,
          endoftext);

    int64_t n;
    int32_t *ids = encode(&t, "<|user|>", 8, 0, 1, &n, &err);
    CHECK(n == 1 && ids[0] == user, "<|user|> with parse_special: n=%lld first %d", (long long)n, n > 0 ? ids[0] : -1);
    free(ids);
    ids = encode(&t, "<|user|>", 8, 0, 0, &n, &err);
    CHECK(n > 1 && !contains_id(ids, n, user), "<|user|> without parse_special: n=%lld", (long long)n);
    /* without parsing, the special text is ordinary text and comes back unchanged */
    size_t dlen;
    char *dec = decode(&t, ids, n, &dlen);
    CHECK(dlen == 8 && memcmp(dec, "<|user|>", 8) == 0, "decoded '%s'", dec);
    free(dec);
    free(ids);

    /* a chat turn: llama.cpp gives Phi-3's special tokens rstrip, so the newline after them goes;
     * the text after a special token gets the dummy-prefix space again */
    const char *chat = "<|user|>\nHello<|end|>\n<|assistant|>";
    int32_t assistant = tokenizer_find(&t, "<|assistant|>", 13);
    ids = encode(&t, chat, strlen(chat), 1, 1, &n, &err);
    int32_t want[] = {1, user, 15043, end, assistant};
    char sg[256];
    format_ids(ids, n, sg, sizeof sg);
    CHECK(ids_equal(ids, n, want, 5), "chat turn: got [%s]", sg);
    free(ids);

    /* end of generation: EOS and <|end|>, which llama.cpp treats as control tokens */
    CHECK(tokenizer_is_eog(&t, 32000) && tokenizer_is_eog(&t, end) && !tokenizer_is_eog(&t, 15043) &&
              !tokenizer_is_eog(&t, user) && !tokenizer_is_eog(&t, -1) && !tokenizer_is_eog(&t, 99999),
          "is_eog");
    /* "</s>" is user-defined in this file; llama.cpp promotes it to control (an end-of-generation text) */
    int32_t eos_text = tokenizer_find(&t, "</s>", 4);
    CHECK(eos_text == 2 && t.types[2] == TOKEN_TYPE_CONTROL, "</s> id %d type %d", eos_text, t.types[2]);
    char buf[32];
    CHECK(tokenizer_decode_token(&t, 15043, user, buf, sizeof buf) == 0, "control tokens decode to nothing");
    tokenizer_free(&t);

    /* the Llama vocabulary: BOS/EOS texts only with parse_special */
    if (load_vocab_file(test_data("vocab/ggml-vocab-llama-spm.gguf"), &t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    ids = encode(&t, "<s>Hello</s>", 12, 0, 1, &n, &err);
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 2, "<s>Hello</s>: n=%lld", (long long)n);
    free(ids);
    ids = encode(&t, "Hello<s> world", 14, 0, 1, &n, &err);
    format_ids(ids, n, sg, sizeof sg);
    /* no rstrip here: " world" keeps its space and also gets the dummy prefix after <s> */
    int32_t want2[] = {15043, 1, 29871, 3186};
    CHECK(ids_equal(ids, n, want2, 4), "Hello<s> world: [%s]", sg);
    free(ids);
    ids = encode(&t, "<s>Hello</s>", 12, 0, 0, &n, &err);
    CHECK(n > 3 && !contains_id(ids, n, 1) && !contains_id(ids, n, 2), "<s>Hello</s> unparsed: n=%lld", (long long)n);
    free(ids);
    ids = encode(&t, "<unk>", 5, 0, 1, &n, &err);
    CHECK(n == 1 && ids[0] == 0, "<unk> parsed: n=%lld", (long long)n);
    free(ids);
    tokenizer_free(&t);
}

/* ---- small hand-made vocabularies ------------------------------------------------------------ */

typedef struct {
    const char *model;        /* NULL: no tokenizer.ggml.model */
    int with_bytes;           /* add <0x00>..<0xFF> */
    int omit;                 /* 1 tokens, 2 scores, 3 token_type */
    int short_array;          /* 2 scores, 3 token_type one element short */
    int wrong_type;           /* 1 tokens as i32, 2 scores as strings, 3 token_type as f32 */
    int64_t bos;              /* -1: no key */
    int64_t unk;              /* -1: no key */
    int add_space_prefix;     /* -1: no key */
    int duplicate;            /* add a second "a" */
} VocabSpec;

static const VocabSpec DEFAULT_SPEC = {"llama", 1, 0, 0, 0, 1, 0, -1, 0};

/* <unk> <s> </s> [bytes] then normal pieces with scores. Returns 0 if the file was written. */
static int write_vocab(const char *path, const VocabSpec *spec) {
    static const struct {
        const char *text;
        float score;
    } normal[] = {
        {"\xe2\x96\x81", -1}, {"a", -2}, {"b", -3}, {"c", -4}, {"aa", -5},  {"ab", -6},
        {"bc", -5.5f},        {"abc", -7}, {"\xe2\x96\x81" "a", -8}, {"x", -9}, {"y", -10},
    };
    size_t n_normal = sizeof normal / sizeof normal[0];
    size_t cap = 3 + 256 + n_normal + 1;
    const char **texts = calloc(cap, sizeof *texts);
    char (*bytes)[8] = calloc(256, 8);
    float *scores = calloc(cap, sizeof(float));
    int32_t *types = calloc(cap, sizeof(int32_t));
    size_t n = 0;
    texts[n] = "<unk>", types[n++] = TOKEN_TYPE_UNKNOWN;
    texts[n] = "<s>", types[n++] = TOKEN_TYPE_CONTROL;
    texts[n] = "</s>", types[n++] = TOKEN_TYPE_CONTROL;
    for (int b = 0; spec->with_bytes && b < 256; b++) {
        snprintf(bytes[b], 8, "<0x%02X>", b);
        texts[n] = bytes[b], types[n++] = TOKEN_TYPE_BYTE;
    }
    for (size_t i = 0; i < n_normal; i++) texts[n] = normal[i].text, scores[n] = normal[i].score, types[n++] = TOKEN_TYPE_NORMAL;
    if (spec->duplicate) texts[n] = "a", types[n++] = TOKEN_TYPE_NORMAL;

    BlvError err = {{0}};
    GgufWriter *w = gguf_writer_new(&err);
    int rc = w ? 0 : -1;
    if (w) {
        if (spec->model) gguf_set_string(w, "tokenizer.ggml.model", spec->model);
        if (spec->omit != 1) {
            if (spec->wrong_type == 1) gguf_set_array(w, "tokenizer.ggml.tokens", GGUF_TYPE_INT32, types, n);
            else gguf_set_string_array(w, "tokenizer.ggml.tokens", texts, NULL, n);
        }
        if (spec->omit != 2) {
            uint64_t count = spec->short_array == 2 ? n - 1 : n;
            if (spec->wrong_type == 2) gguf_set_string_array(w, "tokenizer.ggml.scores", texts, NULL, count);
            else gguf_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, count);
        }
        if (spec->omit != 3) {
            uint64_t count = spec->short_array == 3 ? n - 1 : n;
            if (spec->wrong_type == 3) gguf_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_FLOAT32, scores, count);
            else gguf_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, count);
        }
        if (spec->bos >= 0) gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)spec->bos);
        if (spec->unk >= 0) gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)spec->unk);
        if (spec->add_space_prefix >= 0) gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", spec->add_space_prefix);
        rc = gguf_writer_begin(w, path, &err);
        if (rc == 0) rc = gguf_writer_finish(w, &err);
        gguf_writer_free(w);
    }
    if (rc != 0) test_note("could not write %s: %s", path, err.msg);
    free(texts);
    free(bytes);
    free(scores);
    free(types);
    return rc;
}

/* Writes a vocabulary that must be refused; checks the message names the file and `what`. */
static void check_refused(const char *file, const VocabSpec *spec, const char *what) {
    const char *path = test_tmp(file);
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    if (write_vocab(p, spec) != 0) {
        CHECK(0, "could not write %s", p);
        return;
    }
    BlvError err = {{0}};
    Tokenizer t;
    int rc = load_vocab_file(p, &t, &err);
    CHECK(rc != 0, "%s: loaded although it lacks/breaks %s", file, what);
    if (rc == 0) {
        tokenizer_free(&t);
        return;
    }
    CHECK(strstr(err.msg, p) != NULL && strstr(err.msg, what) != NULL, "%s: message \"%s\" should name %s and %s", file,
          err.msg, p, what);
}

static void test_malformed_vocab(void) {
    VocabSpec s = DEFAULT_SPEC;
    s.omit = 1;
    check_refused("no_tokens.gguf", &s, "tokenizer.ggml.tokens");
    s = DEFAULT_SPEC, s.omit = 2;
    check_refused("no_scores.gguf", &s, "tokenizer.ggml.scores");
    s = DEFAULT_SPEC, s.omit = 3;
    check_refused("no_types.gguf", &s, "tokenizer.ggml.token_type");
    s = DEFAULT_SPEC, s.short_array = 2;
    check_refused("short_scores.gguf", &s, "tokenizer.ggml.scores");
    s = DEFAULT_SPEC, s.short_array = 3;
    check_refused("short_types.gguf", &s, "tokenizer.ggml.token_type");
    s = DEFAULT_SPEC, s.wrong_type = 1;
    check_refused("tokens_i32.gguf", &s, "tokenizer.ggml.tokens");
    s = DEFAULT_SPEC, s.wrong_type = 2;
    check_refused("scores_str.gguf", &s, "tokenizer.ggml.scores");
    s = DEFAULT_SPEC, s.wrong_type = 3;
    check_refused("types_f32.gguf", &s, "tokenizer.ggml.token_type");
    s = DEFAULT_SPEC, s.model = "gpt2";
    check_refused("gpt2.gguf", &s, "\"gpt2\"");
    s = DEFAULT_SPEC, s.model = NULL;
    check_refused("no_model.gguf", &s, "tokenizer.ggml.model");
    s = DEFAULT_SPEC, s.bos = 100000;
    check_refused("bos_range.gguf", &s, "tokenizer.ggml.bos_token_id");
    s = DEFAULT_SPEC, s.duplicate = 1;
    check_refused("duplicate.gguf", &s, "tokenizer.ggml.tokens");

    /* the exact wording for an unsupported tokenizer model */
    s = DEFAULT_SPEC, s.model = "gpt2";
    const char *path = test_tmp("vocab.gguf");
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    if (write_vocab(p, &s) == 0) {
        BlvError err = {{0}};
        Tokenizer t;
        CHECK(load_vocab_file(p, &t, &err) != 0, "gpt2 loaded");
        char want[4200];
        snprintf(want, sizeof want, "%s: tokenizer model \"gpt2\" is not supported (only SentencePiece \"llama\")", p);
        CHECK(strcmp(err.msg, want) == 0, "message \"%s\"", err.msg);
    }
}

/* Loads a hand-made vocabulary; ids of the normal pieces start after <unk> <s> </s> and the bytes. */
static int load_small(const VocabSpec *spec, const char *file, Tokenizer *t) {
    char p[4096];
    snprintf(p, sizeof p, "%s", test_tmp(file));
    if (write_vocab(p, spec) != 0) return -1;
    BlvError err = {{0}};
    if (load_vocab_file(p, t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    return 0;
}

static void test_merge_order(void) {
    VocabSpec s = DEFAULT_SPEC;
    s.add_space_prefix = 0;
    Tokenizer t;
    if (load_small(&s, "merge.gguf", &t) != 0) return;
    CHECK(t.add_space_prefix == 0 && t.unk_id == 0 && t.bos_id == 1 && t.eos_id == -1, "flags");
    int32_t base = 3 + 256; /* ▁ a b c aa ab bc abc ▁a x y */
    int32_t SP = base, A = base + 1, B = base + 2, C = base + 3, AA = base + 4, BC = base + 6, ABC = base + 7;
    int32_t SPA = base + 8;
    /* equal scores: the leftmost pair merges first */
    check_encoding(&t, "aaa", (const int32_t[]){AA, A}, 2);
    /* the higher score first: "aa" (-5) beats "ab" (-6), and "aa"+"b" is no piece */
    check_encoding(&t, "aab", (const int32_t[]){AA, B}, 2);
    /* "bc" (-5.5) beats "ab" (-6), then "a"+"bc" forms "abc" */
    check_encoding(&t, "abc", (const int32_t[]){ABC}, 1);
    check_encoding(&t, "abcbc", (const int32_t[]){ABC, BC}, 2);
    /* without the dummy prefix, a leading space is just "▁", which merges with what follows */
    check_encoding(&t, " a", (const int32_t[]){SPA}, 1);
    check_encoding(&t, "b a", (const int32_t[]){B, SPA}, 2);
    check_encoding(&t, "c  ", (const int32_t[]){C, SP, SP}, 3);
    /* not a piece: bytes */
    check_encoding(&t, "\xc3\xa9", (const int32_t[]){3 + 0xC3, 3 + 0xA9}, 2);
    /* decoding without a dummy prefix keeps leading spaces */
    char buf[16];
    int len = tokenizer_decode_token(&t, -1, SPA, buf, sizeof buf);
    CHECK(len == 2 && memcmp(buf, " a", 2) == 0, "no prefix to strip: %d", len);
    tokenizer_free(&t);

    /* no byte tokens: the unknown token stands for each byte; without one, encoding fails */
    s = DEFAULT_SPEC;
    s.with_bytes = 0;
    s.add_space_prefix = 0;
    if (load_small(&s, "nobytes.gguf", &t) != 0) return;
    CHECK(t.byte_ids[0] == -1, "no byte tokens");
    check_encoding(&t, "a\xc3\xa9", (const int32_t[]){4, 0, 0}, 3);
    tokenizer_free(&t);
    s.unk = -1;
    if (load_small(&s, "nobytes_nounk.gguf", &t) != 0) return;
    BlvError err = {{0}};
    int64_t n = tokenizer_encode(&t, "a\xc3\xa9", 3, 0, 0, NULL, 0, &err);
    CHECK(n == -1 && strstr(err.msg, "0xC3") != NULL, "unencodable byte: n=%lld '%s'", (long long)n, err.msg);
    n = tokenizer_encode(&t, "abc", 3, 0, 0, NULL, 0, &err);
    CHECK(n == 1, "encodable text still works: %lld", (long long)n);
    tokenizer_free(&t);
}

/* ---- fuzzing and speed ---------------------------------------------------------------------- */

static int has_space_mark(const char *s, size_t len) {
    for (size_t i = 0; i + 2 < len; i++)
        if ((unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) return 1;
    return 0;
}

/* 1 if every lead byte of a multi-byte UTF-8 sequence (0xC0 and up, by the tokenizer's rule of
 * length from the top four bits) is followed by all its continuation bytes. Otherwise the
 * tokenizer's character split can run over a following space after it became "▁": those bytes go
 * out as byte tokens and decode as a raw "▁", not as a space (as in llama.cpp). */
static int lead_bytes_complete(const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        for (size_t k = 1; k < n; k++)
            if (i + k >= len || ((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
        i += n;
    }
    return 1;
}

/* The text with every U+2581 replaced by a space (malloc'd; length in *out_len). */
static char *spaces_for_marks(const char *s, size_t len, size_t *out_len) {
    char *out = malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (has_space_mark(s + i, len - i < 3 ? len - i : 3)) {
            out[n++] = ' ';
            i += 3;
        } else {
            out[n++] = s[i++];
        }
    }
    *out_len = n;
    return out;
}

/* What decode(encode(text)) must give (without special parsing): the text itself when its lead
 * bytes are complete and it holds no literal U+2581 (which encodes like a space); in any case the
 * same text once every U+2581 on both sides is read as a space. */
static int round_trips(const char *text, size_t len, const char *dec, size_t dec_len) {
    if (lead_bytes_complete(text, len) && !has_space_mark(text, len))
        return dec_len == len && memcmp(dec, text, len) == 0;
    size_t a_len, b_len;
    char *a = spaces_for_marks(text, len, &a_len), *b = spaces_for_marks(dec, dec_len, &b_len);
    int same = a_len == b_len && memcmp(a, b, a_len) == 0;
    free(a);
    free(b);
    return same;
}

/* Random byte strings: mostly ASCII letters and spaces, with NULs, newlines, stray continuation
 * bytes, truncated and complete multi-byte sequences and special-token texts mixed in. */
static size_t random_text(uint64_t *rng, char *buf, size_t cap) {
    static const char *const bits[] = {" ", "  ", "\n", "\t", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\xa6\x99",
                                       "\xe2\x96", "\xf0", "\x80", "\xff", "<s>", "</s>", "<|user|>", "<unk>",
                                       "Hello", " world", "\xe2\x96\x81"};
    size_t len = (size_t)(test_rand_u64(rng) % 64), n = 0;
    while (n < len && n + 16 < cap) {
        uint64_t r = test_rand_u64(rng);
        switch (r % 4) {
        case 0: buf[n++] = (char)(r >> 8); break;                   /* any byte, NUL included */
        case 1: buf[n++] = (char)('a' + (r >> 8) % 26); break;
        default: {
            const char *b = bits[(r >> 8) % (sizeof bits / sizeof bits[0])];
            size_t bl = strlen(b);
            memcpy(buf + n, b, bl);
            n += bl;
        }
        }
    }
    return n;
}

static void fuzz_vocab(const char *name, int n_iter) {
    BlvError err = {{0}};
    Tokenizer t;
    if (load_vocab_file(test_data(name), &t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    uint64_t rng = 12345;
    char text[256];
    int n_round = 0, n_exact = 0, n_fail = 0;
    for (int it = 0; it < n_iter; it++) {
        size_t len = random_text(&rng, text, sizeof text);
        for (int parse_special = 0; parse_special <= 1; parse_special++) {
            int64_t n;
            int32_t *ids = encode(&t, text, len, it & 1, parse_special, &n, &err);
            if (n < 0) {
                CHECK(0, "%s: encode failed: %s", name, err.msg);
                free(ids);
                continue;
            }
            for (int64_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= t.n_vocab) {
                    CHECK(0, "%s: id %d out of range", name, ids[i]);
                    break;
                }
            size_t dlen;
            char *dec = decode(&t, ids, n, &dlen);
            /* without special parsing, every text comes back (see round_trips) */
            if (!parse_special) {
                int same = round_trips(text, len, dec, dlen);
                n_exact += same && dlen == len && memcmp(dec, text, len) == 0;
                if (!same && n_fail++ < 5) {
                    char e1[600], e2[600];
                    escape(text, len, e1, sizeof e1);
                    escape(dec, dlen, e2, sizeof e2);
                    CHECK(0, "%s: \"%s\" decodes back as \"%s\"", name, e1, e2);
                }
                n_round += same;
            }
            free(dec);
            free(ids);
        }
    }
    test_note("%s: %d random texts round-tripped (%d byte for byte)", name, n_round, n_exact);
    tokenizer_free(&t);
}

static void test_fuzz(void) {
    fuzz_vocab("vocab/ggml-vocab-llama-spm.gguf", 3000);
    fuzz_vocab("vocab/ggml-vocab-phi-3.gguf", 1000);
}

/* One input of 1 MiB made by a generator; checks time, and round trip. */
static void time_encode(const Tokenizer *t, const char *what, char *text, size_t len) {
    BlvError err = {{0}};
    double t0 = blv_now();
    int64_t n = tokenizer_encode(t, text, len, 1, 0, NULL, 0, &err);
    double secs = blv_now() - t0;
    CHECK(n > 0, "%s: encode failed: %s", what, err.msg);
    if (n <= 0) return;
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    CHECK(tokenizer_encode(t, text, len, 1, 0, ids, n, &err) == n, "%s: second encode differs", what);
    size_t dlen;
    char *dec = decode(t, ids, n, &dlen);
    CHECK(round_trips(text, len, dec, dlen), "%s: round trip", what);
    free(dec);
    free(ids);
    test_note("%s: %zu bytes -> %lld tokens in %.3f s", what, len, (long long)n, secs);
    /* O(n log n) takes a fraction of a second; the bound is loose for sanitizers and emulation, but
     * an accidentally quadratic merge loop would take minutes */
    CHECK(secs < 5.0, "%s: encoding 1 MiB took %.2f s", what, secs);
}

static void test_speed(void) {
    BlvError err = {{0}};
    Tokenizer t;
    if (load_vocab_file(test_data("vocab/ggml-vocab-llama-spm.gguf"), &t, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    size_t len = 1 << 20;
    char *text = malloc(len);
    /* prose-like: the test strings of the .inp file over and over */
    char *inp = NULL;
    size_t inp_len = 0;
    if (blv_read_file(test_data("vocab/ggml-vocab-llama-spm.gguf.inp"), &inp, &inp_len, &err) == 0 && inp_len > 0) {
        for (size_t i = 0; i < len; i++) text[i] = inp[i % inp_len];
        time_encode(&t, "repeated test strings", text, len);
    }
    free(inp);
    /* one long run of spaces merges into ever longer "▁▁▁..." pieces */
    memset(text, ' ', len);
    time_encode(&t, "spaces", text, len);
    /* random bytes: mostly byte tokens */
    uint64_t rng = 7;
    for (size_t i = 0; i < len; i++) text[i] = (char)(test_rand_u64(&rng) >> 24);
    for (size_t i = 0; i + 2 < len; i++)
        if (has_space_mark(text + i, 3)) text[i] = 'x';
    time_encode(&t, "random bytes", text, len);
    free(text);
    tokenizer_free(&t);
}

void suite_tokenizer(void) {
    RUN_TEST(test_llama_spm_vocab);
    RUN_TEST(test_phi3_vocab);
    RUN_TEST(test_llama_spm_facts);
    RUN_TEST(test_special_tokens);
    RUN_TEST(test_malformed_vocab);
    RUN_TEST(test_merge_order);
    RUN_TEST(test_fuzz);
    RUN_TEST(test_speed);
}
