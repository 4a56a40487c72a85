/* spm.h — reading SentencePiece's `tokenizer.model`: a serialized protobuf `ModelProto`.
 *
 * The fields read (google/sentencepiece src/sentencepiece_model.proto; numbers checked against the
 * descriptor compiled into PyPI sentencepiece 0.2.3's sentencepiece_model_pb2.py):
 *
 *   message ModelProto {
 *     repeated SentencePiece pieces = 1;           // the vocabulary, id = position
 *     optional TrainerSpec trainer_spec = 2;
 *     optional NormalizerSpec normalizer_spec = 3;
 *   }                                              // (self_test_data = 4 and extensions: skipped)
 *   message SentencePiece { optional string piece = 1; optional float score = 2;
 *                           optional Type type = 3 [default = NORMAL]; }
 *     enum Type { NORMAL = 1; UNKNOWN = 2; CONTROL = 3; USER_DEFINED = 4; UNUSED = 5; BYTE = 6; }
 *   message TrainerSpec { optional ModelType model_type = 3 [default = UNIGRAM];
 *                         optional bool treat_whitespace_as_suffix = 24 [default = false];
 *                         optional bool byte_fallback = 35 [default = false];
 *                         optional int32 unk_id = 40 [default = 0];  optional int32 bos_id = 41 [default = 1];
 *                         optional int32 eos_id = 42 [default = 2];  optional int32 pad_id = 43 [default = -1]; }
 *     enum ModelType { UNIGRAM = 1; BPE = 2; WORD = 3; CHAR = 4; }
 *   message NormalizerSpec { optional string name = 1; optional bytes precompiled_charsmap = 2;
 *                            optional bool add_dummy_prefix = 3 [default = true];
 *                            optional bool remove_extra_whitespaces = 4 [default = true];
 *                            optional bool escape_whitespaces = 5 [default = true]; }
 *
 * The Type values are the same numbers as GGUF's tokenizer.ggml.token_type (tokenizer.h TOKEN_TYPE_*).
 *
 * The reader is a minimal protobuf wire-format decoder: varints (at most 10 bytes), length-delimited
 * fields, fixed32 and fixed64; unknown fields of any of those wire types are skipped; the deprecated
 * group wire types (3, 4) and field number 0 are refused. Nesting is fixed by the schema above (depth
 * 2), so there is no recursion. Every length is checked against the bytes that remain before it is
 * used; errors name the file, the byte offset and the field ("tokenizer.model: byte 1234: pieces[57]:
 * score has wire type 0, expected 5 (fixed32)"). Nothing here decides how text is tokenized: that is
 * tokenizer.c, from the GGUF arrays a converter makes of this. */
#ifndef BLUELMV_SPM_H
#define BLUELMV_SPM_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

enum { SPM_UNIGRAM = 1, SPM_BPE = 2, SPM_WORD = 3, SPM_CHAR = 4 };

typedef struct {
    int32_t n_pieces;
    char **pieces;              /* (n_pieces) NUL-terminated UTF-8 copies */
    uint32_t *piece_lens;       /* (n_pieces) byte lengths */
    float *scores;              /* (n_pieces) */
    int32_t *types;             /* (n_pieces) 1..6 as above (NORMAL when absent) */
    /* trainer_spec (proto defaults when absent) */
    int model_type;             /* SPM_* */
    int byte_fallback;
    int treat_whitespace_as_suffix;
    int32_t unk_id, bos_id, eos_id, pad_id;   /* -1: none */
    /* normalizer_spec */
    char *normalizer_name;      /* "" when absent */
    uint64_t charsmap_bytes;    /* size of precompiled_charsmap (0: none) */
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    int has_normalizer_spec;
} SpmModel;

/* Parses a serialized ModelProto. `name` labels messages. Checks: every piece present, non-empty,
 * valid UTF-8 and unique; types 1..6; unk_id a valid id (SentencePiece requires one) and bos/eos/pad
 * either -1 or a valid id. The model type is read, not judged (the converter decides what it takes).
 * On failure *m is left empty (spm_free is still safe). */
int spm_parse(SpmModel *m, const void *data, size_t len, const char *name, BlvError *err);
/* Reads and parses a file. */
int spm_load(SpmModel *m, const char *path, BlvError *err);
void spm_free(SpmModel *m);

const char *spm_model_type_name(int model_type);  /* "unigram", "bpe", "word", "char", "unknown" */
/* piece -> id, or -1 (linear search; for tests and small lookups) */
int32_t spm_find(const SpmModel *m, const char *piece);

#endif
