/* tests/test_image.c — the image decoders (image.c, image_png.c, image_jpeg.c).
 *
 * References, all independent of our code: Pillow's decodes (tests/data/images/golden.txt, made by
 * tools/make_image_golden.py: a CRC-32 of the RGB bytes per file), PngSuite's check images, the
 * ImageMagick-made reference PNGs of the jpeg-decoder reftest set, hand-built zlib/PNG/JPEG
 * variations, and the jpeg-decoder crash corpus. Corrupt input must give an error that names the
 * file, never a crash (run under ASan/UBSan), hang or partial image. */
#include "test.h"
#include "../image.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint8_t *read_bytes(const char *path, size_t *n) {
    char *data = NULL;
    BlvError err;
    if (blv_read_file(path, &data, n, &err) != 0) return NULL;
    return (uint8_t *)data;
}

/* Decodes from an exact-size heap copy, so that ASan sees any read past the end. */
static int decode_exact(const uint8_t *data, size_t n, const char *name, const ImageLimits *limits,
                        Image *img, BlvError *err) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, data, n);
    int rc = image_decode_memory(img, copy, n, name, limits, err);
    free(copy);
    return rc;
}

static uint32_t image_hash(const Image *img) {
    return image_crc32(img->rgb, (size_t)img->width * (size_t)img->height * 3);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* A failed decode must leave an empty image and a message that starts with the file name. */
static void check_clean_failure(int rc, const Image *img, const BlvError *err, const char *name) {
    if (rc == 0) return;
    CHECK(img->rgb == NULL && img->width == 0 && img->height == 0, "%s: failed decode left an image", name);
    CHECK(starts_with(err->msg, name), "%s: message does not name the file: %s", name, err->msg);
}

/* Files under a directory (relative to tests/data), recursively, sorted. */
typedef struct {
    char **paths;
    int n, cap;
} FileList;

static void list_add(FileList *l, const char *p) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->paths = realloc(l->paths, (size_t)l->cap * sizeof *l->paths);
    }
    l->paths[l->n++] = strdup(p);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list_files(FileList *l, const char *rel_dir) {
    /* breadth-first with an explicit queue of directories: no recursion */
    FileList dirs = {0};
    list_add(&dirs, rel_dir);
    for (int i = 0; i < dirs.n; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s", test_data(dirs.paths[i]));
        DIR *d = opendir(full);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char rel[4096], path[4096];
            snprintf(rel, sizeof rel, "%s/%s", dirs.paths[i], e->d_name);
            snprintf(path, sizeof path, "%s", test_data(rel));
            DIR *sub = opendir(path);
            if (sub) {
                closedir(sub);
                list_add(&dirs, rel);
            } else {
                list_add(l, rel);
            }
        }
        closedir(d);
    }
    for (int i = 0; i < dirs.n; i++) free(dirs.paths[i]);
    free(dirs.paths);
    qsort(l->paths, (size_t)l->n, sizeof *l->paths, cmp_str);
}

static void list_free(FileList *l) {
    for (int i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

/* golden.txt: "<path under images/> <width> <height> <crc32 hex>" from Pillow. */
typedef struct {
    char path[256];
    int w, h;
    uint32_t crc;
} Golden;

static Golden *goldens;
static int n_goldens;

static void load_goldens(void) {
    if (goldens) return;
    size_t n;
    char *text = (char *)read_bytes(test_data("images/golden.txt"), &n);
    if (!text) return;
    int cap = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        Golden g;
        if (sscanf(line, "%255s %d %d %x", g.path, &g.w, &g.h, &g.crc) != 4) continue;
        if (n_goldens == cap) {
            cap = cap ? 2 * cap : 512;
            goldens = realloc(goldens, (size_t)cap * sizeof *goldens);
        }
        goldens[n_goldens++] = g;
    }
    free(text);
}

/* The golden entry for a path relative to tests/data (starting "images/"), or NULL. */
static const Golden *find_golden(const char *rel) {
    load_goldens();
    const char *p = starts_with(rel, "images/") ? rel + 7 : rel;
    for (int i = 0; i < n_goldens; i++)
        if (strcmp(goldens[i].path, p) == 0) return &goldens[i];
    return NULL;
}

/* Decodes a test file and checks it against Pillow's golden hash. Returns 1 if it matched. */
static int check_against_golden(const char *rel) {
    const Golden *g = find_golden(rel);
    CHECK(g != NULL, "%s: no golden entry", rel);
    if (!g) return 0;
    Image img;
    BlvError err = {{0}};
    int rc = image_load(&img, test_data(rel), NULL, &err);
    CHECK(rc == 0, "%s: %s", rel, err.msg);
    if (rc != 0) return 0;
    int ok = img.width == g->w && img.height == g->h && image_hash(&img) == g->crc;
    CHECK(ok, "%s: decoded %dx%d crc %08x, Pillow %dx%d crc %08x", rel, img.width, img.height, image_hash(&img), g->w,
          g->h, g->crc);
    image_free(&img);
    return ok;
}

/* Max and mean absolute difference between two images of the same size. */
static int image_diff(const Image *a, const Image *b, int *max_diff, double *mean_diff) {
    if (a->width != b->width || a->height != b->height) return -1;
    size_t n = (size_t)a->width * (size_t)a->height * 3;
    int64_t sum = 0;
    int mx = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a->rgb[i] - (int)b->rgb[i]);
        sum += d;
        if (d > mx) mx = d;
    }
    *max_diff = mx;
    *mean_diff = n ? (double)sum / (double)n : 0;
    return 0;
}

/* ---- checksums ------------------------------------------------------------------------------- */

static void test_checksums(void) {
    /* the standard check values: CRC-32/ISO-HDLC of "123456789", Adler-32 of "Wikipedia" */
    CHECK(image_crc32((const uint8_t *)"123456789", 9) == 0xCBF43926u, "crc32 %08x", image_crc32((const uint8_t *)"123456789", 9));
    CHECK(image_crc32(NULL, 0) == 0, "crc32 of nothing");
    CHECK(image_adler32((const uint8_t *)"Wikipedia", 9) == 0x11E60398u, "adler32 %08x",
          image_adler32((const uint8_t *)"Wikipedia", 9));
    CHECK(image_adler32(NULL, 0) == 1, "adler32 of nothing");
    /* long input: the modulo reduction every 5552 bytes */
    size_t n = 100000;
    uint8_t *buf = malloc(n);
    memset(buf, 0xFF, n);
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + 0xFF) % 65521;
        b = (b + a) % 65521;
    }
    CHECK(image_adler32(buf, n) == (b << 16 | a), "adler32 of 100000 x 0xFF");
    free(buf);
}

/* ---- inflate ---------------------------------------------------------------------------------- */

static void test_inflate_streams(void) {
    size_t plain_n;
    uint8_t *plain = read_bytes(test_data("images/gen/zlib/plain.bin"), &plain_n);
    CHECK(plain != NULL, "plain.bin missing");
    if (!plain) return;
    /* first block type of each stream (RFC 1951 §3.2.3: bits 1-2 of the first byte after CMF/FLG) */
    const struct {
        const char *file;
        int btype;
    } streams[] = {{"stored", 0}, {"fixed", 1}, {"dynamic", 2}, {"multi", -1}};
    for (int i = 0; i < 4; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "images/gen/zlib/%s.zz", streams[i].file);
        size_t n;
        uint8_t *z = read_bytes(test_data(rel), &n);
        CHECK(z != NULL, "%s missing", rel);
        if (!z) continue;
        if (streams[i].btype >= 0) CHECK(((z[2] >> 1) & 3) == streams[i].btype, "%s: first block type %d", rel, (z[2] >> 1) & 3);
        uint8_t *out = malloc(plain_n);
        BlvError err = {{0}};
        int rc = image_zlib_decompress(z, n, out, plain_n, rel, &err);
        CHECK(rc == 0, "%s: %s", rel, err.msg);
        CHECK(rc != 0 || memcmp(out, plain, plain_n) == 0, "%s: wrong output", rel);
        /* wrong expected sizes */
        rc = image_zlib_decompress(z, n, out, plain_n - 1, rel, &err);
        CHECK(rc != 0 && strstr(err.msg, "more compressed data"), "%s: one byte short: %s", rel, err.msg);
        uint8_t *big = malloc(plain_n + 1);
        rc = image_zlib_decompress(z, n, big, plain_n + 1, rel, &err);
        CHECK(rc != 0 && strstr(err.msg, "holds"), "%s: one byte long: %s", rel, err.msg);
        free(big);
        /* a wrong Adler-32, trailing bytes, and every truncation */
        uint8_t *bad = malloc(n + 1);
        memcpy(bad, z, n);
        bad[n - 1] ^= 1;
        rc = image_zlib_decompress(bad, n, out, plain_n, rel, &err);
        CHECK(rc != 0 && strstr(err.msg, "Adler-32"), "%s: adler: %s", rel, err.msg);
        bad[n - 1] ^= 1;
        bad[n] = 0;
        rc = image_zlib_decompress(bad, n + 1, out, plain_n, rel, &err);
        CHECK(rc != 0 && strstr(err.msg, "after the end"), "%s: trailing byte: %s", rel, err.msg);
        free(bad);
        int truncation_ok = 1;
        for (size_t k = 0; k < n; k++) {
            uint8_t *t = malloc(k ? k : 1);
            memcpy(t, z, k);
            if (image_zlib_decompress(t, k, out, plain_n, rel, &err) == 0) truncation_ok = 0;
            free(t);
        }
        CHECK(truncation_ok, "%s: a truncated stream decoded", rel);
        free(out);
        free(z);
    }
    size_t n;
    uint8_t *z = read_bytes(test_data("images/gen/zlib/empty.zz"), &n);
    BlvError err = {{0}};
    uint8_t dummy;
    CHECK(z && image_zlib_decompress(z, n, &dummy, 0, "empty", &err) == 0, "empty stream: %s", err.msg);
    free(z);
    free(plain);
}

/* A deflate bit writer for hand-made streams (RFC 1951 §3.1.1: values LSB first, Huffman codes
 * MSB first). */
typedef struct {
    uint8_t buf[4096];
    size_t n;
    int bit;
} BitWriter;

static void put_bits(BitWriter *w, uint32_t v, int k) {
    for (int i = 0; i < k; i++) {
        if (w->bit == 0) w->buf[w->n++] = 0;
        w->buf[w->n - 1] |= (uint8_t)(((v >> i) & 1) << w->bit);
        w->bit = (w->bit + 1) & 7;
    }
}

static void put_code(BitWriter *w, uint32_t code, int len) {
    for (int i = len - 1; i >= 0; i--) put_bits(w, (code >> i) & 1, 1);
}

/* Canonical codes for a list of code lengths (§3.2.2). */
static void canonical_codes(const uint8_t *lengths, int n, uint32_t *codes) {
    int count[16] = {0};
    uint32_t next[16] = {0};
    for (int i = 0; i < n; i++) count[lengths[i]]++;
    count[0] = 0;
    uint32_t code = 0;
    for (int len = 1; len < 16; len++) {
        code = (code + (uint32_t)count[len - 1]) << 1;
        next[len] = code;
    }
    for (int i = 0; i < n; i++)
        if (lengths[i]) codes[i] = next[lengths[i]]++;
}

/* Fixed-code symbols (§3.2.6). */
static void put_fixed_litlen(BitWriter *w, int sym) {
    if (sym < 144) put_code(w, 0x30 + (uint32_t)sym, 8);
    else if (sym < 256) put_code(w, 0x190 + (uint32_t)(sym - 144), 9);
    else if (sym < 280) put_code(w, (uint32_t)(sym - 256), 7);
    else put_code(w, 0xC0 + (uint32_t)(sym - 280), 8);
}

/* Wraps deflate data in a zlib header and the Adler-32 of `expect`, then inflates it into exactly
 * expect_n bytes. Returns the result; the message is in err. */
static int inflate_handmade(BitWriter *w, const uint8_t *expect, size_t expect_n, BlvError *err) {
    uint8_t z[4200];
    z[0] = 0x78;
    z[1] = 0x01; /* 0x7801 is a multiple of 31 */
    memcpy(z + 2, w->buf, w->n);
    uint32_t a = image_adler32(expect, expect_n);
    for (int i = 0; i < 4; i++) z[2 + w->n + (size_t)i] = (uint8_t)(a >> (24 - 8 * i));
    uint8_t out[512];
    int rc = image_zlib_decompress(z, w->n + 6, out, expect_n, "handmade", err);
    if (rc == 0 && memcmp(out, expect, expect_n) != 0) return blv_fail(err, "handmade: wrong output");
    return rc;
}

/* A dynamic block header (§3.2.7) with the given literal/length and distance code lengths, sent
 * with a fixed code-length code (symbols 0..12 four bits, 13..18 five bits: complete), each length
 * coded directly. `cl_override` (if not NULL) replaces the code-length code lengths; `prefix`
 * symbols (with their extra bits) are sent before the lengths. */
typedef struct {
    int sym, extra, extra_bits;
} ClSym;

static void put_dynamic_header(BitWriter *w, const uint8_t *lit, int nlit, const uint8_t *dist, int ndist,
                               const uint8_t *cl_override, const ClSym *prefix, int nprefix, int hlit_field) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint8_t cl[19];
    for (int i = 0; i < 19; i++) cl[i] = i <= 12 ? 4 : 5;
    if (cl_override) memcpy(cl, cl_override, 19);
    uint32_t codes[19] = {0};
    canonical_codes(cl, 19, codes);
    put_bits(w, 1, 1); /* BFINAL */
    put_bits(w, 2, 2); /* dynamic */
    put_bits(w, (uint32_t)(hlit_field >= 0 ? hlit_field : nlit - 257), 5);
    put_bits(w, (uint32_t)(ndist - 1), 5);
    put_bits(w, 15, 4); /* HCLEN = 19 */
    for (int i = 0; i < 19; i++) put_bits(w, cl[order[i]], 3);
    for (int i = 0; i < nprefix; i++) {
        put_code(w, codes[prefix[i].sym], cl[prefix[i].sym]);
        put_bits(w, (uint32_t)prefix[i].extra, prefix[i].extra_bits);
    }
    for (int i = 0; i < nlit; i++) put_code(w, codes[lit[i]], cl[lit[i]]);
    for (int i = 0; i < ndist; i++) put_code(w, codes[dist[i]], cl[dist[i]]);
}

static void test_inflate_handmade(void) {
    BlvError err = {{0}};
    const uint8_t abc[3] = {'a', 'b', 'c'};

    /* block type 3 */
    BitWriter w = {{0}, 0, 0};
    put_bits(&w, 1, 1);
    put_bits(&w, 3, 2);
    CHECK(inflate_handmade(&w, abc, 0, &err) != 0 && strstr(err.msg, "block type"), "btype 3: %s", err.msg);

    /* stored block with LEN != ~NLEN */
    memset(&w, 0, sizeof w);
    put_bits(&w, 1, 1);
    put_bits(&w, 0, 2);
    w.bit = 0;
    w.buf[w.n++] = 3; w.buf[w.n++] = 0; w.buf[w.n++] = 0xFC; w.buf[w.n++] = 0xFE;
    memcpy(w.buf + w.n, abc, 3);
    w.n += 3;
    CHECK(inflate_handmade(&w, abc, 3, &err) != 0 && strstr(err.msg, "complement"), "stored len: %s", err.msg);
    w.buf[4] = 0xFF; /* now correct: NLEN = 0xFFFC */
    CHECK(inflate_handmade(&w, abc, 3, &err) == 0, "stored block: %s", err.msg);

    /* fixed block: "abc" then a match of length 3 at distance 3 -> "abcabc" */
    const uint8_t abcabc[6] = {'a', 'b', 'c', 'a', 'b', 'c'};
    memset(&w, 0, sizeof w);
    put_bits(&w, 1, 1);
    put_bits(&w, 1, 2);
    for (int i = 0; i < 3; i++) put_fixed_litlen(&w, abc[i]);
    put_fixed_litlen(&w, 257); /* length 3 */
    put_code(&w, 2, 5);        /* distance code 2 = distance 3 */
    put_fixed_litlen(&w, 256);
    CHECK(inflate_handmade(&w, abcabc, 6, &err) == 0, "fixed block: %s", err.msg);

    /* distance reaching before the start of the output */
    memset(&w, 0, sizeof w);
    put_bits(&w, 1, 1);
    put_bits(&w, 1, 2);
    put_fixed_litlen(&w, 'a');
    put_fixed_litlen(&w, 257);
    put_code(&w, 1, 5); /* distance 2, but only 1 byte out */
    put_fixed_litlen(&w, 256);
    const uint8_t aaaa[4] = {'a', 'a', 'a', 'a'};
    CHECK(inflate_handmade(&w, aaaa, 4, &err) != 0 && strstr(err.msg, "distance"), "far distance: %s", err.msg);

    /* literal/length symbols 286, 287 and distance symbols 30, 31 exist in the fixed code only */
    for (int sym = 286; sym <= 287; sym++) {
        memset(&w, 0, sizeof w);
        put_bits(&w, 1, 1);
        put_bits(&w, 1, 2);
        put_fixed_litlen(&w, 'a');
        put_fixed_litlen(&w, sym);
        put_code(&w, 0, 5);
        put_fixed_litlen(&w, 256);
        CHECK(inflate_handmade(&w, aaaa, 4, &err) != 0 && strstr(err.msg, "length code"), "symbol %d: %s", sym, err.msg);
    }
    for (int d = 30; d <= 31; d++) {
        memset(&w, 0, sizeof w);
        put_bits(&w, 1, 1);
        put_bits(&w, 1, 2);
        put_fixed_litlen(&w, 'a');
        put_fixed_litlen(&w, 257);
        put_code(&w, (uint32_t)d, 5);
        put_fixed_litlen(&w, 256);
        CHECK(inflate_handmade(&w, aaaa, 4, &err) != 0 && strstr(err.msg, "distance code"), "distance %d: %s", d, err.msg);
    }

    /* dynamic blocks: literal 'A' and end-of-block, one bit each; distance code as given */
    uint8_t lit[286] = {0}, dist[30] = {0};
    lit['A'] = 1;
    lit[256] = 1;
    const uint8_t AA[2] = {'A', 'A'};
    /* valid, with no distance codes at all (allowed: only literals) */
    memset(&w, 0, sizeof w);
    put_dynamic_header(&w, lit, 257, dist, 1, NULL, NULL, 0, -1);
    put_code(&w, 0, 1);
    put_code(&w, 0, 1);
    put_code(&w, 1, 1);
    CHECK(inflate_handmade(&w, AA, 2, &err) == 0, "dynamic block: %s", err.msg);
    /* a single one-bit distance code is an allowed incomplete code */
    dist[0] = 1;
    memset(&w, 0, sizeof w);
    put_dynamic_header(&w, lit, 257, dist, 1, NULL, NULL, 0, -1);
    put_code(&w, 0, 1);
    put_code(&w, 0, 1);
    put_code(&w, 1, 1);
    CHECK(inflate_handmade(&w, AA, 2, &err) == 0, "single distance code: %s", err.msg);
    dist[0] = 0;

    struct {
        const char *what, *expect;
        int lit_a, lit_b, lit_eob, hlit_field;
        int cl_mode; /* 0 fixed complete, 1 over-subscribed, 2 incomplete */
        int repeat_first;
    } cases[] = {
        {"over-subscribed literal code", "over-subscribed literal", 1, 1, 1, -1, 0, 0},
        {"incomplete literal code", "incomplete literal", 1, 0, 2, -1, 0, 0},
        {"no end-of-block code", "end-of-block", 1, 0, 0, -1, 0, 0},
        {"HLIT 287", "too many", 1, 0, 1, 30, 0, 0},
        {"over-subscribed code-length code", "over-subscribed code-length", 1, 0, 1, -1, 1, 0},
        {"incomplete code-length code", "incomplete code-length", 1, 0, 1, -1, 2, 0},
        {"repeat with no previous length", "no previous", 1, 0, 1, -1, 0, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t l[286] = {0};
        l['A'] = (uint8_t)cases[c].lit_a;
        l['B'] = (uint8_t)cases[c].lit_b;
        l[256] = (uint8_t)cases[c].lit_eob;
        uint8_t cl[19];
        for (int i = 0; i < 19; i++) cl[i] = i <= 12 ? 4 : 5;
        if (cases[c].cl_mode == 1) cl[0] = 1, cl[1] = 1;
        if (cases[c].cl_mode == 2) cl[18] = 0;
        ClSym rep = {16, 0, 2};
        memset(&w, 0, sizeof w);
        put_dynamic_header(&w, l, 257, dist, 1, cases[c].cl_mode ? cl : NULL, cases[c].repeat_first ? &rep : NULL,
                           cases[c].repeat_first ? 1 : 0, cases[c].hlit_field);
        put_code(&w, 0, 1);
        CHECK(inflate_handmade(&w, AA, 1, &err) != 0 && strstr(err.msg, cases[c].expect), "%s: %s", cases[c].what,
              err.msg);
    }
    /* a run of zeros (code 18, 138 zeros) that overruns the number of codes */
    ClSym run = {18, 127, 7};
    memset(&w, 0, sizeof w);
    uint8_t l2[286] = {0};
    /* two runs of 138 zeros: the second passes the 258 codes the header announces */
    ClSym prefix[2] = {run, run};
    put_dynamic_header(&w, l2, 0, dist, 1, NULL, prefix, 2, 0); /* HLIT 257 + HDIST 1 = 258 codes */
    CHECK(inflate_handmade(&w, AA, 1, &err) != 0 && strstr(err.msg, "overrun"), "length run overrun: %s", err.msg);
}

/* ---- PNG ---------------------------------------------------------------------------------------- */

static const char *pngsuite_dirs[] = {"images/stb/pngsuite/primary", "images/stb/pngsuite/16bit",
                                      "images/stb/pngsuite/unused"};

static void test_pngsuite_valid(void) {
    int n = 0, matched = 0;
    for (int d = 0; d < 3; d++) {
        FileList l = {0};
        list_files(&l, pngsuite_dirs[d]);
        for (int i = 0; i < l.n; i++, n++) matched += check_against_golden(l.paths[i]);
        list_free(&l);
    }
    CHECK(n == 160, "%d PngSuite files found, expected 160", n);
    test_note("%d/%d valid PngSuite images equal Pillow's RGB exactly (16-bit gray as v >> 8)", matched, n);
}

/* PngSuite's own expected pixels: primary_check/ holds every primary/ image decoded to 8-bit RGBA. */
static void test_pngsuite_check_images(void) {
    FileList l = {0};
    list_files(&l, "images/stb/pngsuite/primary");
    int n = 0;
    for (int i = 0; i < l.n; i++) {
        char check[512];
        snprintf(check, sizeof check, "images/stb/pngsuite/primary_check/%s", strrchr(l.paths[i], '/') + 1);
        Image a, b;
        BlvError err = {{0}};
        int ra = image_load(&a, test_data(l.paths[i]), NULL, &err);
        CHECK(ra == 0, "%s: %s", l.paths[i], err.msg);
        int rb = image_load(&b, test_data(check), NULL, &err);
        CHECK(rb == 0, "%s: %s", check, err.msg);
        if (ra == 0 && rb == 0) {
            int mx;
            double mean;
            CHECK(image_diff(&a, &b, &mx, &mean) == 0 && mx == 0, "%s differs from its check image", l.paths[i]);
            n++;
        }
        image_free(&a);
        image_free(&b);
    }
    CHECK(n == 77, "%d of 77 check images compared", n);
    test_note("%d PngSuite images equal their primary_check RGB exactly", n);
    list_free(&l);
}

static void test_pngsuite_corrupt(void) {
    /* stb's ref_results.csv decodes xcsn0g01 and xhdn0g08 (stb ignores CRCs); we check every CRC */
    static const struct {
        const char *file, *expect;
    } cases[] = {
        {"xc1n0g08.png", "colour type 1"},  {"xc9n2c08.png", "colour type 9"},
        {"xcrn0g04.png", "PNG signature"},  {"xcsn0g01.png", "CRC mismatch in chunk 'IDAT'"},
        {"xd0n2c08.png", "bit depth 0"},    {"xd3n2c08.png", "bit depth 3"},
        {"xd9n2c08.png", "bit depth 99"},   {"xdtn0g01.png", "no IDAT"},
        {"xhdn0g08.png", "CRC mismatch in chunk 'IHDR'"}, {"xlfn0g04.png", "PNG signature"},
        {"xs1n0g01.png", "PNG signature"},  {"xs2n0g01.png", "PNG signature"},
        {"xs4n0g01.png", "PNG signature"},  {"xs7n0g01.png", "PNG signature"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "images/stb/pngsuite/corrupt/%s", cases[i].file);
        Image img;
        BlvError err = {{0}};
        int rc = image_load(&img, test_data(rel), NULL, &err);
        CHECK(rc != 0 && strstr(err.msg, cases[i].expect), "%s: expected an error with '%s', got: %s", rel,
              cases[i].expect, rc ? err.msg : "success");
        check_clean_failure(rc, &img, &err, test_data(rel));
        image_free(&img);
    }
    FileList l = {0};
    list_files(&l, "images/stb/pngsuite/iphone");
    for (int i = 0; i < l.n; i++) {
        Image img;
        BlvError err = {{0}};
        int rc = image_load(&img, test_data(l.paths[i]), NULL, &err);
        CHECK(rc != 0 && strstr(err.msg, "CgBI"), "%s: %s", l.paths[i], rc ? err.msg : "decoded");
        image_free(&img);
    }
    CHECK(l.n == 7, "%d iphone files", l.n);
    list_free(&l);
}

/* A PNG built in memory: signature, IHDR, the given chunks (type + data), IDAT holding `raw`
 * (filtered scanlines) in stored deflate blocks, IEND. CRCs are computed unless corrupt_crc. */
typedef struct {
    uint8_t *d;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void buf_be32(Buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_put(b, x, 4);
}

static void png_chunk(Buf *b, const char *type, const uint8_t *data, size_t n) {
    buf_be32(b, (uint32_t)n);
    size_t at = b->n;
    buf_put(b, type, 4);
    if (n) buf_put(b, data, n);
    buf_be32(b, image_crc32(b->d + at, n + 4));
}

static void zlib_stored(Buf *z, const uint8_t *raw, size_t n) {
    uint8_t hdr[2] = {0x78, 0x01};
    buf_put(z, hdr, 2);
    size_t at = 0;
    do {
        size_t k = n - at > 65535 ? 65535 : n - at;
        uint8_t bh[5] = {(uint8_t)(at + k == n), (uint8_t)k, (uint8_t)(k >> 8), (uint8_t)~k, (uint8_t)(~k >> 8)};
        buf_put(z, bh, 5);
        buf_put(z, raw + at, k);
        at += k;
    } while (at < n);
    buf_be32(z, image_adler32(raw, n));
}

static void png_ihdr(Buf *b, uint32_t w, uint32_t h, int depth, int ct, int interlace) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    buf_put(b, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        (uint8_t)depth,     (uint8_t)ct,        0,                 0,
                        (uint8_t)interlace};
    png_chunk(b, "IHDR", ihdr, 13);
}

static void png_idat(Buf *b, const uint8_t *raw, size_t n) {
    Buf z = {0};
    zlib_stored(&z, raw, n);
    png_chunk(b, "IDAT", z.d, z.n);
    free(z.d);
}

static int decode_buf(const Buf *b, Image *img, BlvError *err) {
    return decode_exact(b->d, b->n, "made.png", NULL, img, err);
}

static void test_png_made(void) {
    Image img;
    BlvError err = {{0}};

    /* palette: indices past the PLTE entries decode as black (Pillow) */
    Buf b = {0};
    png_ihdr(&b, 4, 1, 2, 3, 0);
    const uint8_t plte[6] = {10, 20, 30, 40, 50, 60};
    png_chunk(&b, "PLTE", plte, 6);
    const uint8_t trns[1] = {0};
    png_chunk(&b, "tRNS", trns, 1);
    const uint8_t row[2] = {0, 0x1B}; /* filter 0, indices 0,1,2,3 */
    png_idat(&b, row, 2);
    png_chunk(&b, "IEND", NULL, 0);
    int rc = decode_buf(&b, &img, &err);
    const uint8_t want_pal[12] = {10, 20, 30, 40, 50, 60, 0, 0, 0, 0, 0, 0};
    CHECK(rc == 0 && memcmp(img.rgb, want_pal, 12) == 0, "palette: %s", err.msg);
    image_free(&img);
    free(b.d);

    /* alpha is dropped, not composited: RGBA (10,20,30,0) stays (10,20,30); 16-bit takes the high
     * byte; gray+alpha keeps the gray */
    memset(&b, 0, sizeof b);
    png_ihdr(&b, 2, 1, 8, 6, 0);
    const uint8_t rgba[9] = {0, 10, 20, 30, 0, 200, 100, 50, 128};
    png_idat(&b, rgba, 9);
    png_chunk(&b, "IEND", NULL, 0);
    rc = decode_buf(&b, &img, &err);
    const uint8_t want_rgba[6] = {10, 20, 30, 200, 100, 50};
    CHECK(rc == 0 && memcmp(img.rgb, want_rgba, 6) == 0, "RGBA: %s", err.msg);
    image_free(&img);
    free(b.d);

    memset(&b, 0, sizeof b);
    png_ihdr(&b, 2, 1, 16, 0, 0);
    const uint8_t g16[5] = {0, 0x12, 0xFF, 0xAB, 0x01};
    png_idat(&b, g16, 5);
    png_chunk(&b, "IEND", NULL, 0);
    rc = decode_buf(&b, &img, &err);
    const uint8_t want_g16[6] = {0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB};
    CHECK(rc == 0 && memcmp(img.rgb, want_g16, 6) == 0, "16-bit gray: %s", err.msg);
    image_free(&img);
    free(b.d);

    memset(&b, 0, sizeof b);
    png_ihdr(&b, 1, 1, 16, 4, 0);
    const uint8_t la16[5] = {0, 0x80, 0x7F, 0x00, 0x00};
    png_idat(&b, la16, 5);
    png_chunk(&b, "IEND", NULL, 0);
    rc = decode_buf(&b, &img, &err);
    CHECK(rc == 0 && img.rgb[0] == 0x80 && img.rgb[2] == 0x80, "16-bit gray+alpha: %s", err.msg);
    image_free(&img);
    free(b.d);

    /* structural errors, each naming what is wrong */
    struct {
        const char *what, *expect;
        int variant;
    } cases[] = {
        {"unknown critical chunk", "unknown critical chunk 'ABCD'", 1},
        {"IDAT chunks split by another chunk", "not consecutive", 2},
        {"no IEND", "no IEND", 3},
        {"filter type 5", "filter type 5", 4},
        {"bad CRC in an ancillary chunk", "CRC mismatch in chunk 'tEXt'", 5},
        {"too little image data", "the image needs", 6},
        {"PLTE in a gray image", "PLTE in a grayscale", 7},
        {"palette image without PLTE", "without PLTE", 8},
        {"chunk length past the end", "truncated PNG", 9},
        {"IHDR not first", "not IHDR", 10},
    };
    const uint8_t gray_rows[6] = {0, 1, 2, 0, 3, 4}; /* 2x2 gray 8-bit */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int v = cases[c].variant;
        memset(&b, 0, sizeof b);
        if (v == 10) {
            static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
            buf_put(&b, sig, 8);
            png_chunk(&b, "gAMA", (const uint8_t *)"\0\0\0\1", 4);
        }
        if (v != 10) png_ihdr(&b, 2, 2, 8, v == 8 ? 3 : 0, 0);
        if (v == 7) png_chunk(&b, "PLTE", plte, 6);
        if (v == 1) png_chunk(&b, "ABCD", NULL, 0);
        png_chunk(&b, "abCD", NULL, 0); /* unknown ancillary: fine */
        uint8_t rows[6];
        memcpy(rows, gray_rows, 6);
        if (v == 4) rows[3] = 5;
        if (v == 2) {
            Buf z = {0};
            zlib_stored(&z, rows, 6);
            png_chunk(&b, "IDAT", z.d, 5);
            png_chunk(&b, "tIME", (const uint8_t *)"\7\xE8\1\1\0\0\0", 7);
            png_chunk(&b, "IDAT", z.d + 5, z.n - 5);
            free(z.d);
        } else {
            png_idat(&b, rows, v == 6 ? 5 : 6);
        }
        if (v == 5) {
            png_chunk(&b, "tEXt", (const uint8_t *)"a\0b", 3);
            b.d[b.n - 1] ^= 1;
        }
        if (v == 9) buf_be32(&b, 1000);
        if (v != 3 && v != 9) png_chunk(&b, "IEND", NULL, 0);
        rc = decode_buf(&b, &img, &err);
        CHECK(rc != 0 && strstr(err.msg, cases[c].expect), "%s: expected '%s', got: %s", cases[c].what,
              cases[c].expect, rc ? err.msg : "success");
        check_clean_failure(rc, &img, &err, "made.png");
        image_free(&img);
        free(b.d);
    }
    /* the valid version of the same image decodes */
    memset(&b, 0, sizeof b);
    png_ihdr(&b, 2, 2, 8, 0, 0);
    png_chunk(&b, "abCD", NULL, 0);
    png_idat(&b, gray_rows, 6);
    png_chunk(&b, "IEND", NULL, 0);
    rc = decode_buf(&b, &img, &err);
    CHECK(rc == 0 && img.rgb[0] == 1 && img.rgb[3] == 2 && img.rgb[6] == 3 && img.rgb[9] == 4, "2x2 gray: %s", err.msg);
    image_free(&img);
    free(b.d);
}

static void test_png_real_images(void) {
    check_against_golden("images/llama.cpp-media/llama1-logo.png");
    check_against_golden("images/jpeg-decoder/reftest/mozilla/jpg-size-6x6.jpg"); /* a PNG named .jpg */
    /* the large PNGs of the shared data set are checked only when it is available */
    const char *shared = getenv("BLUELMV_SHARED_IMAGES");
    load_goldens();
    int n = 0;
    for (int i = 0; i < n_goldens && shared; i++) {
        if (!starts_with(goldens[i].path, "shared:")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", shared, goldens[i].path + 7);
        Image img;
        BlvError err = {{0}};
        double t0 = blv_now();
        int rc = image_load(&img, path, NULL, &err);
        double dt = blv_now() - t0;
        CHECK(rc == 0, "%s", err.msg);
        if (rc == 0) {
            CHECK(img.width == goldens[i].w && img.height == goldens[i].h && image_hash(&img) == goldens[i].crc,
                  "%s differs from Pillow", path);
            test_note("%s: %dx%d equals Pillow (%.0f ms)", goldens[i].path + 7, img.width, img.height, dt * 1e3);
            n++;
        }
        image_free(&img);
    }
    if (!shared) test_note("BLUELMV_SHARED_IMAGES not set: the large donut/llama.cpp PNGs were not checked");
}

/* ---- JPEG ------------------------------------------------------------------------------------- */

/* For the four largest reference PNGs only their top and bottom 32 rows are kept (NAME.bands.png,
 * see tools/make_image_golden.py): the same rows of our decode, stacked the same way. */
#define BAND_ROWS 32

static int keep_bands(Image *img) {
    if (img->height < 2 * BAND_ROWS) return -1;
    size_t row = (size_t)img->width * 3;
    memmove(img->rgb + BAND_ROWS * row, img->rgb + (size_t)(img->height - BAND_ROWS) * row, BAND_ROWS * row);
    img->height = 2 * BAND_ROWS;
    return 0;
}

/* Every reftest JPEG against its reference PNG (made by ImageMagick; decoded here by our PNG
 * decoder), and against Pillow exactly. */
static void test_jpeg_reftest(void) {
    FileList l = {0};
    list_files(&l, "images/jpeg-decoder/reftest");
    int n = 0, exact = 0, pillow_exact = 0;
    int worst = 0;
    for (int i = 0; i < l.n; i++) {
        if (!ends_with(l.paths[i], ".jpg")) continue;
        char png[512], bands[512];
        snprintf(png, sizeof png, "%.*s.png", (int)(strlen(l.paths[i]) - 4), l.paths[i]);
        snprintf(bands, sizeof bands, "%.*s.bands.png", (int)(strlen(l.paths[i]) - 4), l.paths[i]);
        Image a, b;
        BlvError err = {{0}};
        int ra = image_load(&a, test_data(l.paths[i]), NULL, &err);
        CHECK(ra == 0, "%s: %s", l.paths[i], err.msg);
        int rb = image_load(&b, test_data(png), NULL, &err);
        int banded = 0;
        if (rb != 0) {
            banded = 1;
            rb = image_load(&b, test_data(bands), NULL, &err);
            if (ra == 0) CHECK(keep_bands(&a) == 0, "%s: too small for bands", l.paths[i]);
        }
        CHECK(rb == 0, "%s: %s", png, err.msg);
        if (ra == 0 && rb == 0) {
            int mx = -1;
            double mean = 0;
            int same_size = image_diff(&a, &b, &mx, &mean) == 0;
            CHECK(same_size, "%s: size %dx%d, reference %dx%d", l.paths[i], a.width, a.height, b.width, b.height);
            /* ImageMagick's decoder differs from Pillow's libjpeg-turbo by at most 3 levels; the two
             * grayscale_*_sampling2x2 references are 16-bit PNGs, read back as v >> 8 (mean 0.3) */
            CHECK(same_size && mx <= 3 && mean <= 0.35, "%s: max diff %d, mean %.3f vs reference", l.paths[i], mx, mean);
            test_note("%-34s vs reference PNG%s: max %d mean %.4f", l.paths[i] + 28, banded ? " (top/bottom 32 rows)" : "",
                      mx, mean);
            exact += mx == 0;
            if (mx > worst) worst = mx;
            n++;
        }
        image_free(&a);
        image_free(&b);
        pillow_exact += check_against_golden(l.paths[i]);
    }
    CHECK(n == 37, "%d reftest JPEGs", n);
    /* jpeg-decoder (Rust) skips the files of its disabled.list; we decode them all (above) */
    size_t dn;
    char *disabled = (char *)read_bytes(test_data("images/jpeg-decoder/reftest/disabled.list"), &dn);
    CHECK(disabled != NULL, "disabled.list");
    char names[512] = "";
    for (char *line = disabled ? strtok(disabled, "\n") : NULL; line; line = strtok(NULL, "\n"))
        if (line[0] && line[0] != '#' && strlen(names) + strlen(line) + 3 < sizeof names) {
            strcat(names, names[0] ? ", " : "");
            strcat(names, line);
        }
    test_note("disabled.list (%s): all decoded and checked above (jpg-size-6x6.jpg is a PNG)", names);
    free(disabled);
    test_note("%d reftest JPEGs: %d exactly equal to the reference PNG, the rest within %d; %d/%d equal Pillow exactly",
              n, exact, worst, pillow_exact, n);
    list_free(&l);
}

/* JPEGs made by cjpeg with many sampling factors, progressive, restarts, RGB, gray, 16-bit quant
 * tables: every pixel against Pillow's decode (PNG written by the tools script). */
static void test_jpeg_sampling_vs_pillow(void) {
    FileList l = {0};
    list_files(&l, "images/gen/cjpeg");
    int n = 0, worst = 0;
    double worst_mean = 0;
    for (int i = 0; i < l.n; i++) {
        const char *base = strrchr(l.paths[i], '/') + 1;
        char ref[512];
        snprintf(ref, sizeof ref, "images/gen/pillow/cjpeg_%.*s.png", (int)(strlen(base) - 4), base);
        Image a, b;
        BlvError err = {{0}};
        int ra = image_load(&a, test_data(l.paths[i]), NULL, &err);
        CHECK(ra == 0, "%s: %s", l.paths[i], err.msg);
        int rb = image_load(&b, test_data(ref), NULL, &err);
        CHECK(rb == 0, "%s: %s", ref, err.msg);
        if (ra == 0 && rb == 0) {
            int mx = -1;
            double mean = 0;
            CHECK(image_diff(&a, &b, &mx, &mean) == 0 && mx == 0, "%s: max diff %d mean %.3f vs Pillow", l.paths[i], mx, mean);
            if (mx > worst) worst = mx;
            if (mean > worst_mean) worst_mean = mean;
            n++;
        }
        image_free(&a);
        image_free(&b);
    }
    CHECK(n >= 50, "only %d cjpeg files", n);
    test_note("%d cjpeg-made JPEGs (1x1..4x4 sampling, progressive, restarts, gray, RGB): max diff %d, mean %.4f vs Pillow",
              n, worst, worst_mean);
    list_free(&l);
}

static void test_jpeg_unsupported(void) {
    Image img;
    BlvError err = {{0}};
    int rc = image_load(&img, test_data("images/gen/unsupported/arith.jpg"), NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "arithmetic") && strstr(err.msg, "SOF9"), "arith: %s", err.msg);
    rc = image_load(&img, test_data("images/gen/unsupported/arith_prog.jpg"), NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "arithmetic") && strstr(err.msg, "SOF10"), "arith prog: %s", err.msg);

    /* patched copies of a baseline file */
    size_t n;
    uint8_t *d = read_bytes(test_data("images/gen/cjpeg/37x29_s2x2.jpg"), &n);
    CHECK(d != NULL, "base file");
    if (!d) return;
    size_t sof = 0;
    for (size_t i = 2; i + 1 < n; i++)
        if (d[i] == 0xFF && d[i + 1] == 0xC0) {
            sof = i;
            break;
        }
    CHECK(sof > 0, "no SOF0");
    struct {
        const char *what, *expect;
        size_t offset;
        uint8_t value;
    } cases[] = {
        {"lossless", "lossless (SOF3)", 1, 0xC3},  {"hierarchical", "SOF5", 1, 0xC5},
        {"12-bit", "12-bit", 4, 12},               {"height 0", "DNL", 5, 0},
        {"2 components", "2 components", 9, 2},   {"sampling 5", "sampling factors", 11, 0x51},
        {"quant table 4", "quantization table", 12, 4},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t *p = malloc(n);
        memcpy(p, d, n);
        p[sof + cases[c].offset] = cases[c].value;
        if (c == 3) p[sof + 6] = 0;
        rc = decode_exact(p, n, "patched.jpg", NULL, &img, &err);
        CHECK(rc != 0 && strstr(err.msg, cases[c].expect), "%s: expected '%s', got: %s", cases[c].what, cases[c].expect,
              rc ? err.msg : "success");
        check_clean_failure(rc, &img, &err, "patched.jpg");
        free(p);
    }
    free(d);
}

/* A progressive file whose first (DC) scan is repeated: rejected once a coefficient would be coded
 * by more than the 14 scans a legal progression can use (each scan costs a pass over the whole
 * image however short its data, so repeats are a cheap way to make a small file decode slowly). */
static void test_jpeg_too_many_scans(void) {
    size_t n;
    uint8_t *d = read_bytes(test_data("images/gen/cjpeg/37x29_gray_prog.jpg"), &n);
    CHECK(d != NULL, "base file");
    if (!d) return;
    size_t sos = 0, end = 0;
    for (size_t i = 2; i + 1 < n && !sos; i++)
        if (d[i] == 0xFF && d[i + 1] == 0xDA) sos = i;
    for (size_t i = sos + 2 + ((size_t)d[sos + 2] << 8 | d[sos + 3]); i + 1 < n && !end; i++)
        if (d[i] == 0xFF && d[i + 1] != 0 && (d[i + 1] < 0xD0 || d[i + 1] > 0xD7)) end = i;
    CHECK(sos > 0 && end > sos, "no scan found");
    size_t scan = end - sos;
    for (int copies = 3; copies <= 14; copies += 11) {
        size_t total = n + scan * (size_t)copies;
        uint8_t *big = malloc(total);
        memcpy(big, d, end);
        for (int c = 0; c < copies; c++) memcpy(big + end + (size_t)c * scan, d + sos, scan);
        memcpy(big + end + (size_t)copies * scan, d + end, n - end);
        Image img;
        BlvError err = {{0}};
        int rc = decode_exact(big, total, "scans.jpg", NULL, &img, &err);
        if (copies == 3) CHECK(rc == 0, "3 extra scans: %s", err.msg);
        else CHECK(rc != 0 && strstr(err.msg, "coded by more than 14 scans"), "%s", rc ? err.msg : "decoded");
        image_free(&img);
        free(big);
    }
    free(d);
}

/* The jpeg-decoder fuzzing corpus: an error or a decode, never a crash; time bounded. */
static void test_jpeg_crashtest(void) {
    FileList l = {0};
    list_files(&l, "images/jpeg-decoder/crashtest");
    int n = 0, decoded = 0, failed = 0;
    double t0 = blv_now(), slowest = 0;
    const char *slowest_name = "";
    for (int i = 0; i < l.n; i++) {
        if (!ends_with(l.paths[i], ".jpg")) continue;
        Image img;
        BlvError err = {{0}};
        double t = blv_now();
        int rc = image_load(&img, test_data(l.paths[i]), NULL, &err);
        t = blv_now() - t;
        if (t > slowest) slowest = t, slowest_name = l.paths[i];
        n++;
        if (rc == 0) {
            decoded++;
            CHECK(img.rgb && img.width > 0 && img.height > 0, "%s: empty success", l.paths[i]);
        } else {
            failed++;
            check_clean_failure(rc, &img, &err, test_data(l.paths[i]));
        }
        image_free(&img);
    }
    double total = blv_now() - t0;
    CHECK(n == 111, "%d crash-test files", n);
    CHECK(slowest < 5.0, "%s took %.1f s", slowest_name, slowest);
    test_note("%d crash-test JPEGs: %d decoded, %d rejected with an error, %.2f s in all (slowest %.0f ms)", n, decoded,
              failed, total, slowest * 1e3);
    list_free(&l);
}

static void test_jpeg_timing(void) {
    const char *rel = "images/jpeg-decoder/reftest/progressive3.jpg";
    Image img;
    BlvError err = {{0}};
    double t = blv_now();
    int rc = image_load(&img, test_data(rel), NULL, &err);
    t = blv_now() - t;
    CHECK(rc == 0, "%s", err.msg);
    test_note("progressive3.jpg (650x470, progressive) in %.1f ms", t * 1e3);
    image_free(&img);
}

/* ---- EXIF orientation ----------------------------------------------------------------------- */

static void test_exif_parser(void) {
    /* little- and big-endian IFD0 with orientation 6 as the second entry */
    uint8_t ii[8 + 2 + 24] = {'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0,
                              0x0F, 0x01, 2, 0, 4, 0, 0, 0, 'a', 'b', 'c', 0,
                              0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0};
    uint8_t mm[8 + 2 + 12] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 3, 0, 0};
    CHECK(image_exif_orientation(ii, sizeof ii) == 6, "II orientation");
    CHECK(image_exif_orientation(mm, sizeof mm) == 3, "MM orientation");
    CHECK(image_exif_orientation(ii, sizeof ii - 1) == 0, "truncated entry");
    CHECK(image_exif_orientation(ii, 4) == 0, "truncated header");
    uint8_t bad[sizeof ii];
    memcpy(bad, ii, sizeof ii);
    bad[30] = 9;
    CHECK(image_exif_orientation(bad, sizeof bad) == 0, "orientation 9 is ignored");
    memcpy(bad, ii, sizeof ii);
    bad[24] = 7; /* type UNDEFINED */
    CHECK(image_exif_orientation(bad, sizeof bad) == 0, "wrong type");
    memcpy(bad, ii, sizeof ii);
    bad[4] = 0xF0; /* IFD offset past the end */
    CHECK(image_exif_orientation(bad, sizeof bad) == 0, "bad offset");
    memcpy(bad, ii, sizeof ii);
    bad[8] = 0xFF; bad[9] = 0xFF; /* 65535 entries, and no orientation among those present */
    bad[22] = 0x13;
    CHECK(image_exif_orientation(bad, sizeof bad) == 0, "entry count past the end");
}

static void test_exif_orientation(void) {
    /* JPEG and PNG with each orientation equal Pillow's ImageOps.exif_transpose; and rotating the
     * orientation-1 decode ourselves gives the same pixels */
    Image base;
    BlvError err = {{0}};
    int rc = image_load(&base, test_data("images/gen/exif/orient1.jpg"), NULL, &err);
    CHECK(rc == 0, "%s", err.msg);
    if (rc != 0) return;
    for (int k = 1; k <= 8; k++) {
        char rel[128];
        for (int png = 0; png < 2; png++) {
            snprintf(rel, sizeof rel, "images/gen/exif/orient%d.%s", k, png ? "png" : "jpg");
            check_against_golden(rel);
            Image img;
            rc = image_load(&img, test_data(rel), NULL, &err);
            CHECK(rc == 0 && img.width == (k >= 5 ? 7 : 13) && img.height == (k >= 5 ? 13 : 7), "%s: %dx%d", rel,
                  img.width, img.height);
            image_free(&img);
        }
        snprintf(rel, sizeof rel, "images/gen/exif/orient%d.jpg", k);
        Image img, rot;
        rc = image_load(&img, test_data(rel), NULL, &err);
        rot.width = base.width;
        rot.height = base.height;
        rot.rgb = malloc((size_t)base.width * (size_t)base.height * 3);
        memcpy(rot.rgb, base.rgb, (size_t)base.width * (size_t)base.height * 3);
        CHECK(image_apply_orientation(&rot, k, &err) == 0, "rotate");
        int mx;
        double mean;
        CHECK(rc == 0 && image_diff(&img, &rot, &mx, &mean) == 0 && mx == 0, "orientation %d: rotation differs", k);
        image_free(&img);
        image_free(&rot);
    }
    image_free(&base);
}

/* ---- netpbm ----------------------------------------------------------------------------------- */

static void test_netpbm_files(void) {
    int n = 0, matched = 0;
    const char *dirs[] = {"images/stb/pbm", "images/gen/pnm"};
    for (int d = 0; d < 2; d++) {
        FileList l = {0};
        list_files(&l, dirs[d]);
        for (int i = 0; i < l.n; i++, n++) matched += check_against_golden(l.paths[i]);
        list_free(&l);
    }
    CHECK(n >= 30, "%d netpbm files", n);
    test_note("%d netpbm files (P1-P6, maxval 1..65535) equal Pillow (16-bit PGM scaled as other maxvals)", matched);
}

static void test_netpbm_errors(void) {
    struct {
        const char *data, *expect;
    } cases[] = {
        {"P6\n2 2\n0\n", "maxval is 0"},
        {"P5 2 2 70000\n", "too large"},
        {"P2 2 1 10\n5 11\n", "exceeds maxval"},
        {"P2 2 1 10\n5 x\n", "bad netpbm sample"},
        {"P3 1 1 255\n1 2\n", "truncated"},
        {"P6 2 2 255\nabc", "truncated netpbm data"},
        {"P4 9 2\n\1", "truncated PBM"},
        {"P1 2 2\n0 1 2 0", "bad PBM pixel"},
        {"P6 -1 2 255\n", "bad netpbm width"},
        {"P6 2", "truncated netpbm file"},
        {"P6 2 2 255", "no whitespace"},
        {"P6x 2 2 255\n", "bad netpbm magic"},
        {"P6 100000 100000 255\n", "100000x100000"},
        {"P6 0 5 255\n", "invalid image size"},
        {"P7\nWIDTH 1\n", "PAM/PFM images are not supported"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Image img;
        BlvError err = {{0}};
        int rc = decode_exact((const uint8_t *)cases[c].data, strlen(cases[c].data), "t.ppm", NULL, &img, &err);
        CHECK(rc != 0 && strstr(err.msg, cases[c].expect), "'%s': expected '%s', got: %s", cases[c].data,
              cases[c].expect, rc ? err.msg : "success");
        check_clean_failure(rc, &img, &err, "t.ppm");
    }
    /* binary samples above maxval are clamped (Pillow); comments between every header token */
    const char ok[] = "P5#a\n#b\n2#c\n1 #d\n10\n\x05\x0B";
    Image img;
    BlvError err = {{0}};
    int rc = decode_exact((const uint8_t *)ok, sizeof ok - 1, "t.pgm", NULL, &img, &err);
    CHECK(rc == 0 && img.rgb[0] == 128 && img.rgb[3] == 255, "P5 with comments: %s", err.msg);
    image_free(&img);
}

/* ---- limits, detection, the PPM writer ------------------------------------------------------------ */

static void test_limits(void) {
    Image img;
    BlvError err = {{0}};
    int64_t rss0 = blv_peak_rss_bytes();
    /* a PNG header claiming 100000 x 100000 (with a valid CRC) */
    Buf b = {0};
    png_ihdr(&b, 100000, 100000, 8, 2, 0);
    png_chunk(&b, "IEND", NULL, 0);
    int rc = decode_buf(&b, &img, &err);
    CHECK(rc != 0 && strstr(err.msg, "100000x100000") && strstr(err.msg, "exceeds"), "PNG 100000^2: %s", err.msg);
    free(b.d);
    /* JPEG at the largest size it can state */
    rc = image_load(&img, test_data("images/jpeg-decoder/crashtest/max_size.jpg"), NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "65535x65535"), "JPEG 65535^2: %s", err.msg);
    int64_t rss1 = blv_peak_rss_bytes();
    CHECK(rss1 - rss0 < 64 << 20, "peak RSS grew by %lld bytes", (long long)(rss1 - rss0));

    /* user limits, per side and per pixel count, for each format */
    ImageLimits side = {0, 16}, pixels = {1000, 0};
    const char *files[] = {"images/stb/pngsuite/primary/basn2c08.png", "images/jpeg-decoder/reftest/mozilla/jpg-size-32x32.jpg",
                           "images/stb/pbm/cdun2c08.ppm"};
    for (int i = 0; i < 3; i++) {
        rc = image_load(&img, test_data(files[i]), &side, &err);
        CHECK(rc != 0 && strstr(err.msg, "32x32") && strstr(err.msg, "16 pixels per side"), "%s: %s", files[i], err.msg);
        rc = image_load(&img, test_data(files[i]), &pixels, &err);
        CHECK(rc != 0 && strstr(err.msg, "1024 pixels") && strstr(err.msg, "1000"), "%s: %s", files[i], err.msg);
        ImageLimits roomy = {1024, 32};
        rc = image_load(&img, test_data(files[i]), &roomy, &err);
        CHECK(rc == 0, "%s within limits: %s", files[i], err.msg);
        image_free(&img);
    }
}

static void test_detection(void) {
    Image img;
    BlvError err = {{0}};
    struct {
        const char *data;
        size_t n;
        const char *expect;
    } cases[] = {
        {"GIF89a\1\0\1\0", 10, "GIF images are not supported"},
        {"BM\0\0\0\0", 6, "BMP"},
        {"RIFF\0\0\0\0WEBPVP8 ", 16, "WebP"},
        {"hello world", 11, "unrecognized image format (first bytes: 68 65 6c 6c 6f 20 77 6f)"},
        {"", 0, "empty file"},
        {"\xFF\xD8", 2, "no frame header"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc = decode_exact((const uint8_t *)cases[c].data, cases[c].n, "x.img", NULL, &img, &err);
        CHECK(rc != 0 && strstr(err.msg, cases[c].expect), "expected '%s', got: %s", cases[c].expect, rc ? err.msg : "success");
        check_clean_failure(rc, &img, &err, "x.img");
    }
    int rc = image_load(&img, test_data("images/no-such-file.png"), NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "no-such-file.png"), "missing file: %s", err.msg);
    rc = image_decode_memory(&img, (const uint8_t *)"P6 1 1 255\n\1\2\3", 14, NULL, NULL, &err);
    CHECK(rc == 0 && img.rgb[2] == 3, "NULL name: %s", err.msg);
    image_free(&img);
    image_free(NULL);
}

static void test_write_ppm(void) {
    Image a, b;
    BlvError err = {{0}};
    int rc = image_load(&a, test_data("images/stb/pngsuite/primary/basi2c08.png"), NULL, &err);
    CHECK(rc == 0, "%s", err.msg);
    if (rc != 0) return;
    const char *out = test_tmp("roundtrip.ppm");
    CHECK(image_write_ppm(&a, out, &err) == 0, "%s", err.msg);
    rc = image_load(&b, out, NULL, &err);
    int mx;
    double mean;
    CHECK(rc == 0 && image_diff(&a, &b, &mx, &mean) == 0 && mx == 0, "round trip: %s", err.msg);
    size_t n;
    uint8_t *bytes = read_bytes(out, &n);
    CHECK(bytes && n == 13 + 32 * 32 * 3 && memcmp(bytes, "P6\n32 32\n255\n", 13) == 0, "PPM layout");
    free(bytes);
    CHECK(image_write_ppm(&a, test_tmp("no/such/dir/x.ppm"), &err) != 0 && strstr(err.msg, "x.ppm"), "bad path: %s", err.msg);
    Image empty = {0, 0, NULL};
    CHECK(image_write_ppm(&empty, out, &err) != 0, "empty image");
    image_free(&a);
    image_free(&b);
}

/* ---- truncation and fuzzing ----------------------------------------------------------------------- */

/* Every prefix of a file: an error, or (when only bytes that do not matter were cut, such as the
 * EOI of a sequential JPEG) the same image. ASCII netpbm cannot tell a cut inside its last number
 * from a shorter number, so there the last pixel may differ. */
static void test_truncation(void) {
    const char *files[] = {
        "images/stb/pngsuite/primary/basi3p02.png", "images/stb/pngsuite/16bit/basi6a16.png",
        "images/jpeg-decoder/reftest/restarts.jpg", "images/jpeg-decoder/reftest/mozilla/jpg-progressive.jpg",
        "images/gen/cjpeg/37x29_s2x1_prog.jpg",     "images/gen/exif/orient6.jpg",
        "images/stb/pbm/cdun2c08.ppm",              "images/gen/pnm/p3_1000.ppm",
        "images/gen/pnm/p1.pbm",
    };
    int total = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t n;
        uint8_t *d = read_bytes(test_data(files[f]), &n);
        CHECK(d != NULL, "%s", files[f]);
        if (!d) continue;
        Image full;
        BlvError err = {{0}};
        CHECK(decode_exact(d, n, files[f], NULL, &full, &err) == 0, "%s: %s", files[f], err.msg);
        int same = 0;
        for (size_t k = 0; k < n; k++, total++) {
            Image img;
            int rc = decode_exact(d, k, files[f], NULL, &img, &err);
            if (rc == 0) {
                int ascii = d[0] == 'P' && d[1] >= '1' && d[1] <= '3';
                size_t cmp = (size_t)full.width * (size_t)full.height * 3 - (ascii ? 3 : 0);
                CHECK(img.width == full.width && img.height == full.height && memcmp(img.rgb, full.rgb, cmp) == 0,
                      "%s cut at %zu decoded to something else", files[f], k);
                same++;
            } else {
                check_clean_failure(rc, &img, &err, files[f]);
            }
            image_free(&img);
        }
        if (same) test_note("%s: %d of %zu prefixes decode (identically: only trailing bytes cut)", files[f], same, n);
        image_free(&full);
        free(d);
    }
    test_note("%d truncated files decoded or rejected cleanly", total);
}

/* Recomputes every chunk CRC of a PNG, so that mutations reach the decoder behind the CRC check. */
static void png_fix_crcs(uint8_t *d, size_t n) {
    size_t pos = 8;
    while (pos + 12 <= n) {
        uint32_t len = (uint32_t)d[pos] << 24 | (uint32_t)d[pos + 1] << 16 | (uint32_t)d[pos + 2] << 8 | d[pos + 3];
        if (len > n - pos - 12) break;
        uint32_t crc = image_crc32(d + pos + 4, (size_t)len + 4);
        uint8_t *c = d + pos + 8 + len;
        c[0] = (uint8_t)(crc >> 24), c[1] = (uint8_t)(crc >> 16), c[2] = (uint8_t)(crc >> 8), c[3] = (uint8_t)crc;
        pos += 12 + (size_t)len;
    }
}

static void test_fuzz(void) {
    const char *files[] = {
        "images/stb/pngsuite/primary/basi3p02.png",   "images/stb/pngsuite/primary/basn6a08.png",
        "images/stb/pngsuite/16bit/basi0g16.png",     "images/stb/pngsuite/primary/s09i3p02.png",
        "images/jpeg-decoder/reftest/restarts.jpg",   "images/jpeg-decoder/reftest/mozilla/jpg-progressive.jpg",
        "images/gen/cjpeg/37x29_s2x2_prog.jpg",       "images/gen/cjpeg/37x29_s4x2_rst.jpg",
        "images/jpeg-decoder/reftest/mozilla/jpg-cmyk-1.jpg", "images/gen/exif/orient5.jpg",
        "images/gen/pnm/p6_1000.ppm",                 "images/gen/pnm/p2_7.pgm",
    };
    const int per_file = 1000;
    uint64_t rng = 0x1234567ull;
    int n = 0, decoded = 0;
    double t0 = blv_now();
    ImageLimits limits = {1 << 22, 4096}; /* mutated headers may claim large sizes: keep them cheap */
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t size;
        uint8_t *orig = read_bytes(test_data(files[f]), &size);
        CHECK(orig != NULL, "%s", files[f]);
        if (!orig) continue;
        int is_png = ends_with(files[f], ".png");
        for (int m = 0; m < per_file; m++, n++) {
            uint8_t *d = malloc(size);
            memcpy(d, orig, size);
            int flips = 1 + (int)(test_rand_u64(&rng) % 4);
            for (int k = 0; k < flips; k++) {
                size_t at = (size_t)(test_rand_u64(&rng) % size);
                /* favour the headers, where a flip changes the structure */
                if (test_rand_u64(&rng) % 2) at %= size < 200 ? size : 200;
                if (test_rand_u64(&rng) % 2) d[at] ^= (uint8_t)(1u << (test_rand_u64(&rng) % 8));
                else d[at] = (uint8_t)test_rand_u64(&rng);
            }
            if (is_png && m % 2) png_fix_crcs(d, size);
            size_t len = size;
            if (m % 5 == 0) len = (size_t)(test_rand_u64(&rng) % size); /* and truncate some */
            Image img;
            BlvError err = {{0}};
            int rc = decode_exact(d, len, files[f], &limits, &img, &err);
            if (rc == 0) {
                decoded++;
                CHECK(img.rgb && img.width > 0 && img.height > 0 && (int64_t)img.width * img.height <= limits.max_pixels,
                      "%s mutation %d: bad success", files[f], m);
            } else {
                check_clean_failure(rc, &img, &err, files[f]);
            }
            image_free(&img);
            free(d);
        }
        free(orig);
    }
    test_note("%d mutated files (byte flips, PNG CRCs fixed up for half): %d still decode, %.2f s", n, decoded,
              blv_now() - t0);
}

void suite_image(void) {
    RUN_TEST(test_checksums);
    RUN_TEST(test_inflate_streams);
    RUN_TEST(test_inflate_handmade);
    RUN_TEST(test_pngsuite_valid);
    RUN_TEST(test_pngsuite_check_images);
    RUN_TEST(test_pngsuite_corrupt);
    RUN_TEST(test_png_made);
    RUN_TEST(test_png_real_images);
    RUN_TEST(test_jpeg_reftest);
    RUN_TEST(test_jpeg_sampling_vs_pillow);
    RUN_TEST(test_jpeg_unsupported);
    RUN_TEST(test_jpeg_too_many_scans);
    RUN_TEST(test_jpeg_crashtest);
    RUN_TEST(test_jpeg_timing);
    RUN_TEST(test_exif_parser);
    RUN_TEST(test_exif_orientation);
    RUN_TEST(test_netpbm_files);
    RUN_TEST(test_netpbm_errors);
    RUN_TEST(test_limits);
    RUN_TEST(test_detection);
    RUN_TEST(test_write_ppm);
    RUN_TEST(test_truncation);
    RUN_TEST(test_fuzz);
    free(goldens);
    goldens = NULL;
    n_goldens = 0;
}
