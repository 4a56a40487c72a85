/* tokenizer.h — SentencePiece BPE tokenization as llama.cpp's `llama` vocabulary type does it.
 *
 * Data comes from the GGUF `tokenizer.ggml.*` arrays: tokens (pieces, `▁` = U+2581 for space),
 * scores (merge priority: higher merges first), token_type (1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte), bos/eos/unknown/padding ids, add_bos_token / add_eos_token,
 * add_space_prefix (default true for `llama`).
 *
 * Encoding: spaces become `▁`, a dummy-prefix `▁` is prepended when add_space_prefix is set,
 * the text is split into UTF-8 characters, adjacent symbols are merged by highest score, and any
 * symbol that is not a piece falls back to its bytes as `<0xNN>` tokens. With parse_special,
 * control and user-defined token texts that appear in the input are matched as whole tokens first.
 * Decoding maps `▁` back to space, byte tokens to their byte, control tokens to nothing. */
#ifndef BLUELMV_TOKENIZER_H
#define BLUELMV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"
#include "util.h"

enum {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
};

typedef struct TokenizerIndex TokenizerIndex; /* piece -> id lookup (opaque) */

typedef struct {
    int32_t n_vocab;
    char **pieces;          /* (n_vocab) NUL-terminated piece texts (copies) */
    uint32_t *piece_lens;   /* (n_vocab) byte lengths */
    float *scores;          /* (n_vocab) */
    int32_t *types;         /* (n_vocab) TOKEN_TYPE_* */
    int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos, add_eos, add_space_prefix;
    int32_t byte_ids[256];  /* id of <0xNN>, or -1 */
    TokenizerIndex *index;
} Tokenizer;

/* Loads from the tokenizer.ggml.* keys of an open GGUF file (the file may be closed afterwards).
 * Fails with a message naming the file and the missing/malformed key, or if the model is not
 * "llama" (SentencePiece). */
int tokenizer_load(Tokenizer *t, const GgufFile *f, BlvError *err);
void tokenizer_free(Tokenizer *t);

/* Encodes len bytes of text. add_bos is llama.cpp's add_special: it prepends BOS when the vocabulary
 * has one and its add_bos_token is set (the default), and appends EOS when add_eos_token is set.
 * parse_special: control and unknown token texts in the input become those tokens (user-defined
 * token texts always do). Writes at most
 * max_ids ids to ids and returns the total number the text needs (so a caller can retry with a
 * bigger buffer), or -1 with err set (e.g. no way to encode a byte because byte tokens are missing). */
int64_t tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
                         int32_t *ids, int64_t max_ids, BlvError *err);

/* The bytes of one token as it appears in decoded text. prev_id is the token before it (-1 if none):
 * the leading space of the first piece after BOS (or at the start) is dropped, as SentencePiece does
 * when it removes the dummy prefix. Control, unknown and unused tokens give ""; user-defined
 * pieces come out verbatim (as llama.cpp prints them). Returns the byte count written into
 * buf (at most cap; pieces longer than cap are cut). */
int tokenizer_decode_token(const Tokenizer *t, int32_t prev_id, int32_t id, char *buf, size_t cap);

/* Looks up a piece's id by its exact text (with `▁` for spaces); -1 if absent. */
int32_t tokenizer_find(const Tokenizer *t, const char *piece, size_t len);

/* Decodes a whole id sequence (each token's prev_id is the one before it, -1 for the first) into
 * buf, writing at most cap bytes; returns the total length of the text (so a caller can retry with
 * a bigger buffer). */
int64_t tokenizer_decode(const Tokenizer *t, const int32_t *ids, int64_t n_ids, char *buf, size_t cap);

/* 1 if generation should stop at this token: EOS, or a token llama.cpp treats as end-of-generation
 * by its text ("<|end|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "</s>", ...). Such tokens are
 * typed TOKEN_TYPE_CONTROL after loading even when the file says otherwise, as in llama.cpp. */
int tokenizer_is_eog(const Tokenizer *t, int32_t id);

#endif
