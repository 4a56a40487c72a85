/* json.h — a small, strict JSON reader (RFC 8259) for Hugging Face config files and safetensors
 * headers.
 *
 * json_parse reads a whole document into a tree. It accepts exactly RFC 8259's grammar: no
 * comments, no trailing commas, no single quotes, no NaN/Infinity, no leading zeros, no raw control
 * characters in strings, only valid UTF-8, no duplicate keys in an object (JSON leaves their meaning
 * open, and a safetensors header with a name twice would be ambiguous). A UTF-8 byte order mark at the
 * very start is skipped, as RFC 8259 §8.1 allows. Nesting deeper than JSON_MAX_DEPTH is refused, so
 * the recursion of the parser (and of json_free) is bounded no matter what the input holds.
 *
 * Errors name the document and the place: "config.json:12:5: expected ',' or '}' after object
 * member, found ']'". Lines and columns are 1-based; a column counts bytes from the line start.
 *
 * Objects keep their members in file order. Strings are unescaped to UTF-8 (\uXXXX surrogate pairs
 * combined) and NUL-terminated; `len` counts bytes, since "\u0000" may put a NUL inside. */
#ifndef BLUELMV_JSON_H
#define BLUELMV_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define JSON_MAX_DEPTH 64

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue JsonValue;
typedef struct JsonMember JsonMember;

struct JsonValue {
    JsonType type;
    int line, col;          /* where the value starts in the document */
    int boolean;            /* JSON_BOOL: 0 or 1 */
    double number;          /* JSON_NUMBER: the value as strtod reads it */
    int is_int;             /* JSON_NUMBER written without fraction or exponent and within int64 */
    int64_t integer;        /* JSON_NUMBER with is_int: the exact value */
    char *str;              /* JSON_STRING: unescaped UTF-8, NUL-terminated */
    size_t len;             /* JSON_STRING: bytes in str (without the terminating NUL) */
    size_t count;           /* JSON_ARRAY: elements; JSON_OBJECT: members */
    JsonValue *items;       /* JSON_ARRAY: count elements */
    JsonMember *members;    /* JSON_OBJECT: count members, in file order */
};

struct JsonMember {
    char *key;              /* unescaped UTF-8, NUL-terminated */
    size_t key_len;
    int line, col;          /* where the key starts */
    JsonValue value;
};

typedef struct {
    char *name;             /* the file name (or label) used in messages */
    JsonValue root;
} JsonDoc;

/* Parses `len` bytes of `text` (need not be NUL-terminated). `name` labels messages. On failure the
 * document is left empty (json_free is still safe to call). */
int json_parse(JsonDoc *doc, const char *name, const char *text, size_t len, BlvError *err);
/* Reads and parses a file; messages are labelled with `path`. */
int json_parse_file(JsonDoc *doc, const char *path, BlvError *err);
void json_free(JsonDoc *doc);

const char *json_type_name(JsonType type);   /* "null", "boolean", "number", "string", "array", "object" */

/* The member `key` of an object; NULL if obj is NULL, not an object, or has no such member. */
const JsonValue *json_get(const JsonValue *obj, const char *key);
/* Element i of an array; NULL if arr is not an array or i is out of range. */
const JsonValue *json_at(const JsonValue *arr, size_t i);

/* Typed reads of one value. `what` names it in messages, e.g. "\"hidden_size\"" or "shape[2]":
 *   "config.json:5:18: "hidden_size" must be an integer, got string". An integer is a number with an
 * integral value that int64 holds exactly (64, 64.0 and 6.4e1 all are; 2^53 < |x| only if written as
 * an integer). */
int json_as_int(const JsonDoc *doc, const JsonValue *v, const char *what, int64_t *out, BlvError *err);
int json_as_number(const JsonDoc *doc, const JsonValue *v, const char *what, double *out, BlvError *err);
int json_as_bool(const JsonDoc *doc, const JsonValue *v, const char *what, int *out, BlvError *err);
int json_as_string(const JsonDoc *doc, const JsonValue *v, const char *what, const char **out, BlvError *err);

/* Typed reads of an object member. The plain versions fail when the member is missing
 * ("config.json: "hidden_size" is missing"); the _or versions store `def` instead (a member that is
 * present with the wrong type is still an error). The string pointer points into the document. */
int json_get_int(const JsonDoc *doc, const JsonValue *obj, const char *key, int64_t *out, BlvError *err);
int json_get_int_or(const JsonDoc *doc, const JsonValue *obj, const char *key, int64_t def, int64_t *out,
                    BlvError *err);
int json_get_number(const JsonDoc *doc, const JsonValue *obj, const char *key, double *out, BlvError *err);
int json_get_number_or(const JsonDoc *doc, const JsonValue *obj, const char *key, double def, double *out,
                       BlvError *err);
int json_get_bool_or(const JsonDoc *doc, const JsonValue *obj, const char *key, int def, int *out, BlvError *err);
int json_get_string(const JsonDoc *doc, const JsonValue *obj, const char *key, const char **out, BlvError *err);
int json_get_string_or(const JsonDoc *doc, const JsonValue *obj, const char *key, const char *def,
                       const char **out, BlvError *err);

#endif
