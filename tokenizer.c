/* tokenizer.c — SentencePiece BPE tokenization, matching llama.cpp's `llama` (SPM) vocabulary type.
 *
 * Encoding a text goes through three stages, as in llama.cpp (src/llama-vocab.cpp):
 *   1. partition: the texts of special tokens found in the input cut it into fragments; each match
 *      becomes its token directly (control/unknown tokens only with parse_special, user-defined
 *      tokens always), longest special text first;
 *   2. for each remaining text fragment: spaces become U+2581 "▁", a "▁" is prepended when
 *      add_space_prefix is set and the fragment is the first one or follows a special token;
 *   3. the fragment is split into UTF-8 characters and adjacent symbols are merged greedily, the
 *      pair whose concatenation is the piece with the highest score first (leftmost on ties);
 *      every final symbol is looked up as a piece, and one that is not a piece (only an unmerged
 *      character can be one, since merges only ever form pieces) is written as its bytes, <0xNN>.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible stand-in for a space. */
static const char SPACE_MARK[3] = {(char)0xE2, (char)0x96, (char)0x81};

/* Per-token flags that llama.cpp derives at load time (not stored in the GGUF file). */
enum {
    TOKEN_FLAG_RSTRIP = 1, /* a match of this special token swallows the whitespace after it */
    TOKEN_FLAG_EOG = 2,    /* generation stops at this token */
};

struct TokenizerIndex {
    char *blob;             /* all piece texts, each NUL-terminated; pieces[i] point into it */
    uint32_t mask;          /* slot count - 1 (slot count is a power of two) */
    int32_t *slots;         /* open-addressing hash table of token ids, -1 = empty */
    uint32_t max_piece_len; /* a longer merge candidate cannot be a piece: skip the lookup */
    int32_t *specials;      /* special tokens in the order the partition tries them */
    int32_t n_specials;
    uint8_t *flags;         /* (n_vocab) TOKEN_FLAG_* */
};

/* Tokens that llama.cpp looks for in the input text before tokenizing it. */
static int is_special_type(int32_t type) {
    return type == TOKEN_TYPE_CONTROL || type == TOKEN_TYPE_USER_DEFINED || type == TOKEN_TYPE_UNKNOWN;
}

/* ---- piece lookup --------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int32_t tokenizer_find(const Tokenizer *t, const char *piece, size_t len) {
    const TokenizerIndex *ix = t->index;
    if (!ix || len == 0 || len > ix->max_piece_len) return -1;
    for (uint32_t slot = (uint32_t)hash_bytes(piece, len) & ix->mask;; slot = (slot + 1) & ix->mask) {
        int32_t id = ix->slots[slot];
        if (id < 0) return -1;
        if (t->piece_lens[id] == len && memcmp(t->pieces[id], piece, len) == 0) return id;
    }
}

/* Adds id under its piece text; returns the id already holding that text, or -1 if it was new. */
static int32_t index_insert(Tokenizer *t, int32_t id) {
    TokenizerIndex *ix = t->index;
    const char *piece = t->pieces[id];
    uint32_t len = t->piece_lens[id];
    for (uint32_t slot = (uint32_t)hash_bytes(piece, len) & ix->mask;; slot = (slot + 1) & ix->mask) {
        int32_t other = ix->slots[slot];
        if (other < 0) {
            ix->slots[slot] = id;
            return -1;
        }
        if (t->piece_lens[other] == len && memcmp(t->pieces[other], piece, len) == 0) return other;
    }
}

/* ---- loading -------------------------------------------------------------------------------- */

/* An optional token id key: absent leaves *id at -1; present must name a token, except that a
 * padding id outside the vocabulary (some converters write 0xFFFFFFFF or -1 for "none") is read as
 * absent, since inference never uses it. */
static int load_special_id(const GgufFile *f, const char *key, int32_t n_vocab, int32_t *id, BlvError *err) {
    *id = -1;
    if (!gguf_find_kv(f, key)) return 0;
    int64_t v;
    if (strstr(key, "padding") && gguf_get_i64(f, key, &v, NULL) == 0 && (v < 0 || v >= n_vocab)) return 0;
    if (gguf_get_i64(f, key, &v, err) != 0) return -1;
    if (v < 0 || v >= n_vocab)
        return blv_fail(err, "%s: %s = %lld is out of range (the vocabulary has %d tokens)", f->path, key,
                        (long long)v, (int)n_vocab);
    *id = (int32_t)v;
    return 0;
}

/* An optional boolean key with a default. */
static int load_flag(const GgufFile *f, const char *key, int dflt, int *out, BlvError *err) {
    *out = dflt;
    if (!gguf_find_kv(f, key)) return 0;
    return gguf_get_bool(f, key, out, err);
}

/* The scores array: llama.cpp accepts float32 or int32 elements. */
static int load_scores(const GgufFile *f, uint64_t n_vocab, float *scores, BlvError *err) {
    const char *key = "tokenizer.ggml.scores";
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_INT32) {
        if (gguf_get_array(f, key, GGUF_TYPE_FLOAT32, &kv, err) != 0) return -1;
    }
    if (kv->arr_count != n_vocab)
        return blv_fail(err, "%s: %s has %llu entries but tokenizer.ggml.tokens has %llu", f->path, key,
                        (unsigned long long)kv->arr_count, (unsigned long long)n_vocab);
    for (uint64_t i = 0; i < n_vocab; i++) scores[i] = (float)gguf_array_f64(kv, i);
    return 0;
}

static int load_types(const GgufFile *f, uint64_t n_vocab, int32_t *types, BlvError *err) {
    const char *key = "tokenizer.ggml.token_type";
    const GgufKV *kv;
    if (gguf_get_array(f, key, GGUF_TYPE_INT32, &kv, err) != 0) return -1;
    if (kv->arr_count != n_vocab)
        return blv_fail(err, "%s: %s has %llu entries but tokenizer.ggml.tokens has %llu", f->path, key,
                        (unsigned long long)kv->arr_count, (unsigned long long)n_vocab);
    for (uint64_t i = 0; i < n_vocab; i++) {
        int64_t v = gguf_array_i64(kv, i);
        /* llama.cpp treats any value it does not know as "undefined" */
        types[i] = (v >= TOKEN_TYPE_UNDEFINED && v <= TOKEN_TYPE_BYTE) ? (int32_t)v : TOKEN_TYPE_UNDEFINED;
    }
    return 0;
}

/* Copies the piece texts into one block and builds the piece -> id table. */
static int load_pieces(Tokenizer *t, const GgufFile *f, const GgufKV *tokens, BlvError *err) {
    TokenizerIndex *ix = t->index;
    uint64_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        GgufString s = gguf_array_string(tokens, (uint64_t)i);
        if (s.len > UINT32_MAX / 2)
            return blv_fail(err, "%s: tokenizer.ggml.tokens[%d] is %llu bytes long", f->path, (int)i,
                            (unsigned long long)s.len);
        total += s.len + 1;
    }
    if (total > SIZE_MAX) return blv_fail(err, "%s: tokenizer.ggml.tokens is too large", f->path);
    ix->blob = blv_malloc((size_t)total, "token pieces", err);
    if (!ix->blob) return -1;

    uint32_t n_slots = 1;
    while (n_slots < 2u * (uint32_t)t->n_vocab) n_slots *= 2;
    ix->mask = n_slots - 1;
    ix->slots = blv_malloc((size_t)n_slots * sizeof(int32_t), "token index", err);
    if (!ix->slots) return -1;
    memset(ix->slots, 0xff, (size_t)n_slots * sizeof(int32_t));

    char *p = ix->blob;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        GgufString s = gguf_array_string(tokens, (uint64_t)i);
        if (s.len) memcpy(p, s.ptr, s.len);
        p[s.len] = 0;
        t->pieces[i] = p;
        t->piece_lens[i] = (uint32_t)s.len;
        p += s.len + 1;
        if (s.len > ix->max_piece_len) ix->max_piece_len = (uint32_t)s.len;
        /* an empty piece can never match text; keeping it out of the table keeps lookups simple */
        if (s.len == 0) continue;
        int32_t other = index_insert(t, i);
        if (other >= 0)
            return blv_fail(err, "%s: tokenizer.ggml.tokens has the piece \"%.*s\" twice (ids %d and %d)", f->path,
                            (int)(s.len > 64 ? 64 : s.len), s.ptr, (int)other, (int)i);
    }
    return 0;
}

/* The <0xNN> byte-fallback tokens, found by text as llama.cpp's byte_to_token does. */
static void find_byte_tokens(Tokenizer *t) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
        t->byte_ids[b] = tokenizer_find(t, name, 6);
    }
}

/* Adjustments llama.cpp makes from token texts and the model name, which the file does not state:
 * end-of-generation tokens are made control tokens (so they are neither parsed from plain text nor
 * printed), and for Phi-3 the special tokens swallow the whitespace that follows them (the
 * tokenizer.json of Phi-3 marks its added tokens rstrip). */
static void derive_token_flags(Tokenizer *t, const GgufFile *f) {
    static const char *const eog_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>",
        "<|eom_id|>", "<EOT>",      "_<EOT>",  "<|end_of_text|>",
    };
    uint8_t *flags = t->index->flags;
    for (size_t k = 0; k < sizeof eog_texts / sizeof eog_texts[0]; k++) {
        int32_t id = tokenizer_find(t, eog_texts[k], strlen(eog_texts[k]));
        if (id < 0) continue;
        flags[id] |= TOKEN_FLAG_EOG;
        t->types[id] = TOKEN_TYPE_CONTROL;
    }
    if (t->eos_id >= 0) flags[t->eos_id] |= TOKEN_FLAG_EOG;

    const GgufKV *name = gguf_find_kv(f, "general.name");
    if (name && name->type == GGUF_TYPE_STRING) {
        /* llama.cpp lower-cases the name and looks for "phi-3" or "phi3" in it */
        char lower[256];
        size_t n = name->str.len < sizeof lower - 1 ? (size_t)name->str.len : sizeof lower - 1;
        for (size_t i = 0; i < n; i++) {
            char c = name->str.ptr[i];
            lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c == 0 ? ' ' : c;
        }
        lower[n] = 0;
        if (strstr(lower, "phi-3") || strstr(lower, "phi3")) {
            for (int32_t id = 0; id < t->n_vocab; id++)
                if (is_special_type(t->types[id])) flags[id] |= TOKEN_FLAG_RSTRIP;
            static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
            for (size_t k = 0; k < 3; k++) {
                int32_t id = tokenizer_find(t, keep[k], strlen(keep[k]));
                if (id >= 0) flags[id] &= (uint8_t)~TOKEN_FLAG_RSTRIP;
            }
        }
    }
}

typedef struct {
    uint32_t len;
    int32_t id;
} SpecialKey;

/* Longer special texts are tried first (llama.cpp sorts by length; ties here by id, for determinism). */
static int compare_specials(const void *a, const void *b) {
    const SpecialKey *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int build_specials(Tokenizer *t, BlvError *err) {
    TokenizerIndex *ix = t->index;
    size_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) n += is_special_type(t->types[id]) && t->piece_lens[id] > 0;
    SpecialKey *keys = blv_calloc(n, sizeof *keys, "special tokens", err);
    ix->specials = blv_calloc(n, sizeof(int32_t), "special tokens", err);
    if (!keys || !ix->specials) {
        free(keys);
        return -1;
    }
    size_t k = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_special_type(t->types[id]) && t->piece_lens[id] > 0) keys[k++] = (SpecialKey){t->piece_lens[id], id};
    qsort(keys, n, sizeof *keys, compare_specials);
    for (size_t i = 0; i < n; i++) ix->specials[i] = keys[i].id;
    ix->n_specials = (int32_t)n;
    free(keys);
    return 0;
}

static int load_vocab(Tokenizer *t, const GgufFile *f, BlvError *err) {
    char *model = NULL;
    if (gguf_get_string(f, "tokenizer.ggml.model", &model, err) != 0) return -1;
    int is_llama = strcmp(model, "llama") == 0;
    if (!is_llama) {
        blv_fail(err, "%s: tokenizer model \"%s\" is not supported (only SentencePiece \"llama\")", f->path, model);
        free(model);
        return -1;
    }
    free(model);

    const GgufKV *tokens;
    if (gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, err) != 0) return -1;
    if (tokens->arr_count == 0 || tokens->arr_count > (uint64_t)INT32_MAX / 2)
        return blv_fail(err, "%s: tokenizer.ggml.tokens has %llu entries", f->path,
                        (unsigned long long)tokens->arr_count);
    t->n_vocab = (int32_t)tokens->arr_count;
    size_t n = (size_t)t->n_vocab;

    t->index = blv_calloc(1, sizeof(TokenizerIndex), "tokenizer index", err);
    t->pieces = blv_calloc(n, sizeof(char *), "token pieces", err);
    t->piece_lens = blv_calloc(n, sizeof(uint32_t), "token pieces", err);
    t->scores = blv_calloc(n, sizeof(float), "token scores", err);
    t->types = blv_calloc(n, sizeof(int32_t), "token types", err);
    if (!t->index || !t->pieces || !t->piece_lens || !t->scores || !t->types) return -1;
    t->index->flags = blv_calloc(n, 1, "token flags", err);
    if (!t->index->flags) return -1;

    if (load_scores(f, tokens->arr_count, t->scores, err) != 0) return -1;
    if (load_types(f, tokens->arr_count, t->types, err) != 0) return -1;
    if (load_pieces(t, f, tokens, err) != 0) return -1;

    if (load_special_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos_id, err) != 0) return -1;
    if (load_special_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos_id, err) != 0) return -1;
    if (load_special_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk_id, err) != 0) return -1;
    if (load_special_id(f, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad_id, err) != 0) return -1;
    if (load_flag(f, "tokenizer.ggml.add_bos_token", 1, &t->add_bos, err) != 0) return -1;
    if (load_flag(f, "tokenizer.ggml.add_eos_token", 0, &t->add_eos, err) != 0) return -1;
    if (load_flag(f, "tokenizer.ggml.add_space_prefix", 1, &t->add_space_prefix, err) != 0) return -1;

    find_byte_tokens(t);
    derive_token_flags(t, f);
    return build_specials(t, err);
}

int tokenizer_load(Tokenizer *t, const GgufFile *f, BlvError *err) {
    memset(t, 0, sizeof *t);
    t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
    if (load_vocab(t, f, err) != 0) {
        tokenizer_free(t);
        return -1;
    }
    return 0;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    if (t->index) {
        free(t->index->blob);
        free(t->index->slots);
        free(t->index->specials);
        free(t->index->flags);
        free(t->index);
    }
    free(t->pieces);
    free(t->piece_lens);
    free(t->scores);
    free(t->types);
    memset(t, 0, sizeof *t);
    t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
}

int tokenizer_is_eog(const Tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab || !t->index) return 0;
    return (t->index->flags[id] & TOKEN_FLAG_EOG) != 0;
}

/* ---- output --------------------------------------------------------------------------------- */

/* Ids go to the caller's buffer while it has room; the count keeps going so the caller learns the
 * size it needs. */
typedef struct {
    int32_t *ids;
    int64_t cap;
    int64_t n;
} IdSink;

static void sink_push(IdSink *s, int32_t id) {
    if (s->n < s->cap) s->ids[s->n] = id;
    s->n++;
}

/* ---- the merge loop ------------------------------------------------------------------------- */

/* A symbol is a run of bytes of the escaped text; merging grows the left symbol over its right
 * neighbour and empties the right one (n = 0). prev/next link the live symbols. */
typedef struct {
    int32_t prev, next;
    uint32_t start, n;
} Symbol;

/* A candidate merge of symbols left and right (adjacent when pushed) into a piece of this score.
 * size is their combined length then: if either has changed since, the sizes no longer add up. */
typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} Bigram;

typedef struct {
    Bigram *items;
    size_t n, cap;
} BigramHeap;

/* Heap order, as llama.cpp's comparator: higher score first, then the leftmost pair. */
static int bigram_before(const Bigram *a, const Bigram *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static int heap_push(BigramHeap *h, Bigram b, BlvError *err) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        Bigram *items = realloc(h->items, cap * sizeof *items);
        if (!items) return blv_fail(err, "out of memory growing the tokenizer's merge queue to %zu entries", cap);
        h->items = items;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_before(&b, &h->items[parent])) break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = b;
    return 0;
}

static Bigram heap_pop(BigramHeap *h) {
    Bigram top = h->items[0];
    Bigram last = h->items[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) break;
        if (child + 1 < h->n && bigram_before(&h->items[child + 1], &h->items[child])) child++;
        if (!bigram_before(&h->items[child], &last)) break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->n > 0) h->items[i] = last;
    return top;
}

typedef struct {
    const Tokenizer *t;
    const char *text; /* the escaped fragment */
    Symbol *sym;
    BigramHeap heap;
} MergeState;

/* Queues the merge of two neighbouring symbols if their concatenation is a piece (of any type, as
 * in llama.cpp). */
static int try_add_bigram(MergeState *m, int32_t left, int32_t right, BlvError *err) {
    if (left < 0 || right < 0) return 0;
    const Symbol *l = &m->sym[left], *r = &m->sym[right];
    uint32_t size = l->n + r->n;
    int32_t id = tokenizer_find(m->t, m->text + l->start, size);
    if (id < 0) return 0;
    Bigram b = {m->t->scores[id], left, right, size};
    return heap_push(&m->heap, b, err);
}

/* Byte length of the UTF-8 sequence a lead byte announces, as llama.cpp's unicode_len_utf8: stray
 * continuation bytes count as one-byte characters. */
static uint32_t utf8_len(uint8_t lead) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[lead >> 4];
}

/* Writes one symbol that is not a piece as byte tokens. */
static int emit_bytes(const Tokenizer *t, const char *s, uint32_t n, IdSink *out, BlvError *err) {
    for (uint32_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t id = t->byte_ids[b];
        /* llama.cpp falls back to a piece that is the byte itself; past that it would throw */
        if (id < 0) id = tokenizer_find(t, s + i, 1);
        if (id < 0) id = t->unk_id;
        if (id < 0) return blv_fail(err, "cannot encode byte 0x%02X: the vocabulary has no <0x%02X> token and no unknown token", b, b);
        sink_push(out, id);
    }
    return 0;
}

/* Tokenizes one escaped fragment (spaces already "▁"). */
static int encode_escaped(const Tokenizer *t, const char *text, uint32_t len, IdSink *out, BlvError *err) {
    if (len == 0) return 0;
    uint32_t n_chars = 0;
    for (uint32_t off = 0; off < len; n_chars++) {
        uint32_t n = utf8_len((uint8_t)text[off]);
        off += n < len - off ? n : len - off;
    }
    MergeState m = {t, text, NULL, {NULL, 0, 0}};
    m.sym = malloc((size_t)n_chars * sizeof(Symbol));
    if (!m.sym) return blv_fail(err, "out of memory: %u tokenizer symbols", n_chars);

    /* one symbol per UTF-8 character; a truncated sequence at the end is clipped */
    int32_t n_sym = 0;
    for (uint32_t off = 0; off < len;) {
        uint32_t n = utf8_len((uint8_t)text[off]);
        if (n > len - off) n = len - off;
        m.sym[n_sym] = (Symbol){n_sym - 1, off + n == len ? -1 : n_sym + 1, off, n};
        n_sym++;
        off += n;
    }

    int rc = 0;
    for (int32_t i = 1; i < n_sym && rc == 0; i++) rc = try_add_bigram(&m, i - 1, i, err);

    while (m.heap.n > 0 && rc == 0) {
        Bigram b = heap_pop(&m.heap);
        Symbol *l = &m.sym[b.left], *r = &m.sym[b.right];
        /* stale: one side was already merged away, or grew (sizes only ever grow) */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) m.sym[r->next].prev = b.left;
        rc = try_add_bigram(&m, l->prev, b.left, err);
        if (rc == 0) rc = try_add_bigram(&m, b.left, l->next, err);
    }

    /* Every merge formed a piece, so a symbol that is not a piece is a single character: it goes
     * out as bytes (llama.cpp's resegment could only recurse into merges, which never happens). */
    for (int32_t i = 0; i != -1 && rc == 0; i = m.sym[i].next) {
        const Symbol *s = &m.sym[i];
        int32_t id = tokenizer_find(t, text + s->start, s->n);
        if (id >= 0) sink_push(out, id);
        else rc = emit_bytes(t, text + s->start, s->n, out, err);
    }
    free(m.heap.items);
    free(m.sym);
    return rc;
}

/* Escapes a raw fragment (optional leading "▁", spaces to "▁") and tokenizes it. */
static int encode_fragment(const Tokenizer *t, const char *raw, size_t len, int add_prefix, IdSink *out,
                           BlvError *err) {
    /* symbols address the escaped text with 32-bit offsets */
    uint64_t n_spaces = 0;
    for (size_t i = 0; i < len; i++) n_spaces += raw[i] == ' ';
    uint64_t escaped_len = (uint64_t)len + 2 * n_spaces + (add_prefix ? 3 : 0);
    if (escaped_len > (uint64_t)INT32_MAX)
        return blv_fail(err, "a text run of %zu bytes is too long to tokenize (at most %d bytes once each "
                        "space is the 3-byte \"\\u2581\")", len, INT32_MAX);
    char *buf = malloc(escaped_len ? (size_t)escaped_len : 1);
    if (!buf) return blv_fail(err, "out of memory: %llu bytes to tokenize", (unsigned long long)escaped_len);
    size_t n = 0;
    if (add_prefix) {
        memcpy(buf, SPACE_MARK, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (raw[i] == ' ') {
            memcpy(buf + n, SPACE_MARK, 3);
            n += 3;
        } else {
            buf[n++] = raw[i];
        }
    }
    int rc = encode_escaped(t, buf, (uint32_t)n, out, err);
    free(buf);
    return rc;
}

/* ---- special-token partition ---------------------------------------------------------------- */

/* A piece of the input: raw text [off, off+len) when token < 0, else a matched special token. */
typedef struct {
    size_t off, len;
    int32_t token;
} Fragment;

typedef struct {
    Fragment *items;
    size_t n, cap;
} FragmentList;

static int fragments_add(FragmentList *l, size_t off, size_t len, int32_t token, BlvError *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        Fragment *items = realloc(l->items, cap * sizeof *items);
        if (!items) return blv_fail(err, "out of memory splitting text at special tokens");
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = (Fragment){off, len, token};
    return 0;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Splits one raw fragment at every (non-overlapping, left to right) occurrence of special token id. */
static int split_fragment(const Tokenizer *t, const char *text, Fragment frag, int32_t id, FragmentList *out,
                          BlvError *err) {
    const char *needle = t->pieces[id];
    size_t needle_len = t->piece_lens[id];
    uint8_t flags = t->index->flags[id];
    size_t pos = frag.off, end = frag.off + frag.len;
    while (pos < end) {
        const char *hit = memmem(text + pos, end - pos, needle, needle_len);
        if (!hit) break;
        size_t match = (size_t)(hit - text);
        if (match > pos && fragments_add(out, pos, match - pos, -1, err) != 0) return -1;
        if (fragments_add(out, 0, 0, id, err) != 0) return -1;
        pos = match + needle_len;
        if (flags & TOKEN_FLAG_RSTRIP)
            while (pos < end && is_space(text[pos])) pos++;
    }
    if (pos < end) return fragments_add(out, pos, end - pos, -1, err);
    return 0;
}

/* Cuts the text at special tokens, longest special text first, as llama.cpp's tokenizer_st_partition.
 * Control and unknown tokens are only recognised with parse_special; user-defined ones always. */
static int partition(const Tokenizer *t, const char *text, size_t len, int parse_special, FragmentList *list,
                     BlvError *err) {
    if (len == 0) return 0;
    if (fragments_add(list, 0, len, -1, err) != 0) return -1;
    FragmentList next = {NULL, 0, 0};
    const TokenizerIndex *ix = t->index;
    for (int32_t k = 0; k < ix->n_specials; k++) {
        int32_t id = ix->specials[k];
        int32_t ty = t->types[id];
        if (!parse_special && (ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN)) continue;
        next.n = 0;
        for (size_t i = 0; i < list->n; i++) {
            Fragment f = list->items[i];
            int rc = f.token >= 0 ? fragments_add(&next, f.off, f.len, f.token, err)
                                  : split_fragment(t, text, f, id, &next, err);
            if (rc != 0) {
                free(next.items);
                return -1;
            }
        }
        FragmentList swap = *list;
        *list = next;
        next = swap;
    }
    free(next.items);
    return 0;
}

int64_t tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
                         int32_t *ids, int64_t max_ids, BlvError *err) {
    IdSink out = {ids, ids && max_ids > 0 ? max_ids : 0, 0};
    if (!text) len = 0;
    FragmentList frags = {NULL, 0, 0};
    if (partition(t, text, len, parse_special, &frags, err) != 0) {
        free(frags.items);
        return -1;
    }

    /* the dummy-prefix space goes before the first text and before text that follows a special token */
    int prev_special = 1;
    if (add_bos && t->add_bos && t->bos_id >= 0) sink_push(&out, t->bos_id);
    int rc = 0;
    for (size_t i = 0; i < frags.n && rc == 0; i++) {
        const Fragment *f = &frags.items[i];
        if (f->token >= 0) {
            sink_push(&out, f->token);
            prev_special = 1;
        } else {
            rc = encode_fragment(t, text + f->off, f->len, t->add_space_prefix && prev_special, &out, err);
            prev_special = 0;
        }
    }
    free(frags.items);
    if (rc != 0) return -1;
    if (add_bos && t->add_eos && t->eos_id >= 0) sink_push(&out, t->eos_id);
    return out.n;
}

/* ---- decoding ------------------------------------------------------------------------------- */

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decoded bytes go to buf while there is room; total counts them all. */
typedef struct {
    char *buf;
    size_t cap, n;
    int64_t total;
    int strip_space; /* drop one leading ' ' of the next bytes (the dummy prefix) */
} ByteSink;

static void bytes_put(ByteSink *s, const char *p, size_t n) {
    if (s->strip_space && n > 0) {
        if (p[0] == ' ') {
            p++;
            n--;
        }
        s->strip_space = 0;
    }
    s->total += (int64_t)n;
    size_t room = s->cap - s->n;
    if (n > room) n = room;
    if (n) memcpy(s->buf + s->n, p, n);
    s->n += n;
}

static size_t space_mark_at(const char *p, size_t left) {
    return left >= 3 && memcmp(p, SPACE_MARK, 3) == 0;
}

static void decode_into(const Tokenizer *t, int32_t prev_id, int32_t id, ByteSink *s) {
    s->strip_space = t->add_space_prefix && (prev_id < 0 || prev_id == t->bos_id);
    if (id >= 0 && id < t->n_vocab) {
        const char *piece = t->pieces[id];
        size_t len = t->piece_lens[id];
        switch (t->types[id]) {
        case TOKEN_TYPE_NORMAL:
            /* "▁" back to " ", the rest as it is */
            for (size_t i = 0; i < len;) {
                if (space_mark_at(piece + i, len - i)) {
                    bytes_put(s, " ", 1);
                    i += 3;
                    continue;
                }
                size_t j = i + 1;
                while (j < len && !space_mark_at(piece + j, len - j)) j++;
                bytes_put(s, piece + i, j - i);
                i = j;
            }
            break;
        case TOKEN_TYPE_USER_DEFINED:
            /* llama.cpp prints user-defined pieces verbatim */
            bytes_put(s, piece, len);
            break;
        case TOKEN_TYPE_BYTE:
            if (len == 6 && memcmp(piece, "<0x", 3) == 0 && piece[5] == '>' && hex_digit(piece[3]) >= 0 &&
                hex_digit(piece[4]) >= 0) {
                char byte = (char)(hex_digit(piece[3]) * 16 + hex_digit(piece[4]));
                bytes_put(s, &byte, 1);
            }
            break;
        default:
            /* control, unknown, unused and undefined tokens print nothing */
            break;
        }
    }
    s->strip_space = 0;
}

int tokenizer_decode_token(const Tokenizer *t, int32_t prev_id, int32_t id, char *buf, size_t cap) {
    ByteSink s = {buf, buf ? cap : 0, 0, 0, 0};
    decode_into(t, prev_id, id, &s);
    return (int)s.n;
}

int64_t tokenizer_decode(const Tokenizer *t, const int32_t *ids, int64_t n_ids, char *buf, size_t cap) {
    ByteSink s = {buf, buf ? cap : 0, 0, 0, 0};
    for (int64_t i = 0; i < n_ids; i++) decode_into(t, i > 0 ? ids[i - 1] : -1, ids[i], &s);
    return s.total;
}
