/* image_jpeg.c — JPEG decoding (ITU-T T.81 | ISO/IEC 10918-1), written from scratch.
 *
 * Supported: baseline and extended sequential (SOF0, SOF1) and progressive (SOF2) Huffman-coded
 * 8-bit images with 1, 3 or 4 components, any sampling factors 1..4, restart intervals, 8- and
 * 16-bit quantization tables, Adobe APP14 colour transforms (RGB, YCbCr, CMYK, YCCK), EXIF
 * orientation, and Motion-JPEG frames without Huffman tables (the Annex K tables are preloaded).
 *
 * The pipeline: markers are parsed in order; each scan's entropy-coded data is decoded into
 * per-component coefficient arrays (the same storage for sequential and progressive images, so
 * there is one code path); at EOI every block is dequantized and inverse-transformed into a sample
 * plane per component; each output row is then upsampled per component and colour-converted.
 *
 * The numbers follow libjpeg-turbo with its default settings (what Pillow, and hence the reference
 * preprocessing, uses), so that decodes match it exactly: the "islow" integer IDCT, "fancy"
 * triangular upsampling for 2:1 ratios, and the 16-bit fixed-point colour conversion. The decoder is
 * as lenient as libjpeg where real files need it (garbage bytes before markers, scans that end early
 * at a marker read as zeros) and strict where data is inconsistent (bad Huffman codes or tables,
 * file truncated in the middle of a scan, coefficients or DC predictions out of range). */
#include "image.h"

#include <stdlib.h>
#include <string.h>

#define MAX_COMPONENTS 4
/* G.1.1.1.1: a coefficient is coded by one first scan and then one refinement scan per bit of its
 * point transform Al <= 13, so by at most 14 scans. Enforcing that bounds the work a small file can
 * cause (every scan walks the whole image, however short its data). */
#define MAX_CODINGS 14

/* Zigzag position -> natural (row-major) index (T.81 Figure A.6), plus 16 entries of 63 so that a
 * corrupt run that overshoots the block lands harmlessly in the last coefficient, as in libjpeg. */
static const uint8_t natural_order[80] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33,
    40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36,
    29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};

/* ---- decoder state ------------------------------------------------------------------------------ */

#define HUFF_FAST 9

typedef struct {
    int defined;
    uint8_t counts[17];    /* counts[l] = number of codes of length l, l = 1..16 (BITS) */
    uint8_t values[256];   /* HUFFVAL */
    uint16_t fast[1 << HUFF_FAST]; /* next HUFF_FAST bits -> length << 8 | value; 0 if longer */
    int32_t maxcode[17];   /* F.2.2.3: largest code of each length, -1 if none */
    int32_t valoffset[17]; /* index in values of the first code of each length, minus that code */
} JHuff;

typedef struct {
    int id, h, v, tq;
    int cw, ch;          /* samples: ceil(X*h/hmax) by ceil(Y*v/vmax) (A.1.1) */
    int bw, bh;          /* blocks stored: whole MCUs, mcux*h by mcuy*v */
    int nbw, nbh;        /* blocks that hold image samples: ceil(cw/8) by ceil(ch/8) */
    int16_t *coef;       /* [bh][bw][64], natural order, quantized */
    uint16_t qt[64];     /* the quantization table, latched at the component's first scan */
    int qt_latched;
    int scanned;
    uint8_t codings[64]; /* progressive: how many scans have coded each coefficient */
    int64_t dc_pred;
    int dc_table, ac_table;
    uint8_t *plane;      /* [nbh*8][nbw*8] samples after the IDCT */
} JComp;

typedef struct {
    const char *name;
    BlvError *err;
    const uint8_t *d;
    size_t n, pos;

    int have_frame, progressive;
    int width, height, ncomp, hmax, vmax, mcux, mcuy;
    JComp comp[MAX_COMPONENTS];
    uint16_t qt[4][64];
    int qt_defined[4];
    JHuff dc[4], ac[4];
    int restart_interval;
    int jfif, adobe, adobe_transform, orientation;
    int scans;

    /* the scan being decoded */
    int ns;
    JComp *sc[MAX_COMPONENTS];
    int ss, se, ah, al;
    int eobrun;
    int next_restart; /* the n of the next expected RSTn */
    int scan_ended;   /* a marker other than RSTn was found at a restart point */

    /* entropy-coded data reader (F.2.2.5): bits MSB first, 0xFF00 unstuffed; at a marker or the
     * end of the data it supplies zero bits ("fake" bits), as libjpeg does */
    uint64_t bits;
    int nbits, fake_bits;
    int stopped;  /* reached a marker or the end: only fake bits from now on */
    int hit_eof;  /* ... and it was the end of the data, not a marker */
    int overrun;  /* fake bits were consumed */
} Jpeg;

static int jfail_corrupt(Jpeg *j, const char *what) {
    return blv_fail(j->err, "%s: corrupt JPEG data: %s", j->name, what);
}

/* ---- Huffman tables (Annex C, F.2.2.3) -------------------------------------------------------- */

static int huff_build(Jpeg *j, JHuff *h) {
    memset(h->fast, 0, sizeof h->fast);
    int32_t code = 0;
    int k = 0;
    for (int l = 1; l <= 16; l++) {
        /* C.2: the codes of length l must fit in l bits, and (as libjpeg requires) the all-ones code
         * is reserved, so one past the last code must still fit */
        if (code + h->counts[l] >= (int32_t)1 << l)
            return blv_fail(j->err, "%s: invalid Huffman table (over-subscribed)", j->name);
        h->valoffset[l] = k - code;
        for (int i = 0; i < h->counts[l]; i++, k++, code++) {
            if (l <= HUFF_FAST) {
                int shift = HUFF_FAST - l;
                for (int32_t f = code << shift; f < (code + 1) << shift; f++)
                    h->fast[f] = (uint16_t)(l << 8 | h->values[k]);
            }
        }
        h->maxcode[l] = h->counts[l] ? code - 1 : -1;
        code <<= 1;
    }
    h->defined = 1;
    return 0;
}

/* The Huffman tables of T.81 Annex K.3 (Tables K.3 to K.6), used when a scan needs a table the file
 * does not define: Motion-JPEG frames (AVI1) omit them. Loaded into slots 0 and 1 as libjpeg does. */
static const uint8_t std_dc_luma_counts[17] = {0, 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t std_dc_chroma_counts[17] = {0, 0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
static const uint8_t std_dc_values[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const uint8_t std_ac_luma_counts[17] = {0, 0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d};
static const uint8_t std_ac_luma_values[162] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
    0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
    0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37,
    0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
    0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
    0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
    0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};
static const uint8_t std_ac_chroma_counts[17] = {0, 0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77};
static const uint8_t std_ac_chroma_values[162] = {
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
    0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
    0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
    0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
    0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
    0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
    0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};

static void load_std_table(Jpeg *j, JHuff *h, const uint8_t *counts, const uint8_t *values, int n) {
    memcpy(h->counts, counts, 17);
    memcpy(h->values, values, (size_t)n);
    huff_build(j, h); /* cannot fail: these tables are valid */
}

static void load_std_tables(Jpeg *j) {
    load_std_table(j, &j->dc[0], std_dc_luma_counts, std_dc_values, 12);
    load_std_table(j, &j->dc[1], std_dc_chroma_counts, std_dc_values, 12);
    load_std_table(j, &j->ac[0], std_ac_luma_counts, std_ac_luma_values, 162);
    load_std_table(j, &j->ac[1], std_ac_chroma_counts, std_ac_chroma_values, 162);
}

/* ---- entropy-coded data reader ---------------------------------------------------------------- */

static void bits_reset(Jpeg *j) {
    j->bits = 0;
    j->nbits = j->fake_bits = 0;
    j->stopped = j->hit_eof = j->overrun = 0;
}

/* Tops the bit buffer up to more than 56 bits. B.1.1.5: a 0xFF data byte is followed by a stuffed
 * 0x00; 0xFF followed by anything else is a marker, where the data of this scan (or interval) ends. */
static void bits_fill(Jpeg *j) {
    while (j->nbits <= 56) {
        unsigned b = 0;
        if (!j->stopped) {
            if (j->pos >= j->n) {
                j->stopped = j->hit_eof = 1;
            } else if (j->d[j->pos] != 0xFF) {
                b = j->d[j->pos++];
            } else if (j->pos + 1 < j->n && j->d[j->pos + 1] == 0x00) {
                b = 0xFF;
                j->pos += 2;
            } else {
                j->stopped = 1; /* a marker: leave it for the marker parser */
                if (j->pos + 1 >= j->n) j->hit_eof = 1;
            }
        }
        if (j->stopped) j->fake_bits += 8;
        j->bits = j->bits << 8 | b;
        j->nbits += 8;
    }
}

static void bits_skip(Jpeg *j, int k) {
    j->nbits -= k;
    if (j->nbits < j->fake_bits) {
        j->overrun = 1;
        j->fake_bits = j->nbits;
    }
}

/* The next k (1..16) bits, not consumed. Needs nbits >= k. */
static uint32_t bits_peek(const Jpeg *j, int k) {
    return (uint32_t)(j->bits >> (j->nbits - k)) & ((1u << k) - 1);
}

static uint32_t get_bits(Jpeg *j, int k) {
    if (k == 0) return 0;
    if (j->nbits < k) bits_fill(j);
    uint32_t v = bits_peek(j, k);
    bits_skip(j, k);
    return v;
}

/* F.2.2.3 DECODE: the next Huffman-coded value, or -1 for a code the table does not have. */
static int huff_decode(Jpeg *j, const JHuff *h) {
    if (j->nbits < 16) bits_fill(j);
    uint16_t e = h->fast[bits_peek(j, HUFF_FAST)];
    if (e) {
        bits_skip(j, e >> 8);
        return e & 0xFF;
    }
    uint32_t code16 = bits_peek(j, 16);
    for (int l = HUFF_FAST + 1; l <= 16; l++) {
        int32_t code = (int32_t)(code16 >> (16 - l));
        if (code <= h->maxcode[l]) {
            bits_skip(j, l);
            return h->values[h->valoffset[l] + code];
        }
    }
    return -1;
}

/* F.2.2.1 EXTEND: s bits v as a signed value of magnitude category s (1..16). */
static int32_t extend(uint32_t v, int s) {
    return v < (1u << (s - 1)) ? (int32_t)v - (int32_t)((1u << s) - 1) : (int32_t)v;
}

/* Coefficients are kept in 16 bits as libjpeg keeps them (JCOEF); out-of-range values from corrupt
 * data wrap the same way, without relying on implementation-defined conversions. */
static int16_t wrap16(int64_t v) {
    uint16_t u = (uint16_t)((uint64_t)v & 0xFFFF);
    return u < 0x8000 ? (int16_t)u : (int16_t)((int32_t)u - 0x10000);
}

/* ---- block decoding (F.2.2 sequential, G.1.2 progressive) ------------------------------------- */

static int decode_dc(Jpeg *j, JComp *c, int64_t *dc) {
    int s = huff_decode(j, &j->dc[c->dc_table]);
    if (s < 0) return jfail_corrupt(j, "bad Huffman code");
    if (s > 15) return jfail_corrupt(j, "DC difference category above 15");
    int64_t v = c->dc_pred + (s ? extend(get_bits(j, s), s) : 0);
    if (v > INT32_MAX || v < INT32_MIN) return jfail_corrupt(j, "DC prediction overflows");
    c->dc_pred = v;
    *dc = v;
    return 0;
}

static int decode_block_sequential(Jpeg *j, JComp *c, int16_t *blk) {
    memset(blk, 0, 64 * sizeof *blk);
    int64_t dc;
    if (decode_dc(j, c, &dc) != 0) return -1;
    blk[0] = wrap16(dc);
    const JHuff *ac = &j->ac[c->ac_table];
    for (int k = 1; k < 64; k++) {
        int rs = huff_decode(j, ac);
        if (rs < 0) return jfail_corrupt(j, "bad Huffman code");
        int r = rs >> 4, s = rs & 15;
        if (s) {
            k += r; /* at most 78: natural_order has room */
            blk[natural_order[k]] = (int16_t)extend(get_bits(j, s), s);
        } else {
            if (r != 15) break; /* EOB */
            k += 15;           /* ZRL: sixteen zeros */
        }
    }
    return 0;
}

/* G.1.2.1: first DC scan (value << Al) and DC refinement (one more bit). */
static int decode_block_dc_progressive(Jpeg *j, JComp *c, int16_t *blk) {
    if (j->ah == 0) {
        int64_t dc;
        if (decode_dc(j, c, &dc) != 0) return -1;
        blk[0] = wrap16(dc * ((int64_t)1 << j->al));
    } else if (get_bits(j, 1)) {
        blk[0] = wrap16(blk[0] | (1 << j->al));
    }
    return 0;
}

/* G.1.2.2: first AC scan of band Ss..Se, with end-of-band runs spanning blocks. */
static int decode_block_ac_first(Jpeg *j, JComp *c, int16_t *blk) {
    if (j->eobrun > 0) {
        j->eobrun--;
        return 0;
    }
    const JHuff *ac = &j->ac[c->ac_table];
    for (int k = j->ss; k <= j->se; k++) {
        int rs = huff_decode(j, ac);
        if (rs < 0) return jfail_corrupt(j, "bad Huffman code");
        int r = rs >> 4, s = rs & 15;
        if (s) {
            k += r;
            blk[natural_order[k]] = wrap16((int64_t)extend(get_bits(j, s), s) * ((int64_t)1 << j->al));
        } else if (r == 15) {
            k += 15;
        } else {
            j->eobrun = (1 << r) - 1; /* this block ends the first of the run */
            if (r) j->eobrun += (int)get_bits(j, r);
            break;
        }
    }
    return 0;
}

/* A correction bit for a coefficient that is already nonzero (G.1.2.3): it adds 2^Al to the
 * magnitude unless that bit is already set. */
static void refine_nonzero(Jpeg *j, int16_t *coef) {
    if (get_bits(j, 1) && (*coef & (1 << j->al)) == 0)
        *coef = wrap16(*coef >= 0 ? *coef + (1 << j->al) : *coef - (1 << j->al));
}

/* G.1.2.3: AC refinement scan. Newly nonzero coefficients (always +-2^Al) are placed after skipping
 * r still-zero coefficients; every already-nonzero coefficient passed over gets a correction bit. */
static int decode_block_ac_refine(Jpeg *j, JComp *c, int16_t *blk) {
    const JHuff *ac = &j->ac[c->ac_table];
    int k = j->ss;
    if (j->eobrun == 0) {
        for (; k <= j->se; k++) {
            int rs = huff_decode(j, ac);
            if (rs < 0) return jfail_corrupt(j, "bad Huffman code");
            int r = rs >> 4, s = rs & 15, value = 0;
            if (s) {
                /* the size of a new coefficient is always 1; libjpeg tolerates other sizes too */
                value = get_bits(j, 1) ? (1 << j->al) : -(1 << j->al);
            } else if (r != 15) {
                j->eobrun = 1 << r;
                if (r) j->eobrun += (int)get_bits(j, r);
                break; /* the rest of this block is handled as part of the run below */
            }
            /* r == 15 and s == 0 is ZRL: skip 16 zero coefficients (value stays 0) */
            for (; k <= j->se; k++) {
                int16_t *coef = &blk[natural_order[k]];
                if (*coef != 0) refine_nonzero(j, coef);
                else if (--r < 0) break; /* the zero coefficient that becomes `value` */
            }
            if (value) blk[natural_order[k]] = (int16_t)value; /* k <= 64: natural_order has room */
        }
    }
    if (j->eobrun > 0) {
        /* inside an end-of-band run: only correction bits for the nonzero coefficients left */
        for (; k <= j->se; k++) {
            int16_t *coef = &blk[natural_order[k]];
            if (*coef != 0) refine_nonzero(j, coef);
        }
        j->eobrun--;
    }
    return 0;
}

static int decode_block(Jpeg *j, JComp *c, int16_t *blk) {
    if (!j->progressive) return decode_block_sequential(j, c, blk);
    if (j->ss == 0) return decode_block_dc_progressive(j, c, blk);
    if (j->ah == 0) return decode_block_ac_first(j, c, blk);
    return decode_block_ac_refine(j, c, blk);
}

/* ---- scans ---------------------------------------------------------------------------------- */

/* Finds the next marker from `pos`, skipping any other bytes (as libjpeg's next_marker does with
 * a warning): returns its code and sets pos after it, or returns -1 at the end of the data. */
static int next_marker(Jpeg *j) {
    size_t p = j->pos;
    for (;;) {
        while (p < j->n && j->d[p] != 0xFF) p++;
        while (p < j->n && j->d[p] == 0xFF) p++; /* B.1.1.2: any number of fill bytes */
        if (p >= j->n) {
            j->pos = j->n;
            return -1;
        }
        if (j->d[p] != 0x00) {
            j->pos = p + 1;
            return j->d[p];
        }
        p++; /* a stuffed zero outside a scan: not a marker */
    }
}

/* E.2.4 / F.2.2.5: at the end of each restart interval the coder is byte-aligned and an RSTn marker
 * (n counting 0..7) follows; decoding restarts with zero predictions. A missing, damaged or
 * out-of-sequence marker is handled as libjpeg's resync_to_restart does: the expected RSTn (or one
 * not near it) is consumed; one of the next two RSTs, or another valid marker, is left in place and
 * this interval reads as zeros; an earlier RST or an invalid marker is skipped and the search goes
 * on. Bytes before the marker are skipped. */
static int process_restart(Jpeg *j) {
    bits_reset(j);
    int want = j->next_restart;
    j->next_restart = (want + 1) & 7;
    for (int m = next_marker(j);; m = next_marker(j)) {
        if (m < 0)
            return blv_fail(j->err, "%s: truncated JPEG (the data ends inside scan %d)", j->name, j->scans + 1);
        int action; /* 1: consume and resume, 0: leave it for later, 2: skip it and look further */
        if (m == 0xD0 + want) action = 1;
        else if (m < 0xC0) action = 2;
        else if (m < 0xD0 || m > 0xD7) action = 0;
        else if (m == 0xD0 + ((want + 1) & 7) || m == 0xD0 + ((want + 2) & 7)) action = 0;
        else if (m == 0xD0 + ((want + 7) & 7) || m == 0xD0 + ((want + 6) & 7)) action = 2;
        else action = 1;
        if (action == 1) break;
        if (action == 0) {
            j->pos -= 2; /* back to the 0xFF of the marker */
            j->stopped = 1;
            /* not a restart marker: no more data for this scan at all */
            if (m < 0xD0 || m > 0xD7) j->scan_ended = 1;
            break;
        }
    }
    for (int i = 0; i < j->ns; i++) j->sc[i]->dc_pred = 0;
    j->eobrun = 0;
    return 0;
}

static int16_t *block_at(JComp *c, int bx, int by) {
    return c->coef + ((size_t)by * (size_t)c->bw + (size_t)bx) * 64;
}

/* A.2: the MCU order. One component: its blocks in raster order, one per MCU, covering only the
 * blocks that hold samples. Several: MCUs of h x v blocks of each component in turn. */
static int decode_scan_data(Jpeg *j) {
    int interleaved = j->ns > 1;
    int64_t mcu_w = interleaved ? j->mcux : j->sc[0]->nbw;
    int64_t mcu_h = interleaved ? j->mcuy : j->sc[0]->nbh;
    int64_t total = mcu_w * mcu_h;
    bits_reset(j);
    j->eobrun = 0;
    for (int i = 0; i < j->ns; i++) j->sc[i]->dc_pred = 0;
    j->next_restart = 0;
    j->scan_ended = 0;
    int64_t ri = j->restart_interval;
    for (int64_t m = 0; m < total; m++) {
        if (ri && m > 0 && m % ri == 0) {
            if (process_restart(j) != 0) return -1;
            if (j->scan_ended) break;
        }
        if (j->overrun) {
            /* The data of this interval ran out at a marker in an earlier MCU: like libjpeg, leave
             * the rest of the interval's blocks as they are (zero, for a sequential scan, whose
             * blocks are coded once). Skip to the interval's last MCU. */
            if (!ri) break;
            m = (m / ri + 1) * ri - 1;
            continue;
        }
        int mx = (int)(m % mcu_w), my = (int)(m / mcu_w);
        if (!interleaved) {
            if (decode_block(j, j->sc[0], block_at(j->sc[0], mx, my)) != 0) return -1;
        } else {
            for (int i = 0; i < j->ns; i++) {
                JComp *c = j->sc[i];
                for (int by = 0; by < c->v; by++)
                    for (int bx = 0; bx < c->h; bx++)
                        if (decode_block(j, c, block_at(c, mx * c->h + bx, my * c->v + by)) != 0) return -1;
            }
        }
        if (j->overrun && j->hit_eof)
            return blv_fail(j->err, "%s: truncated JPEG (the data ends inside scan %d)", j->name, j->scans + 1);
    }
    /* whatever follows (padding bits, the next marker) is found by next_marker */
    bits_reset(j);
    return 0;
}

/* ---- marker segments (B.2.4, B.2.2, B.2.3) ---------------------------------------------------- */

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static int parse_dqt(Jpeg *j, const uint8_t *s, size_t len) {
    while (len > 0) {
        int pq = s[0] >> 4, tq = s[0] & 15;
        if (pq > 1 || tq > 3) return blv_fail(j->err, "%s: invalid DQT (precision %d, table %d)", j->name, pq, tq);
        size_t need = 1 + 64 * (size_t)(pq + 1);
        if (len < need) return blv_fail(j->err, "%s: truncated DQT segment", j->name);
        for (int k = 0; k < 64; k++)
            j->qt[tq][natural_order[k]] = (uint16_t)(pq ? be16(s + 1 + 2 * k) : s[1 + k]);
        j->qt_defined[tq] = 1;
        s += need;
        len -= need;
    }
    return 0;
}

static int parse_dht(Jpeg *j, const uint8_t *s, size_t len) {
    while (len > 0) {
        if (len < 17) return blv_fail(j->err, "%s: truncated DHT segment", j->name);
        int tc = s[0] >> 4, th = s[0] & 15;
        if (tc > 1 || th > 3) return blv_fail(j->err, "%s: invalid DHT (class %d, table %d)", j->name, tc, th);
        JHuff *h = tc ? &j->ac[th] : &j->dc[th];
        int total = 0;
        h->counts[0] = 0;
        for (int l = 1; l <= 16; l++) total += h->counts[l] = s[l];
        if (total > 256) return blv_fail(j->err, "%s: invalid DHT (%d codes)", j->name, total);
        if (len < 17 + (size_t)total) return blv_fail(j->err, "%s: truncated DHT segment", j->name);
        memcpy(h->values, s + 17, (size_t)total);
        if (huff_build(j, h) != 0) return -1;
        s += 17 + total;
        len -= 17 + (size_t)total;
    }
    return 0;
}

static int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

static int parse_sof(Jpeg *j, int marker, const uint8_t *s, size_t len, const ImageLimits *limits) {
    if (j->have_frame) return blv_fail(j->err, "%s: more than one frame (SOF) in a JPEG", j->name);
    if (len < 6) return blv_fail(j->err, "%s: truncated SOF segment", j->name);
    int precision = s[0], nf = s[5];
    j->height = (int)be16(s + 1);
    j->width = (int)be16(s + 3);
    if (precision != 8)
        return blv_fail(j->err, "%s: unsupported JPEG: %d-bit samples (only 8-bit)", j->name, precision);
    if (j->height == 0)
        return blv_fail(j->err, "%s: unsupported JPEG: height defined by a DNL marker", j->name);
    if (j->width == 0) return blv_fail(j->err, "%s: invalid JPEG: width 0", j->name);
    if (nf == 2 || nf > 4 || nf == 0)
        return blv_fail(j->err, "%s: unsupported JPEG: %d components (only 1, 3 or 4)", j->name, nf);
    if (len != 6 + 3 * (size_t)nf) return blv_fail(j->err, "%s: SOF segment has the wrong length", j->name);
    if (image_check_size(j->width, j->height, j->name, limits, j->err) != 0) return -1;
    j->ncomp = nf;
    j->hmax = j->vmax = 1;
    for (int i = 0; i < nf; i++) {
        JComp *c = &j->comp[i];
        c->id = s[6 + 3 * i];
        c->h = s[7 + 3 * i] >> 4;
        c->v = s[7 + 3 * i] & 15;
        c->tq = s[8 + 3 * i];
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4)
            return blv_fail(j->err, "%s: invalid sampling factors %dx%d", j->name, c->h, c->v);
        if (c->tq > 3) return blv_fail(j->err, "%s: invalid quantization table %d", j->name, c->tq);
        if (c->h > j->hmax) j->hmax = c->h;
        if (c->v > j->vmax) j->vmax = c->v;
    }
    j->mcux = ceil_div(j->width, 8 * j->hmax);
    j->mcuy = ceil_div(j->height, 8 * j->vmax);
    for (int i = 0; i < nf; i++) {
        JComp *c = &j->comp[i];
        c->cw = ceil_div((int64_t)j->width * c->h, j->hmax);
        c->ch = ceil_div((int64_t)j->height * c->v, j->vmax);
        c->nbw = ceil_div(c->cw, 8);
        c->nbh = ceil_div(c->ch, 8);
        c->bw = j->mcux * c->h;
        c->bh = j->mcuy * c->v;
        c->coef = blv_calloc((size_t)c->bw * (size_t)c->bh, 64 * sizeof(int16_t), "JPEG coefficients", j->err);
        if (!c->coef) return blv_fail_prefix(j->err, "%s", j->name);
    }
    j->progressive = marker == 0xC2;
    j->have_frame = 1;
    return 0;
}

/* G.1.1.1.1 and libjpeg's checks: the scan parameters a progression allows. */
static int check_progression(Jpeg *j) {
    if (!j->progressive) {
        /* sequential: Ss, Se, Ah, Al are fixed at 0, 63, 0, 0; libjpeg ignores other values */
        j->ss = 0;
        j->se = 63;
        j->ah = j->al = 0;
        return 0;
    }
    int bad = 0;
    if (j->ss == 0) bad = j->se != 0;
    else bad = j->ss > j->se || j->se > 63 || j->ns != 1;
    if (j->ah != 0 && j->al != j->ah - 1) bad = 1;
    if (j->al > 13) bad = 1;
    if (bad)
        return blv_fail(j->err, "%s: invalid progressive scan (Ss=%d Se=%d Ah=%d Al=%d, %d components)", j->name,
                        j->ss, j->se, j->ah, j->al, j->ns);
    return 0;
}

static int parse_sos(Jpeg *j, const uint8_t *s, size_t len) {
    if (!j->have_frame) return blv_fail(j->err, "%s: scan (SOS) before the frame header (SOF)", j->name);
    if (len < 1) return blv_fail(j->err, "%s: truncated SOS segment", j->name);
    int ns = s[0];
    if (ns < 1 || ns > MAX_COMPONENTS || len != 4 + 2 * (size_t)ns)
        return blv_fail(j->err, "%s: invalid SOS segment (%d components, length %zu)", j->name, ns, len);
    j->ns = ns;
    int used[MAX_COMPONENTS] = {0}, blocks = 0;
    for (int i = 0; i < ns; i++) {
        int id = s[1 + 2 * i], td = s[2 + 2 * i] >> 4, ta = s[2 + 2 * i] & 15;
        /* the first unused frame component with this id (libjpeg's rule; tolerates duplicate ids) */
        JComp *c = NULL;
        for (int k = 0; k < j->ncomp && !c; k++)
            if (j->comp[k].id == id && !used[k]) {
                c = &j->comp[k];
                used[k] = 1;
            }
        if (!c) return blv_fail(j->err, "%s: scan refers to unknown component %d", j->name, id);
        if (td > 3 || ta > 3) return blv_fail(j->err, "%s: invalid Huffman table selector", j->name);
        c->dc_table = td;
        c->ac_table = ta;
        j->sc[i] = c;
        blocks += c->h * c->v;
    }
    if (ns > 1 && blocks > 10)
        return blv_fail(j->err, "%s: sampling factors too large for an interleaved scan (%d blocks per MCU)",
                        j->name, blocks);
    j->ss = s[1 + 2 * ns];
    j->se = s[2 + 2 * ns];
    j->ah = s[3 + 2 * ns] >> 4;
    j->al = s[3 + 2 * ns] & 15;
    if (check_progression(j) != 0) return -1;

    for (int i = 0; i < ns; i++) {
        JComp *c = j->sc[i];
        if (!c->qt_latched) { /* libjpeg latches the table when the component's first scan starts */
            if (!j->qt_defined[c->tq])
                return blv_fail(j->err, "%s: quantization table %d is not defined", j->name, c->tq);
            memcpy(c->qt, j->qt[c->tq], sizeof c->qt);
            c->qt_latched = 1;
        }
        if (!j->progressive && c->scanned)
            return blv_fail(j->err, "%s: component %d is in more than one scan of a sequential JPEG", j->name, c->id);
        for (int k = j->ss; j->progressive && k <= j->se; k++)
            if (++c->codings[k] > MAX_CODINGS)
                return blv_fail(j->err, "%s: coefficient %d of component %d is coded by more than %d scans", j->name, k,
                                c->id, MAX_CODINGS);
        int need_dc = !j->progressive || (j->ss == 0 && j->ah == 0);
        int need_ac = !j->progressive || j->ss > 0;
        if (need_dc && !j->dc[c->dc_table].defined)
            return blv_fail(j->err, "%s: DC Huffman table %d is not defined", j->name, c->dc_table);
        if (need_ac && !j->ac[c->ac_table].defined)
            return blv_fail(j->err, "%s: AC Huffman table %d is not defined", j->name, c->ac_table);
        c->scanned = 1;
    }
    return 0;
}

/* APP0 "JFIF", APP1 "Exif", APP14 "Adobe": what libjpeg (and Pillow) use from the application
 * segments. The colour space follows from them (see output_color_space). */
static void parse_app(Jpeg *j, int marker, const uint8_t *s, size_t len) {
    if (marker == 0xE0 && len >= 14 && memcmp(s, "JFIF\0", 5) == 0) j->jfif = 1;
    if (marker == 0xE1 && len >= 6 && memcmp(s, "Exif\0\0", 6) == 0 && !j->orientation)
        j->orientation = image_exif_orientation(s + 6, len - 6);
    if (marker == 0xEE && len >= 12 && memcmp(s, "Adobe", 5) == 0) {
        j->adobe = 1;
        j->adobe_transform = s[11];
    }
}

static const char *unsupported_sof(int m) {
    switch (m) {
    case 0xC3: return "lossless (SOF3)";
    case 0xC5: return "differential sequential, hierarchical (SOF5)";
    case 0xC6: return "differential progressive, hierarchical (SOF6)";
    case 0xC7: return "differential lossless, hierarchical (SOF7)";
    case 0xC9: return "arithmetic-coded extended sequential (SOF9)";
    case 0xCA: return "arithmetic-coded progressive (SOF10)";
    case 0xCB: return "arithmetic-coded lossless (SOF11)";
    case 0xCD: return "arithmetic-coded differential sequential (SOF13)";
    case 0xCE: return "arithmetic-coded differential progressive (SOF14)";
    case 0xCF: return "arithmetic-coded differential lossless (SOF15)";
    case 0xDE: return "hierarchical (DHP)";
    case 0xDF: return "hierarchical (EXP)";
    case 0xF7: return "JPEG-LS (SOF55)";
    default: return NULL;
    }
}

static int all_scanned(const Jpeg *j) {
    for (int i = 0; i < j->ncomp; i++)
        if (!j->comp[i].scanned) return 0;
    return 1;
}

/* Reads markers up to EOI, decoding each scan as it comes (B.2.1, B.3). */
static int parse_markers(Jpeg *j, const ImageLimits *limits) {
    for (;;) {
        size_t at = j->pos;
        int m = next_marker(j);
        if (m < 0) {
            if (!j->have_frame) return blv_fail(j->err, "%s: no frame header (SOF) in the JPEG data", j->name);
            if (j->scans == 0) return blv_fail(j->err, "%s: no image data (SOS) in the JPEG", j->name);
            /* (a complete sequential image has returned already) */
            return blv_fail(j->err, "%s: truncated JPEG (no EOI marker)", j->name);
        }
        if (m == 0xD9) return 0; /* EOI */
        if (m == 0xD8) return blv_fail(j->err, "%s: unexpected SOI marker at offset %zu", j->name, at);
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* TEM, stray RSTn: no segment */
        const char *unsupported = unsupported_sof(m);
        if (unsupported) return blv_fail(j->err, "%s: unsupported JPEG type: %s", j->name, unsupported);
        if (j->n - j->pos < 2) return blv_fail(j->err, "%s: truncated JPEG (marker 0xFF%02X)", j->name, m);
        size_t seg_len = be16(j->d + j->pos);
        if (seg_len < 2 || seg_len > j->n - j->pos)
            return blv_fail(j->err, "%s: truncated JPEG (segment 0xFF%02X at offset %zu has length %zu)", j->name, m,
                            j->pos - 2, seg_len);
        const uint8_t *s = j->d + j->pos + 2;
        size_t len = seg_len - 2;
        j->pos += seg_len;
        int rc = 0;
        switch (m) {
        case 0xC0: case 0xC1: case 0xC2: rc = parse_sof(j, m, s, len, limits); break;
        case 0xC4: rc = parse_dht(j, s, len); break;
        case 0xDB: rc = parse_dqt(j, s, len); break;
        case 0xDD:
            if (len != 2) return blv_fail(j->err, "%s: invalid DRI segment", j->name);
            j->restart_interval = (int)be16(s);
            break;
        case 0xDA:
            rc = parse_sos(j, s, len);
            if (rc == 0) rc = decode_scan_data(j);
            j->scans++;
            if (rc == 0 && !j->progressive && all_scanned(j))
                return 0; /* a sequential image is complete: what follows is not needed (libjpeg
                           * and Pillow do not read it either) */
            break;
        case 0xCC: /* DAC: arithmetic conditioning, only with the (rejected) arithmetic SOFs */
        case 0xDC: /* DNL: only meaningful with a zero height, which is rejected at SOF */
        case 0xFE: /* COM */
            break;
        default:
            if (m >= 0xE0 && m <= 0xEF) parse_app(j, m, s, len);
            else if (!(m >= 0xF0 && m <= 0xFD)) /* JPGn extensions are skipped; the rest is reserved */
                return blv_fail(j->err, "%s: unknown JPEG marker 0xFF%02X at offset %zu", j->name, m, at);
        }
        if (rc != 0) return -1;
    }
}

/* ---- inverse DCT ---------------------------------------------------------------------------------
 * A.3.3's IDCT computed with the Loeffler-Ligtenberg-Moschytz factorization in scaled integers, as
 * libjpeg's "islow" does: 13-bit constants, two extra bits of precision between the column and row
 * passes, rounding at exactly the same points, so the samples are bit-identical to libjpeg's. */
#define CONST_BITS 13
#define PASS1_BITS 2
enum {
    FIX_0_298631336 = 2446, FIX_0_390180644 = 3196, FIX_0_541196100 = 4433, FIX_0_765366865 = 6270,
    FIX_0_899976223 = 7373, FIX_1_175875602 = 9633, FIX_1_501321110 = 12299, FIX_1_847759065 = 15137,
    FIX_1_961570560 = 16069, FIX_2_053119869 = 16819, FIX_2_562915447 = 20995, FIX_3_072711026 = 25172
};

/* x / 2^n rounded to nearest (halves up), with a floor shift that does not depend on how the
 * compiler shifts negative numbers. */
static int64_t descale(int64_t x, int n) {
    x += (int64_t)1 << (n - 1);
    return x >= 0 ? x >> n : -((-x - 1) >> n) - 1;
}

/* One 8-point 1-D IDCT of in[0], in[s], ..., in[7s] into out[0], out[s], ... descaled by `shift`. */
static void idct_1d(const int64_t *in, int s, int64_t *out, int shift) {
    /* even part: inputs 0, 2, 4, 6 */
    int64_t z2 = in[2 * s], z3 = in[6 * s];
    int64_t z1 = (z2 + z3) * FIX_0_541196100;
    int64_t tmp2 = z1 - z3 * FIX_1_847759065;
    int64_t tmp3 = z1 + z2 * FIX_0_765366865;
    int64_t tmp0 = (in[0] + in[4 * s]) * (1 << CONST_BITS);
    int64_t tmp1 = (in[0] - in[4 * s]) * (1 << CONST_BITS);
    int64_t tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
    /* odd part: inputs 7, 5, 3, 1 */
    int64_t t0 = in[7 * s], t1 = in[5 * s], t2 = in[3 * s], t3 = in[1 * s];
    int64_t y1 = t0 + t3, y2 = t1 + t2, y3 = t0 + t2, y4 = t1 + t3;
    int64_t y5 = (y3 + y4) * FIX_1_175875602;
    t0 *= FIX_0_298631336;
    t1 *= FIX_2_053119869;
    t2 *= FIX_3_072711026;
    t3 *= FIX_1_501321110;
    y1 *= -FIX_0_899976223;
    y2 *= -FIX_2_562915447;
    y3 = y3 * -FIX_1_961570560 + y5;
    y4 = y4 * -FIX_0_390180644 + y5;
    t0 += y1 + y3;
    t1 += y2 + y4;
    t2 += y2 + y3;
    t3 += y1 + y4;
    out[0] = descale(tmp10 + t3, shift);
    out[7 * s] = descale(tmp10 - t3, shift);
    out[1 * s] = descale(tmp11 + t2, shift);
    out[6 * s] = descale(tmp11 - t2, shift);
    out[2 * s] = descale(tmp12 + t1, shift);
    out[5 * s] = descale(tmp12 - t1, shift);
    out[3 * s] = descale(tmp13 + t0, shift);
    out[4 * s] = descale(tmp13 - t0, shift);
}

static uint8_t clamp255(int64_t v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Dequantizes one block (A.3.4) and writes its 8x8 samples, level-shifted by +128 (A.3.1). */
static void idct_block(const int16_t *coef, const uint16_t *qt, uint8_t *out, size_t stride) {
    int64_t in[64], ws[64], row[8];
    for (int i = 0; i < 64; i++) in[i] = (int64_t)coef[i] * qt[i];
    for (int col = 0; col < 8; col++) idct_1d(in + col, 8, ws + col, CONST_BITS - PASS1_BITS);
    for (int r = 0; r < 8; r++) {
        idct_1d(ws + 8 * r, 1, row, CONST_BITS + PASS1_BITS + 3);
        for (int c = 0; c < 8; c++) out[(size_t)r * stride + (size_t)c] = clamp255(row[c] + 128);
    }
}

/* Every block that holds samples -> the component's sample plane. */
static int component_idct(Jpeg *j, JComp *c) {
    size_t stride = (size_t)c->nbw * 8;
    c->plane = blv_malloc(stride * (size_t)c->nbh * 8, "a JPEG sample plane", j->err);
    if (!c->plane) return blv_fail_prefix(j->err, "%s", j->name);
    for (int by = 0; by < c->nbh; by++)
        for (int bx = 0; bx < c->nbw; bx++)
            idct_block(block_at(c, bx, by), c->qt, c->plane + (size_t)by * 8 * stride + (size_t)bx * 8, stride);
    return 0;
}

/* ---- upsampling ----------------------------------------------------------------------------------
 * libjpeg's choices (jdsample.c), which Pillow inherits: a component at half the horizontal and/or
 * vertical resolution is interpolated with a triangle filter (3/4 of the nearer sample, 1/4 of the
 * further), with libjpeg's rounding biases; horizontal interpolation only for components more than
 * two samples wide. Other ratios replicate samples (box filter); ratios that are not integers, which
 * libjpeg refuses, take the nearest sample to the left/above. Edges replicate the last real sample
 * row/column of the component (not the block padding). */
typedef enum { UP_COPY, UP_H2V1, UP_H1V2, UP_H2V2, UP_BOX } UpMode;

static UpMode upsample_mode(const Jpeg *j, const JComp *c) {
    int h2 = j->hmax == 2 * c->h, v2 = j->vmax == 2 * c->v, h1 = j->hmax == c->h, v1 = j->vmax == c->v;
    if (h1 && v1) return UP_COPY;
    if (h2 && v1 && c->cw > 2) return UP_H2V1;
    if (h1 && v2) return UP_H1V2;
    if (h2 && v2 && c->cw > 2) return UP_H2V2;
    return UP_BOX;
}

/* Output row y of component c, `width` samples. */
static void upsample_row(const Jpeg *j, const JComp *c, UpMode mode, int y, uint8_t *out) {
    size_t stride = (size_t)c->nbw * 8;
    int w = j->width, cw = c->cw;
    if (mode == UP_COPY) {
        memcpy(out, c->plane + (size_t)y * stride, (size_t)w);
        return;
    }
    if (mode == UP_BOX) {
        const uint8_t *in = c->plane + (size_t)((int64_t)y * c->v / j->vmax) * stride;
        for (int x = 0; x < w; x++) out[x] = in[(int64_t)x * c->h / j->hmax];
        return;
    }
    /* the nearer input row, and for vertical interpolation the further one (clamped to the
     * component's real rows) */
    int r = mode == UP_H2V1 ? y : y / 2;
    const uint8_t *in0 = c->plane + (size_t)r * stride;
    if (mode == UP_H2V1) {
        /* out[2i] = (3 in[i] + in[i-1] + 1) / 4, out[2i+1] = (3 in[i] + in[i+1] + 2) / 4 */
        int n = (w + 1) / 2; /* input samples needed, <= cw */
        for (int i = 0; i < n; i++) {
            int left = i > 0 ? in0[i - 1] : in0[i], right = i + 1 < cw ? in0[i + 1] : in0[i];
            int v3 = 3 * in0[i];
            out[2 * i] = (uint8_t)(i == 0 ? in0[0] : (v3 + left + 1) >> 2);
            if (2 * i + 1 < w) out[2 * i + 1] = (uint8_t)(i == cw - 1 ? in0[i] : (v3 + right + 2) >> 2);
        }
        return;
    }
    int upper = (y & 1) == 0;
    int r1 = upper ? (r > 0 ? r - 1 : 0) : (r + 1 < c->ch ? r + 1 : c->ch - 1);
    const uint8_t *in1 = c->plane + (size_t)r1 * stride;
    if (mode == UP_H1V2) {
        int bias = upper ? 1 : 2;
        for (int x = 0; x < w; x++) out[x] = (uint8_t)((3 * in0[x] + in1[x] + bias) >> 2);
        return;
    }
    /* UP_H2V2: column sums of the two rows, then the same 3:1 weights across (/16 in all) */
    int n = (w + 1) / 2;
    for (int i = 0; i < n; i++) {
        int cur = 3 * in0[i] + in1[i];
        int prev = i > 0 ? 3 * in0[i - 1] + in1[i - 1] : cur;
        int next = i + 1 < cw ? 3 * in0[i + 1] + in1[i + 1] : cur;
        out[2 * i] = (uint8_t)(i == 0 ? (4 * cur + 8) >> 4 : (3 * cur + prev + 8) >> 4);
        if (2 * i + 1 < w) out[2 * i + 1] = (uint8_t)(i == cw - 1 ? (4 * cur + 7) >> 4 : (3 * cur + next + 7) >> 4);
    }
}

/* ---- colour conversion ------------------------------------------------------------------------ */

typedef enum { CS_GRAY, CS_YCBCR, CS_RGB, CS_CMYK, CS_YCCK } ColorSpace;

/* libjpeg's default_decompress_parms: JFIF means YCbCr; else Adobe's transform flag; else the
 * component ids ('R','G','B' means RGB); 4 components are CMYK unless Adobe says YCCK. */
static ColorSpace output_color_space(const Jpeg *j) {
    if (j->ncomp == 1) return CS_GRAY;
    if (j->ncomp == 3) {
        if (j->jfif) return CS_YCBCR;
        if (j->adobe) return j->adobe_transform == 0 ? CS_RGB : CS_YCBCR;
        if (j->comp[0].id == 'R' && j->comp[1].id == 'G' && j->comp[2].id == 'B') return CS_RGB;
        return CS_YCBCR;
    }
    return j->adobe && j->adobe_transform != 0 ? CS_YCCK : CS_CMYK;
}

static int32_t asr16(int32_t x) { return x >= 0 ? x >> 16 : -((-x - 1) >> 16) - 1; }

/* JFIF YCbCr -> RGB in libjpeg's 16-bit fixed point (jdcolor.c): R = Y + 1.402 Cr',
 * G = Y - 0.34414 Cb' - 0.71414 Cr', B = Y + 1.772 Cb', each term rounded as libjpeg rounds it. */
typedef struct {
    int32_t cr_r[256], cb_b[256], cr_g[256], cb_g[256];
} YccTables;

static void ycc_tables(YccTables *t) {
    for (int i = 0; i < 256; i++) {
        int32_t x = i - 128;
        t->cr_r[i] = asr16(91881 * x + 32768);  /* FIX(1.40200) */
        t->cb_b[i] = asr16(116130 * x + 32768); /* FIX(1.77200) */
        t->cr_g[i] = -46802 * x;                /* FIX(0.71414) */
        t->cb_g[i] = -22554 * x + 32768;        /* FIX(0.34414), with the rounding half */
    }
}

static void ycc_to_rgb(const YccTables *t, int y, int cb, int cr, uint8_t *rgb) {
    rgb[0] = clamp255(y + t->cr_r[cr]);
    rgb[1] = clamp255(y + asr16(t->cb_g[cb] + t->cr_g[cr]));
    rgb[2] = clamp255(y + t->cb_b[cb]);
}

/* Pillow's MULDIV255: a*b/255 rounded, in integers. */
static int muldiv255(int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* Adobe CMYK samples are stored inverted (Pillow reads them as "CMYK;I"); Pillow's CMYK -> RGB is
 * R = (255 - K) - C (255 - K) / 255 with ink values C, K. Here s* are the stored samples. */
static void cmyk_to_rgb(int sc, int sm, int sy, int sk, uint8_t *rgb) {
    int nk = sk; /* 255 - (255 - sk) */
    rgb[0] = clamp255(nk - muldiv255(255 - sc, nk));
    rgb[1] = clamp255(nk - muldiv255(255 - sm, nk));
    rgb[2] = clamp255(nk - muldiv255(255 - sy, nk));
}

static void convert_row(ColorSpace cs, const YccTables *t, uint8_t *const rows[MAX_COMPONENTS], int w, uint8_t *out) {
    for (int x = 0; x < w; x++, out += 3) {
        switch (cs) {
        case CS_GRAY: out[0] = out[1] = out[2] = rows[0][x]; break;
        case CS_RGB: out[0] = rows[0][x]; out[1] = rows[1][x]; out[2] = rows[2][x]; break;
        case CS_YCBCR: ycc_to_rgb(t, rows[0][x], rows[1][x], rows[2][x], out); break;
        case CS_CMYK: cmyk_to_rgb(rows[0][x], rows[1][x], rows[2][x], rows[3][x], out); break;
        case CS_YCCK: {
            /* libjpeg's YCCK -> CMYK: C,M,Y = 255 - (YCbCr -> RGB), K unchanged */
            uint8_t rgb[3];
            ycc_to_rgb(t, rows[0][x], rows[1][x], rows[2][x], rgb);
            cmyk_to_rgb(255 - rgb[0], 255 - rgb[1], 255 - rgb[2], rows[3][x], out);
            break;
        }
        }
    }
}

static int jpeg_output(Jpeg *j, Image *img, const ImageLimits *limits) {
    for (int i = 0; i < j->ncomp; i++)
        if (!j->comp[i].scanned)
            return blv_fail(j->err, "%s: truncated JPEG (component %d has no scan data)", j->name, j->comp[i].id);
    for (int i = 0; i < j->ncomp; i++)
        if (component_idct(j, &j->comp[i]) != 0) return -1;
    if (image_alloc(img, j->width, j->height, j->name, limits, j->err) != 0) return -1;
    uint8_t *rows[MAX_COMPONENTS] = {NULL};
    UpMode modes[MAX_COMPONENTS];
    int rc = 0;
    for (int i = 0; i < j->ncomp && rc == 0; i++) {
        rows[i] = blv_malloc((size_t)j->width, "a JPEG row", j->err);
        if (!rows[i]) rc = blv_fail_prefix(j->err, "%s", j->name);
        modes[i] = upsample_mode(j, &j->comp[i]);
    }
    YccTables t;
    ycc_tables(&t);
    ColorSpace cs = output_color_space(j);
    for (int y = 0; y < j->height && rc == 0; y++) {
        for (int i = 0; i < j->ncomp; i++) upsample_row(j, &j->comp[i], modes[i], y, rows[i]);
        convert_row(cs, &t, rows, j->width, img->rgb + (size_t)y * (size_t)j->width * 3);
    }
    for (int i = 0; i < j->ncomp; i++) free(rows[i]);
    if (rc == 0) rc = image_apply_orientation(img, j->orientation, j->err);
    if (rc != 0) image_free(img);
    return rc;
}

int image_decode_jpeg(Image *img, const uint8_t *data, size_t size, const char *name,
                      const ImageLimits *limits, BlvError *err) {
    memset(img, 0, sizeof *img);
    if (size < 2 || data[0] != 0xFF || data[1] != 0xD8) return blv_fail(err, "%s: not a JPEG file", name);
    Jpeg *j = blv_calloc(1, sizeof *j, "the JPEG decoder", err);
    if (!j) return blv_fail_prefix(err, "%s", name);
    j->name = name;
    j->err = err;
    j->d = data;
    j->n = size;
    j->pos = 2;
    load_std_tables(j);
    int rc = parse_markers(j, limits);
    if (rc == 0) rc = jpeg_output(j, img, limits);
    for (int i = 0; i < MAX_COMPONENTS; i++) {
        free(j->comp[i].coef);
        free(j->comp[i].plane);
    }
    free(j);
    return rc;
}
