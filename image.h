/* image.h — image file decoding, written from scratch: netpbm (PPM/PGM/PBM), PNG (with its own
 * inflate) and JPEG (baseline, extended sequential and progressive). The output is always 8-bit
 * RGB, which is what the engine's preprocessing (tile.c) takes.
 *
 * What the engine sees is meant to be what the reference preprocessing sees. The reference
 * (LLaVA-style Python) does `Image.open(f).convert('RGB')` with Pillow, so each decoder matches
 * Pillow's pixels wherever that is sensible; the few deliberate differences are listed here.
 *
 * Alpha. Dropped, never composited: Pillow's RGBA->RGB, LA->RGB and P(with tRNS)->RGB conversions
 *   discard the alpha channel and keep the colour values as stored (a fully transparent pixel keeps
 *   whatever colour the file has under it). PNG tRNS and alpha samples are therefore parsed but not
 *   used; a palette image uses its palette RGB.
 * 16-bit samples (PNG depth 16, netpbm maxval > 255). PNG RGB, RGBA and gray+alpha take the high
 *   byte (v >> 8), exactly as Pillow does. For 16-bit *grayscale* PNG and PGM, Pillow opens the image
 *   as mode "I;16"/"I" and convert('RGB') then clamps every value above 255 to 255, turning almost
 *   the whole image white; we deliberately do not reproduce that and use v >> 8 (PNG) and the netpbm
 *   scaling below (PGM) instead, consistent with the colour types.
 * netpbm scaling. A sample v with maxval m becomes round(v / m * 255) computed in double and rounded
 *   half to even (Python's round(), which is what Pillow's netpbm decoder uses), so it matches Pillow
 *   bit for bit for P2/P3/P5/P6 of every maxval except 16-bit PGM (above). Binary samples above
 *   maxval are clamped to 255 (as Pillow does); ASCII ones are an error (as in Pillow).
 * Palette indices beyond the PLTE entries (PNG) decode as black, as Pillow does.
 * JPEG. Matches libjpeg-turbo (which Pillow uses) with its default settings: the accurate integer
 *   IDCT ("islow"), "fancy" triangular chroma upsampling for 2:1 ratios (box replication for other
 *   integer ratios, as libjpeg does), and libjpeg's 16-bit fixed-point YCbCr->RGB. Adobe APP14 and
 *   the component ids pick YCbCr/RGB/CMYK/YCCK as libjpeg does. CMYK and YCCK are decoded and
 *   converted to RGB with Pillow's formula: with ink amounts C, K (255 minus the Adobe-inverted
 *   samples), R = (255 - K) - C (255 - K) / 255, the division rounded as Pillow's MULDIV255.
 *   Known differences from Pillow: (1) a progressive file whose scan script stops before every
 *   coefficient is complete (hand-made or damaged files; encoders send complete scripts, and a
 *   truncated download fails for lack of EOI) is decoded from the coefficients received, while
 *   libjpeg also "block-smooths" it (estimates missing low-frequency coefficients from neighbouring
 *   DC values), so such files differ; (2) corrupt entropy-coded data (a code not in the Huffman
 *   table) is an error, where libjpeg substitutes zeros and carries on. Data that ends early at a
 *   marker reads as zeros, as in libjpeg. Arithmetic coding (SOF9-15), lossless (SOF3),
 *   hierarchical (SOF5-7), 12-bit precision, DNL and 2-component images give an "unsupported"
 *   error. Limits beyond the size: a progressive coefficient may be coded by at most the 14 scans
 *   a legal progression uses, and a sequential component by one scan.
 * EXIF orientation. Applied (all 8 orientations), from the first APP1 "Exif" segment of a JPEG and
 *   from a PNG eXIf chunk. Pillow's Image.open does not rotate; the reference only matches when it
 *   calls ImageOps.exif_transpose. We rotate on purpose: the engine should see the image upright,
 *   as a person viewing the photo does.
 *
 * Memory. Besides the RGB output (3 bytes a pixel), PNG holds the compressed and the inflated data
 * (about 1-8 bytes a pixel); JPEG holds every quantized coefficient (2 bytes a sample, so 3-6 bytes a
 * pixel for YCbCr) and one sample plane per component. The limits bound all of it.
 *
 * Safety. Every decoder treats the file as hostile: the declared size is checked against the
 * limits before any pixel buffer is allocated, allocation sizes are overflow-checked, every read is
 * bounds-checked, nothing recurses, every loop is bounded by the input or output size, and any
 * inconsistency is an error whose message starts with the file name. Errors are reported through
 * BlvError (util.h); nothing prints or aborts. */
#ifndef BLUELMV_IMAGE_H
#define BLUELMV_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct {
    int32_t width, height;
    uint8_t *rgb; /* [height][width][3], row-major, 8-bit R,G,B */
} Image;

/* Decoding limits, checked against the header before allocating. Zero or negative fields mean the
 * default. Passing NULL means all defaults. */
typedef struct {
    int64_t max_pixels; /* width*height, default IMAGE_DEFAULT_MAX_PIXELS */
    int32_t max_side;   /* width and height, default IMAGE_DEFAULT_MAX_SIDE */
} ImageLimits;

#define IMAGE_DEFAULT_MAX_PIXELS ((int64_t)100 * 1000 * 1000)
#define IMAGE_DEFAULT_MAX_SIDE 65535

/* Reads and decodes the file at `path`; the format is detected from its first bytes, not its name.
 * On success img owns a malloc'd buffer (free it with image_free); on failure img is zeroed. */
int image_load(Image *img, const char *path, const ImageLimits *limits, BlvError *err);

/* Decodes an image held in memory. `name` is used in error messages (NULL: "<memory>"). */
int image_decode_memory(Image *img, const uint8_t *data, size_t size, const char *name,
                        const ImageLimits *limits, BlvError *err);

void image_free(Image *img);

/* Writes a binary PPM (P6, maxval 255). */
int image_write_ppm(const Image *img, const char *path, BlvError *err);

/* ---- the pieces, for the decoders and the tests ------------------------------------------------ */

/* Format-specific decoders (image_decode_memory picks one by magic bytes). `name` is not NULL. */
int image_decode_netpbm(Image *img, const uint8_t *data, size_t size, const char *name,
                        const ImageLimits *limits, BlvError *err);
int image_decode_png(Image *img, const uint8_t *data, size_t size, const char *name,
                     const ImageLimits *limits, BlvError *err);
int image_decode_jpeg(Image *img, const uint8_t *data, size_t size, const char *name,
                      const ImageLimits *limits, BlvError *err);

/* Checks width x height against the limits (error names the size and the limit), then allocates
 * img->rgb (uninitialized) and sets the size. */
int image_alloc(Image *img, int64_t width, int64_t height, const char *name,
                const ImageLimits *limits, BlvError *err);
/* Only the check. */
int image_check_size(int64_t width, int64_t height, const char *name, const ImageLimits *limits,
                     BlvError *err);

/* A zlib stream (RFC 1950) inflated (RFC 1951) into exactly out_size bytes: it is an error if the
 * stream holds more or less data, if the Adler-32 does not match, or if anything follows the stream.
 * `what` names the data in messages (e.g. "foo.png: IDAT"). */
int image_zlib_decompress(const uint8_t *src, size_t src_size, uint8_t *out, size_t out_size,
                          const char *what, BlvError *err);

uint32_t image_crc32(const uint8_t *data, size_t n);    /* PNG/zlib CRC-32 (ISO 3309) */
uint32_t image_adler32(const uint8_t *data, size_t n);  /* RFC 1950 §8.2 */

/* The EXIF orientation (1..8) in a TIFF-structured EXIF block (what follows "Exif\0\0" in a JPEG
 * APP1, or a PNG eXIf chunk), or 0 if absent or malformed. Only IFD0 is read. */
int image_exif_orientation(const uint8_t *tiff, size_t size);

/* Transforms img in place so that an image stored with EXIF `orientation` is upright (the same as
 * Pillow's ImageOps.exif_transpose). 1 and unknown values leave it unchanged. */
int image_apply_orientation(Image *img, int orientation, BlvError *err);

#endif
