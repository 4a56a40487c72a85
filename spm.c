/* spm.c — a minimal protobuf reader for SentencePiece's tokenizer.model (see spm.h for the schema).
 *
 * Protobuf wire format (protobuf.dev/programming-guides/encoding): a message is a sequence of
 * (key, value) records; key = varint (field_number << 3 | wire_type); wire type 0 = varint (at most
 * 10 bytes, 7 bits each, little-endian groups), 1 = 8 bytes, 2 = varint length + that many bytes
 * (strings, bytes, sub-messages), 5 = 4 bytes (float, little-endian). Fields may come in any order
 * and a singular field may repeat (the last value wins); unknown fields are skipped. int32 values are
 * varints of the value sign-extended to 64 bits, so -1 takes 10 bytes; they are truncated to 32 bits
 * as protobuf does. */
#include "spm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

typedef struct {
    const uint8_t *base;   /* start of the whole file: offsets in messages are relative to it */
    const uint8_t *p, *end;
    const char *name;      /* file name, for messages */
    const char *where;     /* "pieces[57]", "trainer_spec", ... */
} Pb;

static int pb_fail(const Pb *r, BlvError *err, const char *what) {
    return blv_fail(err, "%s: byte %lld: %s%s%s", r->name, (long long)(r->p - r->base), r->where ? r->where : "",
                    r->where ? ": " : "", what);
}

static int pb_varint(Pb *r, uint64_t *out, BlvError *err) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return pb_fail(r, err, "truncated varint (the message ends inside it)");
        uint8_t b = *r->p++;
        if (i == 9 && b > 1) return pb_fail(r, err, "varint longer than 64 bits");
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return pb_fail(r, err, "varint longer than 10 bytes");
}

/* Reads a key. Refuses field number 0 and the group wire types. */
static int pb_key(Pb *r, uint32_t *field, int *wire, BlvError *err) {
    uint64_t k;
    if (pb_varint(r, &k, err) != 0) return -1;
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    if ((k >> 3) == 0 || (k >> 3) > 0x1fffffff) {
        r->p--;
        return pb_fail(r, err, "invalid field number (is this a SentencePiece model file?)");
    }
    if (*wire != WIRE_VARINT && *wire != WIRE_FIXED64 && *wire != WIRE_LEN && *wire != WIRE_FIXED32) {
        char msg[128];
        snprintf(msg, sizeof msg, "field %u has wire type %d, which is not valid here (is this a SentencePiece model "
                 "file?)", *field, *wire);
        return pb_fail(r, err, msg);
    }
    return 0;
}

/* A length-delimited value: its bytes stay in the file image. */
static int pb_len(Pb *r, const uint8_t **data, uint64_t *n, BlvError *err) {
    uint64_t len;
    if (pb_varint(r, &len, err) != 0) return -1;
    if (len > (uint64_t)(r->end - r->p)) {
        char msg[160];
        snprintf(msg, sizeof msg, "a length-delimited field of %llu bytes runs past the end of its message (%lld "
                 "bytes left): the file is truncated or corrupt", (unsigned long long)len, (long long)(r->end - r->p));
        return pb_fail(r, err, msg);
    }
    *data = r->p;
    *n = len;
    r->p += len;
    return 0;
}

static int pb_fixed(Pb *r, int n, uint8_t *out, BlvError *err) {
    if (r->end - r->p < n) return pb_fail(r, err, "truncated fixed-width value");
    memcpy(out, r->p, (size_t)n);
    r->p += n;
    return 0;
}

static int pb_skip(Pb *r, int wire, BlvError *err) {
    uint64_t v;
    const uint8_t *d;
    uint8_t buf[8];
    switch (wire) {
    case WIRE_VARINT: return pb_varint(r, &v, err);
    case WIRE_FIXED64: return pb_fixed(r, 8, buf, err);
    case WIRE_FIXED32: return pb_fixed(r, 4, buf, err);
    default: return pb_len(r, &d, &v, err);
    }
}

static int pb_expect(Pb *r, const char *field, int wire, int want, BlvError *err) {
    if (wire == want) return 0;
    static const char *const names[6] = {"varint", "fixed64", "length-delimited", "group", "group", "fixed32"};
    char msg[160];
    snprintf(msg, sizeof msg, "%s has wire type %d, expected %d (%s)", field, wire, want, names[want]);
    return pb_fail(r, err, msg);
}

/* A sub-reader over bytes [data, data + n) of the same file. */
static Pb pb_sub(const Pb *r, const uint8_t *data, uint64_t n, const char *where) {
    Pb s = {r->base, data, data + n, r->name, where};
    return s;
}

/* ---- UTF-8 ------------------------------------------------------------------------------------ */

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const uint8_t *s, uint64_t n) {
    uint64_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t len, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (uint32_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

/* ---- the messages ------------------------------------------------------------------------------ */

static char *copy_string(const uint8_t *p, uint64_t n) {
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, (size_t)n);
    s[n] = 0;
    return s;
}

static int parse_piece(const Pb *parent, const uint8_t *data, uint64_t n, int32_t id, SpmModel *m, BlvError *err) {
    char where[48];
    snprintf(where, sizeof where, "pieces[%d]", (int)id);
    Pb r = pb_sub(parent, data, n, where);
    const uint8_t *text = NULL;
    uint64_t text_len = 0;
    float score = 0.0f;
    int32_t type = 1;  /* NORMAL */
    while (r.p < r.end) {
        uint32_t field;
        int wire;
        uint64_t v;
        uint8_t b[4] = {0};
        if (pb_key(&r, &field, &wire, err) != 0) return -1;
        switch (field) {
        case 1:
            if (pb_expect(&r, "piece", wire, WIRE_LEN, err) || pb_len(&r, &text, &text_len, err)) return -1;
            break;
        case 2:
            if (pb_expect(&r, "score", wire, WIRE_FIXED32, err) || pb_fixed(&r, 4, b, err)) return -1;
            memcpy(&score, b, 4);  /* little-endian float, as the format stores it */
            break;
        case 3:
            if (pb_expect(&r, "type", wire, WIRE_VARINT, err) || pb_varint(&r, &v, err)) return -1;
            if (v < 1 || v > 6) {
                char msg[96];
                snprintf(msg, sizeof msg, "type %llu is not a SentencePiece piece type (1..6)", (unsigned long long)v);
                return pb_fail(&r, err, msg);
            }
            type = (int32_t)v;
            break;
        default:
            if (pb_skip(&r, wire, err) != 0) return -1;
        }
    }
    if (!text) return blv_fail(err, "%s: %s has no piece text (field 1)", r.name, where);
    if (text_len == 0) return blv_fail(err, "%s: %s is an empty piece", r.name, where);
    if (text_len > UINT32_MAX / 2) return blv_fail(err, "%s: %s is %llu bytes long", r.name, where,
                                                    (unsigned long long)text_len);
    if (!utf8_valid(text, text_len)) return blv_fail(err, "%s: %s is not valid UTF-8", r.name, where);
    m->pieces[id] = copy_string(text, text_len);
    if (!m->pieces[id]) return blv_fail(err, "%s: out of memory", r.name);
    m->piece_lens[id] = (uint32_t)text_len;
    m->scores[id] = score;
    m->types[id] = type;
    return 0;
}

static int parse_trainer_spec(const Pb *parent, const uint8_t *data, uint64_t n, SpmModel *m, BlvError *err) {
    Pb r = pb_sub(parent, data, n, "trainer_spec");
    while (r.p < r.end) {
        uint32_t field;
        int wire;
        uint64_t v;
        if (pb_key(&r, &field, &wire, err) != 0) return -1;
        const char *name = field == 3 ? "model_type" : field == 24 ? "treat_whitespace_as_suffix"
                         : field == 35 ? "byte_fallback" : field == 40 ? "unk_id" : field == 41 ? "bos_id"
                         : field == 42 ? "eos_id" : field == 43 ? "pad_id" : NULL;
        if (!name) {
            if (pb_skip(&r, wire, err) != 0) return -1;
            continue;
        }
        if (pb_expect(&r, name, wire, WIRE_VARINT, err) || pb_varint(&r, &v, err)) return -1;
        int32_t i32 = (int32_t)(uint32_t)v;  /* protobuf's int32 truncation */
        switch (field) {
        case 3: m->model_type = i32; break;
        case 24: m->treat_whitespace_as_suffix = v != 0; break;
        case 35: m->byte_fallback = v != 0; break;
        case 40: m->unk_id = i32; break;
        case 41: m->bos_id = i32; break;
        case 42: m->eos_id = i32; break;
        case 43: m->pad_id = i32; break;
        }
    }
    return 0;
}

static int parse_normalizer_spec(const Pb *parent, const uint8_t *data, uint64_t n, SpmModel *m, BlvError *err) {
    Pb r = pb_sub(parent, data, n, "normalizer_spec");
    m->has_normalizer_spec = 1;
    while (r.p < r.end) {
        uint32_t field;
        int wire;
        uint64_t v;
        const uint8_t *s;
        if (pb_key(&r, &field, &wire, err) != 0) return -1;
        switch (field) {
        case 1:
            if (pb_expect(&r, "name", wire, WIRE_LEN, err) || pb_len(&r, &s, &v, err)) return -1;
            if (!utf8_valid(s, v) || memchr(s, 0, (size_t)v)) return pb_fail(&r, err, "name is not a valid string");
            free(m->normalizer_name);
            m->normalizer_name = copy_string(s, v);
            if (!m->normalizer_name) return blv_fail(err, "%s: out of memory", r.name);
            break;
        case 2:
            if (pb_expect(&r, "precompiled_charsmap", wire, WIRE_LEN, err) || pb_len(&r, &s, &v, err)) return -1;
            m->charsmap_bytes = v;
            break;
        case 3:
        case 4:
        case 5: {
            const char *name = field == 3 ? "add_dummy_prefix" : field == 4 ? "remove_extra_whitespaces"
                                                                            : "escape_whitespaces";
            if (pb_expect(&r, name, wire, WIRE_VARINT, err) || pb_varint(&r, &v, err)) return -1;
            int *dst = field == 3 ? &m->add_dummy_prefix : field == 4 ? &m->remove_extra_whitespaces
                                                                      : &m->escape_whitespaces;
            *dst = v != 0;
            break;
        }
        default:
            if (pb_skip(&r, wire, err) != 0) return -1;
        }
    }
    return 0;
}

/* ---- duplicate check -------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int check_unique(const SpmModel *m, const char *name, BlvError *err) {
    uint64_t n_slots = 1;
    while (n_slots < 2 * (uint64_t)m->n_pieces) n_slots *= 2;
    int32_t *slots = malloc((size_t)n_slots * sizeof *slots);
    if (!slots) return blv_fail(err, "%s: out of memory", name);
    memset(slots, 0xff, (size_t)n_slots * sizeof *slots);
    int rc = 0;
    for (int32_t i = 0; i < m->n_pieces && rc == 0; i++) {
        for (uint64_t s = fnv1a(m->pieces[i], m->piece_lens[i]) & (n_slots - 1);; s = (s + 1) & (n_slots - 1)) {
            int32_t o = slots[s];
            if (o < 0) {
                slots[s] = i;
                break;
            }
            if (m->piece_lens[o] == m->piece_lens[i] && memcmp(m->pieces[o], m->pieces[i], m->piece_lens[i]) == 0) {
                rc = blv_fail(err, "%s: the piece \"%.64s\" appears twice (ids %d and %d)", name, m->pieces[i], (int)o,
                              (int)i);
                break;
            }
        }
    }
    free(slots);
    return rc;
}

/* ---- the model -------------------------------------------------------------------------------- */

static void set_defaults(SpmModel *m) {
    memset(m, 0, sizeof *m);
    m->model_type = SPM_UNIGRAM;
    m->unk_id = 0;
    m->bos_id = 1;
    m->eos_id = 2;
    m->pad_id = -1;
    m->add_dummy_prefix = 1;
    m->remove_extra_whitespaces = 1;
    m->escape_whitespaces = 1;
}

static int check_id(const SpmModel *m, const char *name, const char *what, int32_t id, int optional, BlvError *err) {
    if (optional && id == -1) return 0;
    if (id < 0 || id >= m->n_pieces)
        return blv_fail(err, "%s: trainer_spec.%s = %d is not a piece id (the model has %d pieces%s)", name, what,
                        (int)id, (int)m->n_pieces, optional ? "; -1 means none" : "");
    return 0;
}

static int parse_model(SpmModel *m, const uint8_t *data, size_t len, const char *name, BlvError *err) {
    Pb r = {data, data, data + len, name, NULL};
    /* pass 1: count the pieces (and check the top-level framing) */
    uint64_t count = 0;
    while (r.p < r.end) {
        uint32_t field;
        int wire;
        if (pb_key(&r, &field, &wire, err) != 0) return -1;
        if (field == 1 && pb_expect(&r, "pieces", wire, WIRE_LEN, err) != 0) return -1;
        if (pb_skip(&r, wire, err) != 0) return -1;
        count += field == 1;
    }
    if (count == 0) return blv_fail(err, "%s: no pieces: not a SentencePiece model file (or an empty one)", name);
    if (count > (uint64_t)INT32_MAX / 4) return blv_fail(err, "%s: %llu pieces is too many", name,
                                                         (unsigned long long)count);
    m->n_pieces = (int32_t)count;
    size_t n = (size_t)count;
    m->pieces = calloc(n, sizeof *m->pieces);
    m->piece_lens = calloc(n, sizeof *m->piece_lens);
    m->scores = calloc(n, sizeof *m->scores);
    m->types = calloc(n, sizeof *m->types);
    if (!m->pieces || !m->piece_lens || !m->scores || !m->types) return blv_fail(err, "%s: out of memory", name);

    /* pass 2: the contents */
    r.p = data;
    int32_t id = 0;
    while (r.p < r.end) {
        uint32_t field;
        int wire;
        const uint8_t *sub;
        uint64_t sub_len;
        if (pb_key(&r, &field, &wire, err) != 0) return -1;
        if (field > 3) {
            if (pb_skip(&r, wire, err) != 0) return -1;
            continue;
        }
        if (pb_expect(&r, field == 1 ? "pieces" : field == 2 ? "trainer_spec" : "normalizer_spec", wire, WIRE_LEN,
                      err) != 0 ||
            pb_len(&r, &sub, &sub_len, err) != 0)
            return -1;
        int rc = field == 1 ? parse_piece(&r, sub, sub_len, id++, m, err)
               : field == 2 ? parse_trainer_spec(&r, sub, sub_len, m, err)
                            : parse_normalizer_spec(&r, sub, sub_len, m, err);
        if (rc != 0) return -1;
    }
    if (!m->normalizer_name) {
        m->normalizer_name = copy_string((const uint8_t *)"", 0);
        if (!m->normalizer_name) return blv_fail(err, "%s: out of memory", name);
    }
    if (check_id(m, name, "unk_id", m->unk_id, 0, err) || check_id(m, name, "bos_id", m->bos_id, 1, err) ||
        check_id(m, name, "eos_id", m->eos_id, 1, err) || check_id(m, name, "pad_id", m->pad_id, 1, err))
        return -1;
    return check_unique(m, name, err);
}

int spm_parse(SpmModel *m, const void *data, size_t len, const char *name, BlvError *err) {
    set_defaults(m);
    if (!name) name = "tokenizer.model";
    if (!data || len == 0) return blv_fail(err, "%s: empty file: not a SentencePiece model", name);
    if (parse_model(m, data, len, name, err) != 0) {
        spm_free(m);
        return -1;
    }
    return 0;
}

int spm_load(SpmModel *m, const char *path, BlvError *err) {
    char *data;
    size_t len;
    set_defaults(m);
    if (blv_read_file(path, &data, &len, err) != 0) return -1;
    int rc = spm_parse(m, data, len, path, err);
    free(data);
    return rc;
}

void spm_free(SpmModel *m) {
    if (!m) return;
    if (m->pieces)
        for (int32_t i = 0; i < m->n_pieces; i++) free(m->pieces[i]);
    free(m->pieces);
    free(m->piece_lens);
    free(m->scores);
    free(m->types);
    free(m->normalizer_name);
    set_defaults(m);
}

const char *spm_model_type_name(int model_type) {
    switch (model_type) {
    case SPM_UNIGRAM: return "unigram";
    case SPM_BPE: return "bpe";
    case SPM_WORD: return "word";
    case SPM_CHAR: return "char";
    default: return "unknown";
    }
}

int32_t spm_find(const SpmModel *m, const char *piece) {
    size_t n = strlen(piece);
    for (int32_t i = 0; i < m->n_pieces; i++)
        if (m->piece_lens[i] == n && memcmp(m->pieces[i], piece, n) == 0) return i;
    return -1;
}
