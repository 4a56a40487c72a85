/* tests/test_hfllm.c — Hugging Face LLaMA / BlueLM language-model conversion (convert_hf_llm.c), the
 * SentencePiece tokenizer.model reader (spm.c), and llama.cpp files of tensor types bluelmv refuses.
 *
 * Fixtures (independent references, no Python needed at test time):
 *   tests/data/spm/    tools/gen_spm_fixture.py: SentencePiece BPE models trained with PyPI
 *                      `sentencepiece`, with sentencepiece's own ids and decodings of a test corpus
 *   tests/data/hfllm/  tools/gen_hf_llm_fixture.py: transformers' LlamaForCausalLM (F32 one file, BF16
 *                      sharded) and a BlueLM-style model (embedding LayerNorm), with transformers'
 *                      logits and greedy tokens; a `llama` GGUF written by PyPI gguf from the same
 *                      weights; a llama.cpp-style file with a Q4_K tensor */
#include "test.h"
#include "llm_golden.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert_hf.h"
#include "gguf.h"
#include "json.h"
#include "llm.h"
#include "quant.h"
#include "spm.h"
#include "tokenizer.h"
#include "util.h"

/* ---- helpers -------------------------------------------------------------------------------------- */

static int copy_file(const char *from, const char *to) {
    char *data;
    size_t len;
    BlvError err;
    if (blv_read_file(from, &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;
    if (f) ok &= fclose(f) == 0;
    free(data);
    CHECK(ok, "cannot write %s", to);
    return ok ? 0 : -1;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0;
    if (f) ok &= fclose(f) == 0;
    CHECK(ok, "cannot write %s", path);
    return ok ? 0 : -1;
}

static char *read_text(const char *path) {
    char *data;
    size_t len;
    BlvError err;
    if (blv_read_file(path, &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return NULL;
    }
    return data;
}

/* Replaces the first `from` in a text file by `to`. */
static void edit_file(const char *path, const char *from, const char *to) {
    char *s = read_text(path);
    if (!s) return;
    char *at = strstr(s, from);
    CHECK(at != NULL, "%s does not contain %s", path, from);
    if (at) {
        size_t n = strlen(s) + strlen(to) + 1;
        char *out = malloc(n);
        snprintf(out, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
        write_text(path, out);
        free(out);
    }
    free(s);
}

/* A fresh directory under the test's temporary directory (static buffer, like test_tmp). */
static const char *fresh_dir(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", test_tmp(name));
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", buf);
    if (system(cmd) != 0) CHECK(0, "%s", cmd);
    CHECK(mkdir(buf, 0755) == 0, "mkdir %s", buf);
    return buf;
}

/* Copies every file of a fixture directory into a fresh temporary one; returns its path (static). */
static const char *copy_dir(const char *fixture, const char *name) {
    static char dst[4096];
    snprintf(dst, sizeof dst, "%s", fresh_dir(name));
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp -r '%s'/. '%s'/", test_data(fixture), dst);
    CHECK(system(cmd) == 0, "%s", cmd);
    return dst;
}

static const char *join(const char *dir, const char *file) {
    static char buf[2][4200];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, file);
    return buf[k];
}

typedef struct {
    const uint8_t *p, *end;
    int bad;
} Cursor;

static uint32_t cur_u32(Cursor *c) {
    uint32_t v = 0;
    if (c->end - c->p < 4) {
        c->bad = 1;
        return 0;
    }
    memcpy(&v, c->p, 4);
    c->p += 4;
    return v;
}

static const uint8_t *cur_bytes(Cursor *c, size_t n) {
    if ((size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return NULL;
    }
    const uint8_t *r = c->p;
    c->p += n;
    return r;
}

/* ---- the SentencePiece golden (tools/gen_spm_fixture.py write_golden) --------------------------- */

typedef struct {
    uint32_t kind;     /* 1 exact, 2 probe */
    const char *text;
    uint32_t text_len;
    const int32_t *ids; /* unaligned in the buffer: copied */
    int32_t *ids_copy;
    uint32_t n_ids;
    const char *decoded;
    uint32_t decoded_len;
} SpmCase;

typedef struct {
    char *data;
    uint32_t n_pieces, n_cases;
    uint32_t *hashes;
    SpmCase *cases;
} SpmGolden;

static void spm_golden_free(SpmGolden *g) {
    for (uint32_t i = 0; g->cases && i < g->n_cases; i++) free(g->cases[i].ids_copy);
    free(g->cases);
    free(g->hashes);
    free(g->data);
    memset(g, 0, sizeof *g);
}

static int spm_golden_load(const char *path, SpmGolden *g) {
    memset(g, 0, sizeof *g);
    size_t len;
    BlvError err;
    if (blv_read_file(path, &g->data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    Cursor c = {(const uint8_t *)g->data, (const uint8_t *)g->data + len, 0};
    const uint8_t *magic = cur_bytes(&c, 4);
    uint32_t version = cur_u32(&c);
    g->n_pieces = cur_u32(&c);
    g->n_cases = cur_u32(&c);
    if (c.bad || memcmp(magic, "SPMG", 4) != 0 || version != 1 || g->n_pieces > 1000000 || g->n_cases > 100000) {
        CHECK(0, "%s: bad header", path);
        spm_golden_free(g);
        return -1;
    }
    g->hashes = calloc(g->n_pieces, 4);
    g->cases = calloc(g->n_cases, sizeof *g->cases);
    for (uint32_t i = 0; i < g->n_pieces; i++) g->hashes[i] = cur_u32(&c);
    for (uint32_t i = 0; i < g->n_cases && !c.bad; i++) {
        SpmCase *k = &g->cases[i];
        k->kind = cur_u32(&c);
        k->text_len = cur_u32(&c);
        k->text = (const char *)cur_bytes(&c, k->text_len);
        k->n_ids = cur_u32(&c);
        const uint8_t *ids = cur_bytes(&c, 4 * (size_t)k->n_ids);
        k->ids_copy = malloc(4 * (size_t)k->n_ids + 4);
        if (ids) memcpy(k->ids_copy, ids, 4 * (size_t)k->n_ids);
        k->ids = k->ids_copy;
        k->decoded_len = cur_u32(&c);
        k->decoded = (const char *)cur_bytes(&c, k->decoded_len);
    }
    if (c.bad || c.p != c.end) {
        CHECK(0, "%s: truncated or trailing bytes", path);
        spm_golden_free(g);
        return -1;
    }
    return 0;
}

static uint32_t fnv1a32(uint32_t h, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

/* The golden's per-piece hash: FNV-1a of piece bytes, 0, type byte, score (f32 LE). */
static uint32_t piece_hash(const char *piece, size_t len, int32_t type, float score) {
    uint32_t h = fnv1a32(0x811C9DC5u, piece, len);
    uint8_t tail[6] = {0, (uint8_t)type, 0, 0, 0, 0};
    memcpy(tail + 2, &score, 4);
    return fnv1a32(h, tail, 6);
}

/* ---- spm.c against sentencepiece ------------------------------------------------------------------ */

static void test_spm_reader_matches_sentencepiece(void) {
    SpmGolden g;
    if (spm_golden_load(test_data("spm/bpe2000.golden"), &g) != 0) return;
    SpmModel m;
    BlvError err;
    if (spm_load(&m, test_data("spm/bpe2000.model"), &err) != 0) {
        CHECK(0, "%s", err.msg);
        spm_golden_free(&g);
        return;
    }
    CHECK(m.n_pieces == (int32_t)g.n_pieces, "%d pieces, sentencepiece says %u", m.n_pieces, g.n_pieces);
    int bad = 0;
    for (int32_t i = 0; i < m.n_pieces && i < (int32_t)g.n_pieces; i++) {
        uint32_t h = piece_hash(m.pieces[i], m.piece_lens[i], m.types[i], m.scores[i]);
        if (h != g.hashes[i] && bad++ < 5)
            CHECK(0, "piece %d \"%s\" type %d score %g differs from sentencepiece's", i, m.pieces[i], m.types[i],
                  m.scores[i]);
    }
    CHECK(bad == 0, "%d pieces differ", bad);
    CHECK(m.model_type == SPM_BPE, "model_type %d", m.model_type);
    CHECK(m.byte_fallback == 1, "byte_fallback %d", m.byte_fallback);
    CHECK(m.unk_id == 0 && m.bos_id == 1 && m.eos_id == 2 && m.pad_id == 3, "ids %d %d %d %d", m.unk_id, m.bos_id,
          m.eos_id, m.pad_id);
    CHECK(m.add_dummy_prefix == 1 && m.remove_extra_whitespaces == 0 && m.escape_whitespaces == 1,
          "normalizer flags %d %d %d", m.add_dummy_prefix, m.remove_extra_whitespaces, m.escape_whitespaces);
    CHECK(strcmp(m.normalizer_name, "identity") == 0, "normalizer %s", m.normalizer_name);
    CHECK(m.types[4] == TOKEN_TYPE_USER_DEFINED && strcmp(m.pieces[4], "[|Human|]") == 0, "piece 4 %s type %d",
          m.pieces[4], m.types[4]);
    CHECK(spm_find(&m, "<0x0A>") == 6 + 10, "byte piece <0x0A> at %d", spm_find(&m, "<0x0A>"));
    spm_free(&m);

    /* the unigram model: pad_id default -1, model type 1 */
    if (spm_load(&m, test_data("spm/unigram.model"), &err) != 0) {
        CHECK(0, "%s", err.msg);
    } else {
        CHECK(m.model_type == SPM_UNIGRAM && m.pad_id == -1 && m.n_pieces == 150, "unigram: type %d pad %d n %d",
              m.model_type, m.pad_id, m.n_pieces);
        spm_free(&m);
    }
    spm_golden_free(&g);
}

/* Hand-made protobuf bytes: a tiny writer for the malformed-input tests. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} Pbw;

static void pbw_varint(Pbw *w, uint64_t v) {
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        w->b[w->n++] = byte | (v ? 0x80 : 0);
    } while (v);
}

static void pbw_key(Pbw *w, uint32_t field, int wire) { pbw_varint(w, (uint64_t)field << 3 | (uint64_t)wire); }

static void pbw_bytes(Pbw *w, uint32_t field, const void *data, size_t n) {
    pbw_key(w, field, 2);
    pbw_varint(w, n);
    memcpy(w->b + w->n, data, n);
    w->n += n;
}

static void pbw_piece(Pbw *w, const char *text, float score, int type) {
    Pbw p = {{0}, 0};
    pbw_bytes(&p, 1, text, strlen(text));
    pbw_key(&p, 2, 5);
    memcpy(p.b + p.n, &score, 4);
    p.n += 4;
    if (type) {
        pbw_key(&p, 3, 0);
        pbw_varint(&p, (uint64_t)type);
    }
    pbw_bytes(w, 1, p.b, p.n);
}

/* A valid minimal BPE model: <unk>, <s>, </s>, "▁a", "b"; trainer_spec model_type BPE (+ extra). */
static void pbw_minimal(Pbw *w, int model_type, int with_unknown_fields) {
    w->n = 0;
    pbw_piece(w, "<unk>", 0, 2);
    pbw_piece(w, "<s>", 0, 3);
    pbw_piece(w, "</s>", 0, 3);
    pbw_piece(w, "\xE2\x96\x81" "a", -1, 0);
    pbw_piece(w, "b", -2, 1);
    Pbw t = {{0}, 0};
    pbw_key(&t, 3, 0);
    pbw_varint(&t, (uint64_t)model_type);
    if (with_unknown_fields) {
        pbw_key(&t, 4, 0);   /* vocab_size */
        pbw_varint(&t, 5);
        pbw_bytes(&t, 1, "corpus.txt", 10);  /* input */
        pbw_key(&t, 10, 5);  /* character_coverage, fixed32 */
        float cov = 0.9995f;
        memcpy(t.b + t.n, &cov, 4);
        t.n += 4;
        pbw_key(&t, 43, 0);  /* pad_id = -1: a 10-byte varint */
        pbw_varint(&t, (uint64_t)(int64_t)-1);
        pbw_key(&t, 999, 1); /* an unknown fixed64 */
        memset(t.b + t.n, 0xAB, 8);
        t.n += 8;
    }
    pbw_bytes(w, 2, t.b, t.n);
    Pbw nz = {{0}, 0};
    pbw_bytes(&nz, 1, "identity", 8);
    pbw_key(&nz, 3, 0);
    pbw_varint(&nz, 0);  /* add_dummy_prefix false */
    pbw_bytes(w, 3, nz.b, nz.n);
    if (with_unknown_fields) pbw_bytes(w, 4, "\x0a\x00", 2);  /* self_test_data */
}

static void expect_spm_error(const Pbw *w, const char *want, const char *what) {
    SpmModel m;
    BlvError err = {{0}};
    int rc = spm_parse(&m, w->b, w->n, "t.model", &err);
    CHECK(rc != 0, "%s: parsed", what);
    CHECK(strstr(err.msg, want) != NULL, "%s: message \"%s\" lacks \"%s\"", what, err.msg, want);
    CHECK(strncmp(err.msg, "t.model", 7) == 0, "%s: message does not name the file: %s", what, err.msg);
    if (rc == 0) spm_free(&m);
}

static void test_spm_wire_format(void) {
    Pbw w;
    SpmModel m;
    BlvError err;
    pbw_minimal(&w, 2, 1);
    CHECK(spm_parse(&m, w.b, w.n, "t.model", &err) == 0, "%s", err.msg);
    if (m.n_pieces == 5) {
        CHECK(strcmp(m.pieces[3], "\xE2\x96\x81" "a") == 0 && m.scores[4] == -2.0f && m.types[3] == 1 && m.types[0] == 2,
              "pieces as written");
        CHECK(m.model_type == 2 && m.pad_id == -1 && m.add_dummy_prefix == 0 && m.remove_extra_whitespaces == 1,
              "fields: type %d pad %d prefix %d rx %d", m.model_type, m.pad_id, m.add_dummy_prefix,
              m.remove_extra_whitespaces);
        spm_free(&m);
    }
    /* truncated at every length: an error, never a crash */
    Pbw full;
    pbw_minimal(&full, 2, 1);
    int n_ok = 0;
    for (size_t n = 0; n < full.n; n++) {
        BlvError e2 = {{0}};
        if (spm_parse(&m, full.b, n, "t.model", &e2) == 0) {
            n_ok++;  /* a prefix that ends between top-level fields is a valid (smaller) message */
            spm_free(&m);
        } else {
            CHECK(e2.msg[0] != 0, "prefix %zu: no message", n);
        }
    }
    test_note("%zu truncations of a %zu-byte model: %d parse as shorter valid messages, the rest fail cleanly", full.n,
              full.n, n_ok);
    /* single-byte corruptions: no crash, no leak (ASan) */
    uint64_t seed = 7;
    for (int k = 0; k < 3000; k++) {
        Pbw c = full;
        size_t at = (size_t)(test_rand_u64(&seed) % c.n);
        c.b[at] ^= (uint8_t)(1 + test_rand_u64(&seed) % 255);
        if (spm_parse(&m, c.b, c.n, "t.model", &err) == 0) spm_free(&m);
    }

    /* specific errors */
    w.n = 0;
    pbw_key(&w, 1, 0);
    pbw_varint(&w, 5);
    expect_spm_error(&w, "pieces has wire type 0, expected 2", "pieces as varint");
    w.n = 0;
    pbw_key(&w, 1, 3);
    expect_spm_error(&w, "wire type 3", "group wire type");
    w.n = 0;
    w.b[w.n++] = 0x00;  /* field number 0 */
    expect_spm_error(&w, "invalid field number", "field 0");
    w.n = 0;
    pbw_key(&w, 1, 2);
    pbw_varint(&w, 100);  /* length past the end */
    w.b[w.n++] = 'x';
    expect_spm_error(&w, "runs past the end", "length past end");
    w.n = 0;
    for (int i = 0; i < 11; i++) w.b[w.n++] = 0xff;
    expect_spm_error(&w, "varint", "11-byte varint");
    w.n = 0;
    pbw_piece(&w, "", 0, 0);
    expect_spm_error(&w, "pieces[0] is an empty piece", "empty piece");
    w.n = 0;
    pbw_piece(&w, "<unk>", 0, 2);
    pbw_piece(&w, "\xff\xfe", 0, 1);
    expect_spm_error(&w, "pieces[1] is not valid UTF-8", "bad UTF-8");
    w.n = 0;
    pbw_piece(&w, "<unk>", 0, 2);
    pbw_piece(&w, "a", 0, 1);
    pbw_piece(&w, "a", 0, 1);
    expect_spm_error(&w, "\"a\" appears twice (ids 1 and 2)", "duplicate");
    w.n = 0;
    pbw_piece(&w, "<unk>", 0, 2);
    pbw_piece(&w, "a", 0, 9);
    expect_spm_error(&w, "type 9 is not a SentencePiece piece type", "bad type");
    w.n = 0;
    pbw_piece(&w, "<unk>", 0, 2);
    expect_spm_error(&w, "trainer_spec.bos_id = 1 is not a piece id", "bos outside");
    w.n = 0;
    expect_spm_error(&w, "empty file", "empty");
    w.n = 0;
    pbw_key(&w, 5, 0);
    pbw_varint(&w, 1);
    expect_spm_error(&w, "no pieces", "no pieces");
    w.n = 0;
    {
        Pbw p = {{0}, 0};
        pbw_key(&p, 2, 0);   /* score as a varint */
        pbw_varint(&p, 1);
        pbw_bytes(&w, 1, p.b, p.n);
    }
    expect_spm_error(&w, "pieces[0]: score has wire type 0, expected 5", "score wire type");

    CHECK(spm_load(&m, test_tmp("no-such.model"), &err) != 0 && strstr(err.msg, "no-such.model: cannot open"), "%s",
          err.msg);
}

/* ---- the tokenizer: our conversion + tokenizer.c against sentencepiece ---------------------------- */

typedef struct {
    GgufFile file;
    Tokenizer tok;
    int ok;
} LoadedVocab;

static void load_vocab(LoadedVocab *L, const char *path) {
    BlvError err;
    L->ok = 0;
    if (gguf_open(&L->file, path, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    if (tokenizer_load(&L->tok, &L->file, &err) != 0) {
        CHECK(0, "%s", err.msg);
        gguf_close(&L->file);
        return;
    }
    L->ok = 1;
}

static void unload_vocab(LoadedVocab *L) {
    if (!L->ok) return;
    tokenizer_free(&L->tok);
    gguf_close(&L->file);
    L->ok = 0;
}

/* Converts tests/data/spm/<model> alone (vocabulary only) and loads it. */
static int convert_vocab_only(const char *model, const char *tag, char *out, size_t cap) {
    const char *dir = fresh_dir(tag);
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    if (copy_file(test_data(model), join(d, "tokenizer.model")) != 0) return -1;
    snprintf(out, cap, "%s.gguf", d);
    BlvError err;
    int rc = convert_hf_llm(d, out, TYPE_F32, 1, 0, &err);
    CHECK(rc == 0, "%s", err.msg);
    return rc;
}

static void show(char *buf, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') o += (size_t)snprintf(buf + o, cap - o, "\\n");
        else if (c < 0x20) o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    buf[o] = 0;
}

static void test_tokenizer_matches_sentencepiece(void) {
    SpmGolden g;
    if (spm_golden_load(test_data("spm/bpe2000.golden"), &g) != 0) return;
    char path[4200];
    if (convert_vocab_only("spm/bpe2000.model", "vocab-bpe2000", path, sizeof path) != 0) {
        spm_golden_free(&g);
        return;
    }
    LoadedVocab L;
    load_vocab(&L, path);
    if (!L.ok) {
        spm_golden_free(&g);
        return;
    }
    const Tokenizer *t = &L.tok;
    CHECK(t->n_vocab == 2000, "vocab %d", t->n_vocab);
    CHECK(t->unk_id == 0 && t->bos_id == 1 && t->eos_id == 2 && t->pad_id == 3, "special ids %d %d %d %d", t->unk_id,
          t->bos_id, t->eos_id, t->pad_id);
    CHECK(t->add_bos == 1 && t->add_eos == 0 && t->add_space_prefix == 1, "flags %d %d %d", t->add_bos, t->add_eos,
          t->add_space_prefix);
    CHECK(t->types[4] == TOKEN_TYPE_USER_DEFINED && t->types[5] == TOKEN_TYPE_USER_DEFINED, "user-defined types %d %d",
          t->types[4], t->types[5]);
    CHECK(t->types[0] == TOKEN_TYPE_UNKNOWN && t->types[3] == TOKEN_TYPE_CONTROL && t->types[6] == TOKEN_TYPE_BYTE,
          "types %d %d %d", t->types[0], t->types[3], t->types[6]);
    int exact = 0, n_exact = 0, probes_same = 0, n_probes = 0;
    int32_t ids[4096];
    char text[8192];
    BlvError err;
    for (uint32_t i = 0; i < g.n_cases; i++) {
        const SpmCase *k = &g.cases[i];
        int64_t n = tokenizer_encode(t, k->text, k->text_len, 0, 0, ids, 4096, &err);
        int same_ids = n == (int64_t)k->n_ids && (n == 0 || memcmp(ids, k->ids, 4 * (size_t)n) == 0);
        int64_t dn = tokenizer_decode(t, k->ids, k->n_ids, text, sizeof text);
        int same_text = dn == (int64_t)k->decoded_len && memcmp(text, k->decoded, (size_t)dn) == 0;
        char shown[600];
        show(shown, sizeof shown, k->text, k->text_len);
        if (k->kind == 1) {
            n_exact++;
            exact += same_ids && same_text;
            if (!same_ids) {
                char ours[2000] = "", theirs[2000] = "";
                size_t o = 0, q = 0;
                for (int64_t j = 0; j < n && j < 4096 && o < 1900; j++)
                    o += (size_t)snprintf(ours + o, sizeof ours - o, " %d", ids[j]);
                for (uint32_t j = 0; j < k->n_ids && q < 1900; j++)
                    q += (size_t)snprintf(theirs + q, sizeof theirs - q, " %d", k->ids[j]);
                CHECK(0, "\"%s\": ids [%s ] but sentencepiece [%s ]", shown, ours, theirs);
            }
            CHECK(same_text, "\"%s\": decodes to %lld bytes, sentencepiece to %u", shown, (long long)dn,
                  k->decoded_len);
        } else {
            n_probes++;
            probes_same += same_ids;
            if (!same_ids) {
                char ours[600] = "", theirs[600] = "";
                size_t o = 0, q = 0;
                for (int64_t j = 0; j < n && j < 4096 && o < 550; j++)
                    o += (size_t)snprintf(ours + o, sizeof ours - o, " %s", t->pieces[ids[j]]);
                for (uint32_t j = 0; j < k->n_ids && q < 550; j++)
                    q += (size_t)snprintf(theirs + q, sizeof theirs - q, " %s", t->pieces[k->ids[j]]);
                show(ours, sizeof ours, ours, strlen(ours));
                show(theirs, sizeof theirs, theirs, strlen(theirs));
                test_note("probe \"%s\": llama.cpp's algorithm gives [%s ], sentencepiece [%s ]", shown, ours, theirs);
            }
        }
        /* and our own ids decode back to the text (identity normalization is lossless) */
        if (k->kind == 1 && same_ids) {
            dn = tokenizer_decode(t, ids, n, text, sizeof text);
            CHECK(dn == (int64_t)k->decoded_len && memcmp(text, k->decoded, (size_t)dn) == 0, "\"%s\": round trip",
                  shown);
        }
    }
    test_note("%d of %d corpus lines give exactly sentencepiece's ids and decoding; %d of %d probe lines agree", exact,
              n_exact, probes_same, n_probes);
    unload_vocab(&L);
    spm_golden_free(&g);
}

/* ---- models against transformers --------------------------------------------------------------- */

typedef struct {
    GgufFile file;
    Llm llm;
    int ok;
} Loaded;

static void load_model(Loaded *L, const char *path) {
    BlvError err;
    L->ok = 0;
    if (gguf_open(&L->file, path, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    LlmOptions o = {0, 128, TYPE_F32, 1, -1, 0};
    if (llm_init(&L->llm, &L->file, &o, &err) != 0) {
        CHECK(0, "%s", err.msg);
        gguf_close(&L->file);
        return;
    }
    L->ok = 1;
}

static void unload_model(Loaded *L) {
    if (!L->ok) return;
    llm_free(&L->llm);
    gguf_close(&L->file);
    L->ok = 0;
}

/* Runs the golden's prompt through a GGUF file: logits at every position (returned, malloc'd), the
 * worst per-position NMSE, how many positions have transformers' top-1, and how many of the golden's
 * greedy tokens are reproduced in a row. */
typedef struct {
    double worst_nmse;
    int top1;          /* prompt positions whose argmax equals transformers' */
    int greedy;        /* leading greedy tokens identical to transformers' */
    int forced;        /* steps whose argmax is transformers' greedy token when fed transformers' tokens */
    float *logits;     /* (n_prompt, n_vocab) */
} RunResult;

static int run_golden(const char *gguf_path, const Golden *g, RunResult *r) {
    memset(r, 0, sizeof *r);
    Loaded L;
    load_model(&L, gguf_path);
    if (!L.ok) return -1;
    CHECK(L.llm.config.vocab_size == g->n_vocab, "vocab %lld vs golden %u", (long long)L.llm.config.vocab_size,
          g->n_vocab);
    BlvError err;
    r->logits = calloc((size_t)g->n_prompt * g->n_vocab, sizeof(float));
    int rc = llm_eval_tokens(&L.llm, g->prompt, g->n_prompt, r->logits, 1, &err);
    CHECK(rc == 0, "%s", err.msg);
    for (uint32_t q = 0; rc == 0 && q < g->n_prompt; q++) {
        const float *a = r->logits + (size_t)q * g->n_vocab, *b = g->logits + (size_t)q * g->n_vocab;
        double e = nmse(a, b, g->n_vocab);
        if (e > r->worst_nmse) r->worst_nmse = e;
        r->top1 += argmax(a, g->n_vocab) == argmax(b, g->n_vocab);
    }
    float *step = malloc(sizeof(float) * g->n_vocab);
    int32_t next = argmax(r->logits + (size_t)(g->n_prompt - 1) * g->n_vocab, g->n_vocab);
    for (uint32_t i = 0; rc == 0 && i < g->n_gen && next == g->gen[i]; i++) {
        r->greedy++;
        rc = llm_eval_tokens(&L.llm, &next, 1, step, 0, &err);
        CHECK(rc == 0, "%s", err.msg);
        next = argmax(step, g->n_vocab);
    }
    /* teacher forcing: feed transformers' greedy tokens, count the steps whose argmax is its next one */
    if (rc == 0 && g->n_gen > 0) {
        llm_rewind(&L.llm, g->n_prompt);
        float *gl = malloc(sizeof(float) * g->n_gen * g->n_vocab);
        r->forced = argmax(r->logits + (size_t)(g->n_prompt - 1) * g->n_vocab, g->n_vocab) == g->gen[0];
        if (g->n_gen > 1) rc = llm_eval_tokens(&L.llm, g->gen, g->n_gen - 1, gl, 1, &err);
        CHECK(rc == 0, "%s", err.msg);
        for (uint32_t i = 1; rc == 0 && i < g->n_gen; i++)
            r->forced += argmax(gl + (size_t)(i - 1) * g->n_vocab, g->n_vocab) == g->gen[i];
        free(gl);
    }
    free(step);
    unload_model(&L);
    if (rc != 0) {
        free(r->logits);
        r->logits = NULL;
    }
    return rc;
}

static const char *out_path(const char *tag, int type) {
    static char buf[4200];
    char name[128];
    snprintf(name, sizeof name, "%s-%s.gguf", tag, type_name(type));
    snprintf(buf, sizeof buf, "%s", test_tmp(name));
    return buf;
}

/* Converts a fixture directory; returns the output path (static) or NULL. */
static const char *convert_fixture(const char *fixture, const char *tag, int type) {
    const char *out = out_path(tag, type);
    BlvError err;
    int rc = convert_hf_llm(test_data(fixture), out, type, 0, 0, &err);
    CHECK(rc == 0, "%s: %s", fixture, err.msg);
    return rc == 0 ? out : NULL;
}

static void check_f32_against_transformers(const char *fixture, const char *golden, const char *tag) {
    Golden g;
    if (load_golden(test_data(golden), &g) != 0) return;
    const char *path = convert_fixture(fixture, tag, TYPE_F32);
    RunResult r = {0};
    if (path && run_golden(path, &g, &r) == 0) {
        CHECK(r.worst_nmse < 1e-8, "%s: worst per-position NMSE %.3g >= 1e-8", fixture, r.worst_nmse);
        CHECK(r.greedy == (int)g.n_gen, "%s: greedy continuation agrees for %d of %u tokens", fixture, r.greedy,
              g.n_gen);
        CHECK(r.forced == (int)g.n_gen, "%s: teacher-forced greedy %d of %u", fixture, r.forced, g.n_gen);
        test_note("%s f32: worst per-position NMSE %.3g over %u positions, top-1 %d/%u, greedy %d/%u", fixture,
                  r.worst_nmse, g.n_prompt, r.top1, g.n_prompt, r.greedy, g.n_gen);
    }
    free(r.logits);
    free_golden(&g);
}

static void test_llama_f32_matches_transformers(void) {
    check_f32_against_transformers("hfllm/llama_f32", "hfllm/llama.golden", "llama-f32");
}

static void test_llama_bf16_sharded_matches_transformers(void) {
    check_f32_against_transformers("hfllm/llama_bf16_sharded", "hfllm/llama.golden", "llama-bf16");
}

static void test_bluelm_f16_matches_transformers(void) {
    check_f32_against_transformers("hfllm/bluelm_f16", "hfllm/bluelm.golden", "bluelm-f16");
    GgufFile f;
    BlvError err;
    if (gguf_open(&f, out_path("bluelm-f16", TYPE_F32), 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    const GgufTensor *w = gguf_find_tensor(&f, "token_embd_norm.weight");
    const GgufTensor *b = gguf_find_tensor(&f, "token_embd_norm.bias");
    CHECK(w && b && w->type == TYPE_F32 && w->n_dims == 1 && w->ne[0] == 64, "token_embd_norm as an F32 vector");
    CHECK(gguf_find_tensor(&f, "output.weight") != NULL, "untied BlueLM has output.weight");
    CHECK(f.n_tensors == 1 + 2 + 2 * 9 + 2, "%lld tensors", (long long)f.n_tensors);
    int64_t pad = -1;
    CHECK(gguf_get_i64(&f, "tokenizer.ggml.padding_token_id", &pad, &err) == 0 && pad == 3, "padding id %lld",
          (long long)pad);
    float eps = 0;
    CHECK(gguf_get_f32(&f, "llama.attention.layer_norm_rms_epsilon", &eps, &err) == 0 && eps == 1e-6f, "eps %g", eps);
    gguf_close(&f);
}

/* Both llama checkpoints (F32 one file, BF16 in 3 shards; the same numbers) convert to the same bytes,
 * with the same vocabulary (added tokens from tokenizer_config.json in one, tokenizer.json in the other). */
static void test_llama_f32_and_bf16_files_identical(void) {
    const char *a = convert_fixture("hfllm/llama_f32", "same-a", TYPE_Q4_0);
    char pa[4200];
    snprintf(pa, sizeof pa, "%s", a ? a : "");
    const char *b = convert_fixture("hfllm/llama_bf16_sharded", "same-b", TYPE_Q4_0);
    if (!a || !b) return;
    char *da, *db;
    size_t la, lb;
    BlvError err;
    if (blv_read_file(pa, &da, &la, &err) != 0 || blv_read_file(b, &db, &lb, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    /* general.name differs (the directory name): compare the tensor data and the tokenizer arrays */
    GgufFile fa, fb;
    CHECK(gguf_open_memory(&fa, da, la, "a", &err) == 0, "%s", err.msg);
    CHECK(gguf_open_memory(&fb, db, lb, "b", &err) == 0, "%s", err.msg);
    CHECK(fa.n_tensors == fb.n_tensors, "tensor counts");
    for (int64_t i = 0; i < fa.n_tensors && i < fb.n_tensors; i++) {
        const GgufTensor *x = &fa.tensors[i], *y = &fb.tensors[i];
        CHECK(x->n_bytes == y->n_bytes && x->type == y->type && memcmp(x->data, y->data, (size_t)x->n_bytes) == 0,
              "tensor %.*s differs", (int)x->name.len, x->name.ptr);
    }
    const char *keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
    for (int k = 0; k < 3; k++) {
        const GgufKV *x = gguf_find_kv(&fa, keys[k]), *y = gguf_find_kv(&fb, keys[k]);
        CHECK(x && y && x->arr_count == y->arr_count && x->arr_count == 384, "%s counts", keys[k]);
        if (!x || !y) continue;
        for (uint64_t i = 0; i < x->arr_count && i < y->arr_count; i++) {
            if (k == 0) {
                GgufString s = gguf_array_string(x, i), t = gguf_array_string(y, i);
                CHECK(s.len == t.len && memcmp(s.ptr, t.ptr, s.len) == 0, "token %llu differs", (unsigned long long)i);
            } else {
                CHECK(gguf_array_f64(x, i) == gguf_array_f64(y, i), "%s[%llu] differs", keys[k], (unsigned long long)i);
            }
        }
    }
    gguf_close(&fa);
    gguf_close(&fb);
    free(da);
    free(db);
}

/* Q8_0 and Q4_0 (and F16, BF16) conversions against transformers' F32 logits: figures for the README,
 * loose bounds only (the models are random, with weights of std 0.3, which amplify rounding). */
static void test_quantized_against_transformers(void) {
    const char *fixtures[2] = {"hfllm/llama_f32", "hfllm/bluelm_f16"};
    const char *goldens[2] = {"hfllm/llama.golden", "hfllm/bluelm.golden"};
    const int types[4] = {TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};
    const double limit[4] = {1e-4, 1e-2, 5e-3, 5e-1};
    for (int m = 0; m < 2; m++) {
        Golden g;
        if (load_golden(test_data(goldens[m]), &g) != 0) continue;
        for (int k = 0; k < 4; k++) {
            const char *path = convert_fixture(fixtures[m], m ? "bluelm-q" : "llama-q", types[k]);
            RunResult r = {0};
            if (!path || run_golden(path, &g, &r) != 0) continue;
            CHECK(r.worst_nmse < limit[k], "%s %s: worst NMSE %.3g (bound %.0e)", fixtures[m], type_name(types[k]),
                  r.worst_nmse, limit[k]);
            if (types[k] == TYPE_F16 || types[k] == TYPE_Q8_0)
                CHECK(r.top1 >= (int)g.n_prompt * 3 / 4, "%s %s: top-1 at %d of %u positions", fixtures[m],
                      type_name(types[k]), r.top1, g.n_prompt);
            /* NMSE over all positions as one vector */
            double all = nmse(r.logits, g.logits, (int64_t)g.n_prompt * g.n_vocab);
            test_note("%s %-4s: NMSE %.3g (worst position %.3g), top-1 %d/%u prompt positions, greedy run %d/%u, "
                      "teacher-forced %d/%u", fixtures[m], type_name(types[k]), all, r.worst_nmse, r.top1, g.n_prompt,
                      r.greedy, g.n_gen, r.forced, g.n_gen);
            free(r.logits);
        }
        free_golden(&g);
    }
}

/* The file PyPI gguf wrote from the same weights (llama.cpp's writer, permutation and Q8_0 quantizer)
 * equals ours tensor for tensor and gives the same logits. */
static void test_pypi_gguf_file_equals_ours(void) {
    const char *ours = convert_fixture("hfllm/llama_f32", "vs-pypi", TYPE_Q8_0);
    if (!ours) return;
    char po[4200];
    snprintf(po, sizeof po, "%s", ours);
    GgufFile a, b;
    BlvError err;
    if (gguf_open(&a, po, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    if (gguf_open(&b, test_data("hfllm/llama_pypi_q8_0.gguf"), 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        gguf_close(&a);
        return;
    }
    CHECK(a.n_tensors == b.n_tensors, "%lld vs %lld tensors", (long long)a.n_tensors, (long long)b.n_tensors);
    int same = 0;
    for (int64_t i = 0; i < a.n_tensors && i < b.n_tensors; i++) {
        const GgufTensor *x = &a.tensors[i], *y = &b.tensors[i];
        int ok = x->name.len == y->name.len && memcmp(x->name.ptr, y->name.ptr, x->name.len) == 0 &&
                 x->type == y->type && x->n_dims == y->n_dims && x->ne[0] == y->ne[0] && x->ne[1] == y->ne[1] &&
                 x->n_bytes == y->n_bytes && memcmp(x->data, y->data, (size_t)x->n_bytes) == 0;
        CHECK(ok, "tensor %lld (%.*s %s) differs from PyPI gguf's (%.*s %s)", (long long)i, (int)x->name.len,
              x->name.ptr, type_name((int)x->type), (int)y->name.len, y->name.ptr, type_name((int)y->type));
        same += ok;
    }
    /* the vocabulary: ours from spm.c, theirs from sentencepiece's API */
    const char *keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
    for (int k = 0; k < 3; k++) {
        const GgufKV *x = gguf_find_kv(&a, keys[k]), *y = gguf_find_kv(&b, keys[k]);
        CHECK(x && y && x->arr_count == y->arr_count, "%s", keys[k]);
        int bad = 0;
        for (uint64_t i = 0; x && y && i < x->arr_count && i < y->arr_count; i++) {
            if (k == 0) {
                GgufString s = gguf_array_string(x, i), t = gguf_array_string(y, i);
                bad += s.len != t.len || memcmp(s.ptr, t.ptr, s.len) != 0;
            } else {
                bad += gguf_array_f64(x, i) != gguf_array_f64(y, i);
            }
        }
        CHECK(bad == 0, "%s: %d entries differ", keys[k], bad);
    }
    const char *ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                         "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                         "llama.context_length", "llama.embedding_length", "llama.block_count",
                         "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                         "llama.rope.dimension_count", "llama.vocab_size", "general.file_type"};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        int64_t x = -1, y = -2;
        CHECK(gguf_get_i64(&a, ids[k], &x, &err) == 0 && gguf_get_i64(&b, ids[k], &y, &err) == 0 && x == y,
              "%s: %lld vs %lld", ids[k], (long long)x, (long long)y);
    }
    test_note("%d of %lld tensors byte-identical to the PyPI gguf file", same, (long long)a.n_tensors);
    gguf_close(&a);
    gguf_close(&b);

    Golden g;
    if (load_golden(test_data("hfllm/llama.golden"), &g) != 0) return;
    RunResult ra = {0}, rb = {0};
    if (run_golden(po, &g, &ra) == 0 && run_golden(test_data("hfllm/llama_pypi_q8_0.gguf"), &g, &rb) == 0) {
        double max_diff = 0;
        for (size_t i = 0; i < (size_t)g.n_prompt * g.n_vocab; i++)
            max_diff = fmax(max_diff, fabs((double)ra.logits[i] - rb.logits[i]));
        CHECK(max_diff == 0, "logits differ by up to %.3g", max_diff);
        CHECK(ra.greedy == rb.greedy, "greedy %d vs %d", ra.greedy, rb.greedy);
        test_note("PyPI gguf's q8_0 file: logits identical to ours (max |diff| %.3g); vs transformers NMSE %.3g", max_diff,
                  nmse(rb.logits, g.logits, (int64_t)g.n_prompt * g.n_vocab));
    }
    free(ra.logits);
    free(rb.logits);
    free_golden(&g);
}

/* PyPI gguf's GGUFReader (independent of our reader) reads a converted file with the expected keys,
 * names, shapes and types. Needs Python: run when BLUELMV_PYTHON_CHECKS=1. */
static void test_pypi_gguf_reads_converted_file(void) {
    const char *env = getenv("BLUELMV_PYTHON_CHECKS");
    if (!env || strcmp(env, "1") != 0) {
        test_note("skipped: set BLUELMV_PYTHON_CHECKS=1 to check with PyPI gguf");
        return;
    }
    const char *out = convert_fixture("hfllm/bluelm_f16", "pypi-read", TYPE_Q4_0);
    if (!out) return;
    char path[4200], json[4200], cmd[9000];
    snprintf(path, sizeof path, "%s", out);
    snprintf(json, sizeof json, "%s", test_tmp("pypi-read.json"));
    FILE *fp = fopen(json, "w");
    if (!fp) {
        CHECK(0, "cannot write %s", json);
        return;
    }
    fprintf(fp, "{\"kv\": {\"general.architecture\": {\"type\": \"string\", \"value\": \"llama\"},\n"
                "\"general.name\": {\"type\": \"string\", \"value\": \"bluelm_f16\"},\n"
                "\"general.file_type\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"general.quantization_version\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"llama.context_length\": {\"type\": \"u32\", \"value\": 256},\n"
                "\"llama.embedding_length\": {\"type\": \"u32\", \"value\": 64},\n"
                "\"llama.block_count\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"llama.feed_forward_length\": {\"type\": \"u32\", \"value\": 128},\n"
                "\"llama.rope.dimension_count\": {\"type\": \"u32\", \"value\": 16},\n"
                "\"llama.rope.freq_base\": {\"type\": \"f32\", \"value\": 10000.0},\n"
                "\"llama.attention.head_count\": {\"type\": \"u32\", \"value\": 4},\n"
                "\"llama.attention.head_count_kv\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"llama.attention.layer_norm_rms_epsilon\": {\"type\": \"f32\", \"value\": 1e-6},\n"
                "\"llama.vocab_size\": {\"type\": \"u32\", \"value\": 384},\n"
                "\"tokenizer.ggml.model\": {\"type\": \"string\", \"value\": \"llama\"},\n"
                "\"tokenizer.ggml.tokens\": {\"type\": \"array[string]\"},\n"
                "\"tokenizer.ggml.scores\": {\"type\": \"array[f32]\"},\n"
                "\"tokenizer.ggml.token_type\": {\"type\": \"array[i32]\"},\n"
                "\"tokenizer.ggml.bos_token_id\": {\"type\": \"u32\", \"value\": 1},\n"
                "\"tokenizer.ggml.eos_token_id\": {\"type\": \"u32\", \"value\": 2},\n"
                "\"tokenizer.ggml.unknown_token_id\": {\"type\": \"u32\", \"value\": 0},\n"
                "\"tokenizer.ggml.padding_token_id\": {\"type\": \"u32\", \"value\": 3},\n"
                "\"tokenizer.ggml.add_bos_token\": {\"type\": \"bool\", \"value\": true},\n"
                "\"tokenizer.ggml.add_eos_token\": {\"type\": \"bool\", \"value\": false},\n"
                "\"tokenizer.ggml.add_space_prefix\": {\"type\": \"bool\", \"value\": true}},\n"
                "\"tensors\": [\n");
    /* the expected tensor list, written from the spec (not from our file) */
    fprintf(fp, "{\"name\": \"token_embd.weight\", \"shape\": [64, 384], \"type\": \"q4_0\"},\n"
                "{\"name\": \"token_embd_norm.weight\", \"shape\": [64], \"type\": \"f32\"},\n"
                "{\"name\": \"token_embd_norm.bias\", \"shape\": [64], \"type\": \"f32\"},\n");
    for (int L = 0; L < 2; L++)
        fprintf(fp, "{\"name\": \"blk.%d.attn_norm.weight\", \"shape\": [64], \"type\": \"f32\"},\n"
                    "{\"name\": \"blk.%d.attn_q.weight\", \"shape\": [64, 64], \"type\": \"q4_0\"},\n"
                    "{\"name\": \"blk.%d.attn_k.weight\", \"shape\": [64, 32], \"type\": \"q4_0\"},\n"
                    "{\"name\": \"blk.%d.attn_v.weight\", \"shape\": [64, 32], \"type\": \"q4_0\"},\n"
                    "{\"name\": \"blk.%d.attn_output.weight\", \"shape\": [64, 64], \"type\": \"q4_0\"},\n"
                    "{\"name\": \"blk.%d.ffn_norm.weight\", \"shape\": [64], \"type\": \"f32\"},\n"
                    "{\"name\": \"blk.%d.ffn_gate.weight\", \"shape\": [64, 128], \"type\": \"q4_0\"},\n"
                    "{\"name\": \"blk.%d.ffn_down.weight\", \"shape\": [128, 64], \"type\": \"q4_0\"},\n"
                    "{\"name\": \"blk.%d.ffn_up.weight\", \"shape\": [64, 128], \"type\": \"q4_0\"},\n",
                L, L, L, L, L, L, L, L, L);
    fprintf(fp, "{\"name\": \"output_norm.weight\", \"shape\": [64], \"type\": \"f32\"},\n"
                "{\"name\": \"output.weight\", \"shape\": [64, 384], \"type\": \"q4_0\"}]}\n");
    fclose(fp);
    snprintf(cmd, sizeof cmd, "python3 tools/check_gguf.py %s --expect-json %s", path, json);
    char *o = NULL, *e = NULL;
    int rc = test_run_command(cmd, &o, &e);
    CHECK(rc == 0, "check_gguf.py failed (%d): %s\n%s", rc, e ? e : "", o ? o : "");
    CHECK(o && strstr(o, "kv tokenizer.ggml.tokens array[string] n=384"), "token list as PyPI gguf reads it");
    free(o);
    free(e);
}

/* ---- llama.cpp files with tensor types bluelmv does not compute with ------------------------------ */

static void test_k_quant_file_refused(void) {
    GgufFile f;
    BlvError err = {{0}};
    const char *path = test_data("hfllm/llama_q4k.gguf");
    if (gguf_open(&f, path, 1, &err) != 0) {  /* the file itself is valid: it must open */
        CHECK(0, "%s", err.msg);
        return;
    }
    const GgufTensor *t = gguf_find_tensor(&f, "blk.0.ffn_down.weight");
    CHECK(t && t->type == 12 && t->n_bytes == 32 * 144, "Q4_K tensor as written: type %u", t ? t->type : 0);
    Llm m;
    LlmOptions o = {0, 16, TYPE_F32, 1, -1, 0};
    int rc = llm_init(&m, &f, &o, &err);
    CHECK(rc != 0, "a Q4_K tensor must be refused");
    CHECK(strstr(err.msg, "llama_q4k.gguf") && strstr(err.msg, "blk.0.ffn_down.weight"), "names file and tensor: %s",
          err.msg);
    CHECK(strstr(err.msg, "q4_K") != NULL, "names the type q4_K: %s", err.msg);
    CHECK(strstr(err.msg, "llama-quantize --pure") != NULL, "gives the fix: %s", err.msg);
    test_note("%s", err.msg);
    if (rc == 0) llm_free(&m);
    gguf_close(&f);

    /* an IQ type: a converted Q4_0 file with one tensor's type id changed to IQ4_NL (20: also 32 elements
     * in 18 bytes, so the file stays valid) */
    const char *q = convert_fixture("hfllm/llama_f32", "iq4", TYPE_Q4_0);
    char *data;
    size_t len;
    if (!q || blv_read_file(q, &data, &len, &err) != 0) return;
    if (gguf_open_memory(&f, data, len, "patched.gguf", &err) == 0) {
        t = gguf_find_tensor(&f, "blk.1.attn_k.weight");
        uint8_t *type_at = (uint8_t *)t->name.ptr + t->name.len + 4 + 8 * t->n_dims;
        uint32_t was;
        memcpy(&was, type_at, 4);
        CHECK(was == TYPE_Q4_0, "found the type field (%u)", was);
        uint32_t iq4_nl = 20;
        memcpy(type_at, &iq4_nl, 4);
        gguf_close(&f);
        CHECK(gguf_open_memory(&f, data, len, "patched.gguf", &err) == 0, "%s", err.msg);
        rc = llm_init(&m, &f, &o, &err);
        CHECK(rc != 0 && strstr(err.msg, "blk.1.attn_k.weight") && strstr(err.msg, "iq4_nl") &&
                  strstr(err.msg, "llama-quantize --pure"),
              "IQ4_NL refused by name: %s", err.msg);
        if (rc == 0) llm_free(&m);
        gguf_close(&f);
    } else {
        CHECK(0, "%s", err.msg);
    }
    free(data);
}

/* ---- the vocabulary of a checkpoint directory ------------------------------------------------------ */

static void test_checkpoint_vocabulary(void) {
    /* --vocab-only of a model directory: the tokenizer plus the hyperparameters, no tensors */
    const char *out = out_path("vocab-only", TYPE_F32);
    BlvError err;
    int rc = convert_hf_llm(test_data("hfllm/bluelm_f16"), out, TYPE_Q4_0, 1, 0, &err);
    CHECK(rc == 0, "%s", err.msg);
    LoadedVocab L;
    load_vocab(&L, out);
    if (!L.ok) return;
    CHECK(L.file.n_tensors == 0, "%lld tensors in a vocabulary-only file", (long long)L.file.n_tensors);
    int64_t v = 0;
    CHECK(gguf_get_i64(&L.file, "llama.block_count", &v, &err) == 0 && v == 2, "hyperparameters kept: %lld",
          (long long)v);
    CHECK(gguf_find_kv(&L.file, "general.file_type") == NULL, "no file type without tensors");
    const Tokenizer *t = &L.tok;
    CHECK(t->n_vocab == 384, "vocab %d", t->n_vocab);
    /* tokenizer_config.json's added_tokens_decoder: [|Human|], [|AI|] user-defined; <im_start>, <im_end> control */
    CHECK(strcmp(t->pieces[380], "[|Human|]") == 0 && t->types[380] == TOKEN_TYPE_USER_DEFINED &&
              t->scores[380] == -1000.0f,
          "380: %s type %d score %g", t->pieces[380], t->types[380], t->scores[380]);
    CHECK(t->types[381] == TOKEN_TYPE_USER_DEFINED && t->types[382] == TOKEN_TYPE_CONTROL &&
              t->types[383] == TOKEN_TYPE_CONTROL && strcmp(t->pieces[383], "<im_end>") == 0,
          "types %d %d %d", t->types[381], t->types[382], t->types[383]);
    /* the model's own <unk>, <s>, </s> listed again keep tokenizer.model's types */
    CHECK(t->types[0] == TOKEN_TYPE_UNKNOWN && t->types[1] == TOKEN_TYPE_CONTROL && t->scores[1] == 0.0f,
          "types %d %d, score %g", t->types[0], t->types[1], t->scores[1]);
    CHECK(t->pad_id == 3 && t->bos_id == 1 && t->eos_id == 2 && t->unk_id == 0, "ids %d %d %d %d", t->pad_id,
          t->bos_id, t->eos_id, t->unk_id);
    /* BlueLM's chat roles are single tokens wherever they appear */
    const char *prompt = "[|Human|]:Hello<im_start>";
    int32_t ids[64];
    int64_t n = tokenizer_encode(t, prompt, strlen(prompt), 1, 1, ids, 64, &err);
    CHECK(n >= 4 && ids[0] == 1 && ids[1] == 380 && ids[n - 1] == 382, "encoded %lld ids: %d %d ... %d", (long long)n,
          ids[0], n > 1 ? ids[1] : -1, n > 0 ? ids[n - 1] : -1);
    unload_vocab(&L);

    /* a tokenizer.model alone (no config.json): its own size, trainer-spec ids */
    char path[4200];
    if (convert_vocab_only("spm/bpe380.model", "vocab-380", path, sizeof path) == 0) {
        load_vocab(&L, path);
        if (L.ok) {
            CHECK(L.tok.n_vocab == 380 && L.tok.pad_id == 3, "vocab %d pad %d", L.tok.n_vocab, L.tok.pad_id);
            CHECK(gguf_find_kv(&L.file, "llama.block_count") == NULL, "no hyperparameters without config.json");
            unload_vocab(&L);
        }
    }

    /* added_tokens.json (llama.cpp reads it: USER_DEFINED) and [PAD] slots up to config.json's vocab_size */
    const char *dir = copy_dir("hfllm/llama_f32", "vocab-added");
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    write_text(join(d, "tokenizer_config.json"), "{\"add_bos_token\": true, \"add_eos_token\": true}");
    write_text(join(d, "added_tokens.json"), "{\"<extra_0>\": 381, \"<too_far>\": 999}");
    out = out_path("vocab-added", TYPE_F32);
    rc = convert_hf_llm(d, out, TYPE_F32, 1, 0, &err);
    CHECK(rc == 0, "%s", err.msg);
    load_vocab(&L, out);
    if (L.ok) {
        t = &L.tok;
        CHECK(strcmp(t->pieces[381], "<extra_0>") == 0 && t->types[381] == TOKEN_TYPE_USER_DEFINED, "381: %s %d",
              t->pieces[381], t->types[381]);
        CHECK(strcmp(t->pieces[380], "[PAD380]") == 0 && t->types[380] == TOKEN_TYPE_UNUSED &&
                  t->scores[380] == -10000.0f,
              "380: %s %d %g", t->pieces[380], t->types[380], t->scores[380]);
        CHECK(t->add_eos == 1, "add_eos from tokenizer_config.json");
        unload_vocab(&L);
    }
}

/* tie_word_embeddings: no output.weight; a lm_head.weight the checkpoint still carries is the tied copy. */
static void test_tied_embeddings(void) {
    char d[4096];
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "tied"));
    edit_file(join(d, "config.json"), "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true");
    const char *out = out_path("tied", TYPE_F32);
    BlvError err;
    int rc = convert_hf_llm(d, out, TYPE_F32, 0, 0, &err);
    CHECK(rc == 0, "%s", err.msg);
    if (rc != 0) return;
    Loaded L;
    load_model(&L, out);
    if (!L.ok) return;
    CHECK(gguf_find_tensor(&L.file, "output.weight") == NULL, "a tied model has no output.weight");
    CHECK(L.file.n_tensors == 1 + 2 * 9 + 1, "%lld tensors", (long long)L.file.n_tensors);
    CHECK(L.llm.config.tied_output == 1, "llm.c sees the tied output");
    int32_t tok = 1;
    float *logits = malloc(384 * sizeof(float));
    CHECK(llm_eval_tokens(&L.llm, &tok, 1, logits, 0, &err) == 0, "%s", err.msg);
    free(logits);
    unload_model(&L);
}

/* ---- bad checkpoints ------------------------------------------------------------------------------- */

/* Converting `dir` must fail with a message containing every one of the strings, and leave no output. */
static void expect_refused(const char *dir_arg, int type, const char *want1, const char *want2) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", dir_arg);  /* dir may be test_tmp's buffer */
    const char *out = test_tmp("refused.gguf");
    unlink(out);
    BlvError err = {{0}};
    int rc = convert_hf_llm(dir, out, type, 0, 0, &err);
    CHECK(rc != 0, "converted, but should fail with \"%s\"", want1);
    CHECK(strstr(err.msg, want1) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want1);
    if (want2) CHECK(strstr(err.msg, want2) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want2);
    CHECK(access(out, F_OK) != 0, "a failed conversion left %s behind", out);
}

static void test_bad_checkpoints(void) {
    char d[4096];
    /* missing shard */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_bf16_sharded", "bad-shard"));
    unlink(join(d, "model-00002-of-00003.safetensors"));
    expect_refused(d, TYPE_F32, "model-00002-of-00003.safetensors: cannot open", "model.safetensors.index.json");

    /* shapes against config.json */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-shape"));
    edit_file(join(d, "config.json"), "\"intermediate_size\": 128", "\"intermediate_size\": 96");
    expect_refused(d, TYPE_F32,
                   "model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], config.json says "
                   "[96, 64]", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-kv"));
    edit_file(join(d, "config.json"), "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4");
    expect_refused(d, TYPE_F32, "tensor model.layers.0.self_attn.k_proj.weight has shape [32, 64], config.json says "
                   "[64, 64]", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-layers"));
    edit_file(join(d, "config.json"), "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_refused(d, TYPE_F32, "tensor model.layers.2.input_layernorm.weight is missing", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-fewer"));
    edit_file(join(d, "config.json"), "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    expect_refused(d, TYPE_F32, "tensor model.layers.1.", "is not part of a LlamaForCausalLM with this config.json");
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/bluelm_f16", "bad-stable"));
    edit_file(join(d, "config.json"), "\"use_stable_embedding\": true", "\"use_stable_embedding\": false");
    expect_refused(d, TYPE_F32, "tensor model.embed_layer_norm.", "no use_stable_embedding");
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-vocab"));
    edit_file(join(d, "config.json"), "\"vocab_size\": 384", "\"vocab_size\": 300");
    expect_refused(d, TYPE_F32, "config.json says vocab_size 300 but", "has 380 pieces");

    /* dtypes: one the reader does not know, one it knows but that is not a weight type */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-dtype"));
    {
        char *s = read_text(join(d, "model.safetensors"));
        char *at = s ? strstr(s + 8, "\"F32\"") : NULL;
        CHECK(at != NULL, "no F32 in the header");
        if (at) {
            /* the header is ASCII JSON: patch in place, same length */
            FILE *f = fopen(join(d, "model.safetensors"), "r+b");
            fseek(f, (long)(at - s) + 1, SEEK_SET);
            fwrite("X32", 1, 3, f);
            fclose(f);
            expect_refused(d, TYPE_F32, "model.safetensors: tensor", "has dtype \"X32\", which this reader does not know");
            f = fopen(join(d, "model.safetensors"), "r+b");
            fseek(f, (long)(at - s) + 1, SEEK_SET);
            fwrite("I32", 1, 3, f);
            fclose(f);
            expect_refused(d, TYPE_F32, "has dtype I32, which is not a weight type bluelmv converts", NULL);
        }
        free(s);
    }

    /* truncated safetensors header */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-header"));
    CHECK(truncate(join(d, "model.safetensors"), 200) == 0, "truncate");
    expect_refused(d, TYPE_F32, "model.safetensors", "header");

    /* JSON errors: config.json, the index, tokenizer_config.json */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-json"));
    edit_file(join(d, "config.json"), "\"vocab_size\": 384", "\"vocab_size\": 384,");
    expect_refused(d, TYPE_F32, "config.json:", "}");
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_bf16_sharded", "bad-index"));
    edit_file(join(d, "model.safetensors.index.json"), "\"weight_map\": {", "\"weight_map\": {{");
    expect_refused(d, TYPE_F32, "model.safetensors.index.json:", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-tc"));
    edit_file(join(d, "tokenizer_config.json"), "\"add_bos_token\": true", "\"add_bos_token\": tru");
    expect_refused(d, TYPE_F32, "tokenizer_config.json:", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-missing-config"));
    unlink(join(d, "config.json"));
    expect_refused(d, TYPE_F32, "config.json: no such file", "--vocab-only");

    /* architectures and features this converter cannot represent */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-arch"));
    edit_file(join(d, "config.json"), "\"LlamaForCausalLM\"", "\"Qwen2ForCausalLM\"");
    expect_refused(d, TYPE_F32, "architecture \"Qwen2ForCausalLM\" is not supported",
                   "LlamaForCausalLM and BlueLMForCausalLM");
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/bluelm_f16", "bad-rope"));
    edit_file(join(d, "config.json"), "\"rope_scaling\": null",
              "\"rope_scaling\": {\"type\": \"ntkmixed\", \"factor\": 16.0, \"power\": 0.3}");
    expect_refused(d, TYPE_F32, "rope_scaling (type \"ntkmixed\") is set: RoPE scaling is not supported", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-rope5"));
    edit_file(join(d, "config.json"), "\"rope_type\": \"default\"", "\"rope_type\": \"llama3\"");
    expect_refused(d, TYPE_F32, "rope_parameters has rope_type \"llama3\"", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-bias"));
    edit_file(join(d, "config.json"), "\"attention_bias\": false", "\"attention_bias\": true");
    expect_refused(d, TYPE_F32, "attention_bias is true", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-headdim"));
    edit_file(join(d, "config.json"), "\"head_dim\": 16", "\"head_dim\": 32");
    expect_refused(d, TYPE_F32, "head_dim 32 differs", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-quant"));
    edit_file(join(d, "config.json"), "\"vocab_size\": 384",
              "\"vocab_size\": 384, \"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4}");
    expect_refused(d, TYPE_F32, "quantized (quantization_config, quant_method \"awq\")", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-act"));
    edit_file(join(d, "config.json"), "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"");
    expect_refused(d, TYPE_F32, "hidden_act \"gelu\" is not supported", NULL);

    /* tokenizers */
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-notok"));
    unlink(join(d, "tokenizer.model"));
    expect_refused(d, TYPE_F32, "tokenizer.model: no such file", "SentencePiece");
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-unigram"));
    copy_file(test_data("spm/unigram.model"), join(d, "tokenizer.model"));
    expect_refused(d, TYPE_F32, "a SentencePiece UNIGRAM model", "only model_type BPE");
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-tokbytes"));
    CHECK(truncate(join(d, "tokenizer.model"), 1000) == 0, "truncate");
    expect_refused(d, TYPE_F32, "tokenizer.model: byte", NULL);
    snprintf(d, sizeof d, "%s", copy_dir("hfllm/llama_f32", "bad-dup"));
    edit_file(join(d, "tokenizer_config.json"), "\"content\": \"[|AI|]\"", "\"content\": \"[|Human|]\"");
    expect_refused(d, TYPE_F32, "tokens 380 and 381 have the same text \"[|Human|]\"", NULL);

    /* not a directory, an unsupported output type */
    expect_refused(test_data("hfllm/llama_f32/config.json"), TYPE_F32, "not a directory", NULL);
    expect_refused(test_tmp("no-such-dir"), TYPE_F32, "no-such-dir: cannot open", NULL);
    expect_refused(test_data("hfllm/llama_f32"), 12, "not an output type", NULL);
}

/* Progress output: a header describing the model and a line per tensor (stderr, not a terminal here). */
static void test_progress_output(void) {
    char log[4200];
    snprintf(log, sizeof log, "%s", test_tmp("progress.txt"));
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(log, "w");
    if (saved < 0 || !f) {
        CHECK(0, "cannot redirect stderr");
        return;
    }
    dup2(fileno(f), 2);
    BlvError err;
    int rc = convert_hf_llm(test_data("hfllm/bluelm_f16"), test_tmp("progress.gguf"), TYPE_Q8_0, 0, 1, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    CHECK(rc == 0, "%s", err.msg);
    char *s = read_text(log);
    if (!s) return;
    CHECK(strstr(s, "BlueLMForCausalLM: hidden 64, 2 layers, 4 heads (2 kv, head size 16), ffn 128, vocab 384") != NULL,
          "header:\n%s", s);
    CHECK(strstr(s, "embedding LayerNorm") && strstr(s, "SentencePiece BPE, 380 pieces; vocabulary 384 tokens"),
          "vocabulary line:\n%s", s);
    CHECK(strstr(s, "[ 23/ 23] output.weight") && strstr(s, "q8_0"), "per-tensor lines:\n%s", s);
    free(s);
}

void suite_hfllm(void) {
    RUN_TEST(test_spm_reader_matches_sentencepiece);
    RUN_TEST(test_spm_wire_format);
    RUN_TEST(test_tokenizer_matches_sentencepiece);
    RUN_TEST(test_llama_f32_matches_transformers);
    RUN_TEST(test_llama_bf16_sharded_matches_transformers);
    RUN_TEST(test_bluelm_f16_matches_transformers);
    RUN_TEST(test_llama_f32_and_bf16_files_identical);
    RUN_TEST(test_quantized_against_transformers);
    RUN_TEST(test_pypi_gguf_file_equals_ours);
    RUN_TEST(test_pypi_gguf_reads_converted_file);
    RUN_TEST(test_k_quant_file_refused);
    RUN_TEST(test_checkpoint_vocabulary);
    RUN_TEST(test_tied_embeddings);
    RUN_TEST(test_bad_checkpoints);
    RUN_TEST(test_progress_output);
}
