/* main.c — the `bluelmv` command line.
 *
 *   bluelmv generate  -m MODEL.gguf [-p PROMPT] [-n N] [sampling] [-t THREADS] [--chunk C] [--kv TYPE]
 *   bluelmv tokenize  -m MODEL.gguf [--no-bos] (--file F | TEXT)
 *   bluelmv convert   llama2c CHECKPOINT TOKENIZER -o OUT.gguf [--type f32|f16|bf16|q8_0|q4_0]
 *   bluelmv gen       --preset NAME --llm-only -o OUT.gguf [--type TYPE] [--seed S]
 *   bluelmv bench     -m MODEL.gguf [-t THREADS] [...]
 *
 * stdout carries only results (generated text, token ids); progress, timings and errors go to
 * stderr. Errors print `bluelmv: error: ...` and exit 1; usage errors exit 2. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bluelmv.h"
#include "convert.h"
#include "convert_hf.h"
#include "dump.h"
#include "image.h"
#include "ops.h"
#include "quant.h"
#include "tile.h"
#include "vit.h"

static const char *main_usage =
    "usage: bluelmv COMMAND [options]\n"
    "\n"
    "BlueLM-V-3B inference in plain C (language side: llama-architecture GGUF models).\n"
    "\n"
    "commands:\n"
    "  run        answer a question about images (like llama-mtmd-cli)\n"
    "  chat       interactive multi-turn chat, with /image to add images\n"
    "  generate   plain text completion from a prompt (like llama-cli)\n"
    "  encode     run the vision path only, with per-stage times and dumps\n"
    "  compare    compare two dump directories tensor by tensor\n"
    "  tokenize   print the token ids of a text\n"
    "  convert    convert a llama2.c checkpoint to GGUF\n"
    "  gen        write a random-weight model of a preset shape (for benchmarks and tests)\n"
    "  bench      measure decode and prefill speed against this machine's limits\n"
    "  tiles      show how an image is sliced (grid, tiles, thumbnail, image tokens)\n"
    "  decode     decode an image file to PPM (the pixels the engine sees)\n"
    "\n"
    "`bluelmv COMMAND --help` documents each command's options.\n"
    "\n"
    "environment:\n"
    "  BLUELMV_KERNELS=NAME  run with that family of kernels instead of the fastest this CPU has:\n"
    "                        ref (the scalar reference, which defines the numbers), avx2, avx512, neon\n";

/* Options shared by generate, run and chat, documented once. */
static const char *sampling_help =
    "  -n, --n-predict N    tokens to generate (default 128)\n"
    "      --temp T         temperature; 0 = greedy (default 0.8)\n"
    "      --top-k K        keep the K most likely tokens; 0 = off (default 40)\n"
    "      --top-p P        nucleus sampling threshold; 1 = off (default 0.95)\n"
    "      --seed S         sampler seed (default: from the clock)\n"
    "  -t, --threads N      threads (default 1)\n"
    "  -c, --ctx-size N     KV cache length (default: the model's context length)\n"
    "      --chunk C        prefill chunk size in tokens (default 128)\n"
    "      --kv TYPE        KV cache type: f32, f16 or q8_0 (default f16; q8_0 is the paper's INT8 cache)\n"
    "      --no-mmap        read the model files into memory instead of mapping them\n"
    "      --no-repack      keep Q4_0 weights in the file's layout (default: with AVX-512 or AVX2,\n"
    "                       repacked by 16 rows before the first forward pass, for the fast kernels)\n";

static const char *vision_help =
    "      --mmproj FILE    vision model GGUF (ViT + downsampler + projector)\n"
    "      --image FILE     an image (PNG, JPEG, PPM); repeat for several (their tokens concatenate)\n"
    "      --vit-batch B    tiles per ViT batch (default 4: a 2:4 image runs 4 + 4 + 1)\n"
    "      --no-pipeline    run each batch's patch embedding before its blocks instead of overlapping\n"
    "                       it with the previous batch's blocks on its own thread\n"
    "      --keep-vit       keep the ViT weights mapped after encoding (default: released before the\n"
    "                       LLM runs)\n";

static const char *generate_usage =
    "usage: bluelmv generate -m MODEL.gguf [-p PROMPT | -f FILE] [options]\n"
    "\n"
    "Plain completion: evaluates BOS and the prompt as it is (no chat template), then samples up to\n"
    "N tokens, streaming the text to stdout (the prompt is not echoed; a newline ends the output).\n"
    "Speed figures go to stderr.\n"
    "\n"
    "  -m, --model FILE     language model GGUF (llama architecture)\n"
    "  -p, --prompt TEXT    prompt (default: empty, i.e. start from BOS)\n"
    "  -f, --file FILE      read the prompt from a file\n"
    "      --dump DIR       write every stage (tokens, llm_block_K, logits) as .npy into DIR\n";

static const char *run_usage =
    "usage: bluelmv run -m MODEL.gguf [--mmproj MMPROJ.gguf --image IMG ...] -p PROMPT [options]\n"
    "\n"
    "One question about zero or more images, answered on stdout (streamed). The images are encoded on\n"
    "a background thread as soon as the command starts; the prompt is built from the chat template\n"
    "(bluelmv.chat_template, default \"[|Human|]:<im_start><image><im_end>{query}\\n[|AI|]:\") with the\n"
    "image tokens at <image>. A one-line summary goes to stderr.\n"
    "\n"
    "  -m, --model FILE     language model GGUF\n"
    "  -p, --prompt TEXT    the question (required, not empty)\n"
    "  -f, --file FILE      read the question from a file\n"
    "      --dump DIR       write every stage (pixels ... image_embeds, tokens, llm_block_K, logits) as .npy\n";

static const char *chat_usage =
    "usage: bluelmv chat -m MODEL.gguf [--mmproj MMPROJ.gguf] [--image IMG ...] [options]\n"
    "\n"
    "Interactive, multi-turn chat: each line read from stdin is a question; the answers stream to\n"
    "stdout and the conversation (KV cache) is kept between turns. Images given with --image start\n"
    "encoding at once, while you type; they go with the next question. Commands:\n"
    "  /image PATH          add an image to the next question (starts encoding in the background)\n"
    "  /reset               start a new conversation\n"
    "  /quit                leave (as does end of input)\n"
    "Works with a pipe: prompts are shown only when stdin is a terminal.\n"
    "\n"
    "  -m, --model FILE     language model GGUF\n";

static const char *encode_usage =
    "usage: bluelmv encode --mmproj MMPROJ.gguf --image FILE [--dump DIR] [-t THREADS] [--vit-batch B]\n"
    "                      [--no-pipeline] [-m MODEL.gguf]\n"
    "\n"
    "Runs the vision path only (decode, tile, ViT, downsampler, projector) and reports per-stage times\n"
    "on stderr. --dump writes pixels, patch_embed, vit_block_K, vit_out, merged and image_embeds.\n"
    "\n"
    "      --mmproj FILE    vision model GGUF\n"
    "      --image FILE     the image\n"
    "      --dump DIR       write the stage tensors as .npy into DIR\n"
    "  -t, --threads N      threads (default 1)\n"
    "      --vit-batch B    tiles per ViT batch (default 4)\n"
    "      --no-pipeline    no patch-embedding / blocks overlap\n"
    "  -m, --model FILE     optional: check the projector width against this language model\n";

static const char *compare_usage =
    "usage: bluelmv compare DIR_A DIR_B [--tol-nmse X] [--tol-top1 F] [--tol-max-abs X]\n"
    "\n"
    "Compares two dump directories (A = the run under test, B = the reference), tensor by tensor:\n"
    "max abs error, max rel error (|a-b| / max(|b|, 1e-4)), NMSE (sum (a-b)^2 / sum b^2), cosine, and\n"
    "for logits the top-1 agreement. Exits 1 if any tensor fails.\n"
    "\n"
    "      --tol-nmse X     fail a tensor whose NMSE exceeds X (default 1e-6)\n"
    "      --tol-top1 F     fail logits whose top-1 agreement is below F (default 1.0)\n"
    "      --tol-max-abs X  also fail a tensor whose max abs error exceeds X (default off)\n";

static const char *tokenize_usage =
    "usage: bluelmv tokenize -m MODEL.gguf [--no-bos] (--file F | TEXT)\n"
    "\n"
    "Prints the token ids of TEXT (or of the file's contents), space-separated, on one line.\n"
    "Special-token texts (e.g. <s>) are recognized. The model file may be vocabulary-only.\n"
    "\n"
    "  -m, --model FILE     GGUF file with tokenizer.ggml.* arrays\n"
    "      --no-bos         do not add the BOS token\n"
    "  -f, --file FILE      tokenize this file's contents\n";

static const char *convert_usage =
    "usage: bluelmv convert llama2c CHECKPOINT TOKENIZER -o OUT.gguf [--type TYPE]\n"
    "       bluelmv convert hf DIR -o OUT.gguf [--type TYPE] [--vocab-only]\n"
    "       bluelmv convert hf-vision DIR [--projector FILE] -o MMPROJ.gguf [--type TYPE] [--all-layers [--post-ln]]\n"
    "\n"
    "llama2c: a llama2.c checkpoint (legacy or version-1 export, shared or separate classifier) and a\n"
    "llama2.c tokenizer.bin become a llama-architecture GGUF that llama.cpp can also load.\n"
    "hf: a Hugging Face LlamaForCausalLM or BlueLMForCausalLM directory (config.json, safetensors\n"
    "F32/F16/BF16 single or sharded, tokenizer.model + tokenizer_config.json) becomes a llama GGUF\n"
    "(Q/K rows in llama.cpp's rotary layout; BlueLM's embedding LayerNorm as token_embd_norm).\n"
    "hf-vision: a Hugging Face SiglipVisionModel directory (config.json + safetensors, F32/F16/BF16,\n"
    "sharded or not) and optionally a VILA mlp_downsample projector (safetensors) become the vision\n"
    "GGUF (mmproj). By default the last ViT layer is dropped (select-layer -2) and no post-LN is used.\n"
    "\n"
    "  -o, --output FILE    the GGUF file to write\n"
    "      --type TYPE      weight matrices as f32 (default), f16, bf16 (llama2c only), q8_0 or q4_0;\n"
    "                       norms and biases stay f32. llama2c: a matrix whose rows are not a multiple\n"
    "                       of 32 is stored as f16 when a quantized type is asked for; hf-vision: such\n"
    "                       rows are zero-padded to a multiple of 32 (exact, see vit.h)\n"
    "      --projector FILE hf-vision: the projector safetensors (file or mm_projector directory)\n"
    "      --all-layers     hf-vision: keep every ViT layer\n"
    "      --post-ln        hf-vision: with --all-layers, apply the post-LayerNorm\n"
    "      --vocab-only     hf: write only the tokenizer (a vocabulary GGUF for `bluelmv tokenize`)\n";

static const char *gen_usage =
    "usage: bluelmv gen --preset NAME -o PREFIX [--type TYPE] [--vision-type TYPE] [--seed S]\n"
    "       bluelmv gen --preset NAME --llm-only -o OUT.gguf [--type TYPE] [--seed S]\n"
    "\n"
    "Writes a model with RANDOM weights (untrained: its output is noise) in a preset's shape:\n"
    "PREFIX-llm.gguf (language model) and PREFIX-mmproj.gguf (ViT + downsampler + projector).\n"
    "Presets: tiny (DESIGN.md's test shapes); bluelm-v-3b (an ILLUSTRATIVE 2.7B + 400M shape:\n"
    "BlueLM-3B's real configuration is unpublished; for speed and memory measurements only).\n"
    "The vocabulary is a placeholder: <unk> <s> </s>, byte tokens, filler pieces, and the chat\n"
    "template's [|Human|]: [|AI|]: <im_start> <im_end> as its last four tokens.\n"
    "\n"
    "  --preset NAME        tiny or bluelm-v-3b\n"
    "  -o, --output PREFIX  output prefix (with --llm-only: the file)\n"
    "  --llm-only           write only the language model\n"
    "  --type TYPE          language model matrices: f32, f16, bf16, q8_0 or q4_0 (default q4_0: the paper's INT4)\n"
    "  --vision-type TYPE   vision matrices: f32, f16, q8_0 or q4_0 (default q8_0: the paper's INT8)\n"
    "  --seed S             random seed (default 1)\n";

static const char *bench_usage =
    "usage: bluelmv bench -m MODEL.gguf [-t THREADS] [--reps N] [--prompt-tokens N] [--kv TYPE]\n"
    "       bluelmv bench -m MODEL.gguf --mmproj MMPROJ.gguf [--size WxH | --image IMG] [--prompt-tokens N]\n"
    "\n"
    "Language model only: measures, in one run, the machine's read bandwidth and int8 dot-product\n"
    "peak (built-in probes; also the threads' round trip, which shows how far apart the cores are),\n"
    "decode speed (tg: one token at a time) and prefill speed at N prompt\n"
    "tokens (pp, default 128), each as a fraction of its limit, and peak RSS. Medians over --reps.\n"
    "With --mmproj: the paper's Table 5 — model load, image encode (patch embedding, ViT per batch,\n"
    "overlap), prefill of the whole input padded to --prompt-tokens (use 2048), decode tok/s, time to\n"
    "first token, peak RSS with decoupled encoding — then the chunk sweep of Fig. 8 (t32, t128, t512,\n"
    "whole) and the ViT batch sweep of Fig. 7 (1, 2, 4, 6). Default image: a synthetic 768x1536.\n"
    "\n"
    "      --mmproj FILE    vision model: run the multimodal benchmark\n"
    "      --size WxH       synthetic image size (default 768x1536: grid 2:4, 9 ViT inputs)\n"
    "      --image FILE     a real image instead\n"
    "      --no-sweeps      skip the chunk and ViT-batch sweeps\n"
    "  -m, --model FILE     language model GGUF\n"
    "  -t, --threads N      threads (default 2)\n"
    "      --reps N         repetitions per measurement (default 5)\n"
    "      --prompt-tokens N  prefill length (default 128)\n"
    "      --tg-tokens N    decoded tokens per repetition (default 32)\n"
    "  -d, --depth N        tokens already in the context when decode is timed (default 0)\n"
    "      --kv TYPE        KV cache type (default f16)\n"
    "      --no-repack      keep Q4_0 weights in the file's layout (default: repacked for AVX-512/AVX2)\n"
    "      --profile        one more decode repetition and one more prefill, each step of the forward\n"
    "                       pass timed: the decode's against the bytes it reads (GB/s and share of\n"
    "                       the probe; the attention also against its arithmetic alone, timed with\n"
    "                       its rows in cache, and the bound that sets, and alone over the cache\n"
    "                       with nothing between its layers), the prefill's against its\n"
    "                       operations (GOP/s, share of int8 peak); with several threads also how\n"
    "                       long each waited for the others at the decode's barriers\n"
    "      --json           print the results as one JSON object on stdout\n";

static const char *tiles_usage =
    "usage: bluelmv tiles (--image FILE | --size WxH) [--algo relaxed|llava-next|internvl] [--max-grid N]\n"
    "                     [--tile-size S] [--max-num N]\n"
    "\n"
    "Prints one line: grid=M:N tiles=K thumbnail=0|1 image_tokens=T (M is the width multiplier).\n"
    "The plan depends only on the image size; --image reads just enough of the file to decode it.\n"
    "\n"
    "      --image FILE     an image (PNG, JPEG, PPM/PGM/PBM)\n"
    "      --size WxH       an image size instead of a file\n"
    "      --algo A         relaxed (BlueLM-V-3B, default), llava-next or internvl\n"
    "      --max-grid N     candidate grids m,n in 1..N (relaxed, llava-next; default 4)\n"
    "      --max-num N      InternVL's largest tile count (default 9)\n"
    "      --tile-size S    tile side in pixels (default 384)\n"
    "      --tokens-per-tile N  image tokens per tile (default 196)\n";

static const char *decode_usage =
    "usage: bluelmv decode IMAGE -o OUT.ppm\n"
    "\n"
    "Decodes IMAGE (PNG, JPEG, PPM/PGM/PBM) to 8-bit RGB and writes it as a binary PPM: the pixels\n"
    "the engine sees (alpha dropped, EXIF orientation applied; see image.h).\n"
    "\n"
    "  -o, --output FILE    the PPM file to write\n";

/* ---- argument helpers ------------------------------------------------------------------------- */

static int usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bluelmv: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see `bluelmv %s --help`)\n", cmd);
    va_end(ap);
    return 2;
}

static int fail(const BlvError *err) {
    fprintf(stderr, "bluelmv: error: %s\n", err->msg);
    return 1;
}

static int is_help(const char *a) { return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0; }

static int matches(const char *arg, const char *short_name, const char *long_name) {
    return (short_name && strcmp(arg, short_name) == 0) || strcmp(arg, long_name) == 0;
}

/* The value after flag argv[*i]; NULL (and a message) if it is missing. */
static const char *take_value(int argc, char **argv, int *i, const char *cmd) {
    if (*i + 1 >= argc) {
        usage_error(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* Parses flag value `s` as an integer in [lo, hi] into *out; prints a usage error otherwise. */
static int int_option(const char *cmd, const char *flag, const char *s, long long lo, long long hi, long long *out) {
    if (!s) return -1;
    if (parse_int(s, lo, hi, out) != 0) {
        usage_error(cmd, "%s expects an integer in %lld..%lld, got '%s'", flag, lo, hi, s);
        return -1;
    }
    return 0;
}

static int float_option(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out) {
    if (!s) return -1;
    if (parse_float(s, lo, hi, out) != 0) {
        usage_error(cmd, "%s expects a number in %g..%g, got '%s'", flag, lo, hi, s);
        return -1;
    }
    return 0;
}

static int kv_option(const char *cmd, const char *s, int *out) {
    if (!s) return -1;
    int t = type_from_name(s);
    if (t != TYPE_F32 && t != TYPE_F16 && t != TYPE_Q8_0) {
        usage_error(cmd, "--kv expects f32, f16 or q8_0, got '%s'", s);
        return -1;
    }
    *out = t;
    return 0;
}

static int weight_type_option(const char *cmd, const char *s, int *out) {
    if (!s) return -1;
    int t = type_from_name(s);
    if (t != TYPE_F32 && t != TYPE_F16 && t != TYPE_BF16 && t != TYPE_Q8_0 && t != TYPE_Q4_0) {
        usage_error(cmd, "--type expects f32, f16, bf16, q8_0 or q4_0, got '%s'", s);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---- generate --------------------------------------------------------------------------------- */

static void print_text(const char *text, size_t len, void *user) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

typedef struct {
    BluelmvParams params;
    BluelmvSampler sampler;
    const char *prompt, *prompt_file, *dump_dir;
    const char *images[16];
    int n_images;
    long long n_predict;
    int seed_given, prompt_given;
} GenOptions;

/* Parses the options of generate / run / chat (vision flags only when `vision`). Returns 0, or the
 * exit status to return (0 after --help, 2 on a usage error) with *done set. */
static int parse_gen_options(const char *cmd, const char *usage, int vision, int dump, int argc, char **argv,
                             GenOptions *o, int *done) {
    long long v;
    double d;
    *done = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(usage, stdout);
            fputs(sampling_help, stdout);
            if (vision) fputs(vision_help, stdout);
            return 0;
        } else if (matches(a, "-m", "--model")) {
            if (!(o->params.model_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-p", "--prompt")) {
            if (!(o->prompt = take_value(argc, argv, &i, cmd))) return 2;
            o->prompt_given = 1;
        } else if (matches(a, "-f", "--file")) {
            if (!(o->prompt_file = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-n", "--n-predict")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, INT_MAX, &o->n_predict)) return 2;
        } else if (matches(a, NULL, "--temp")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 100, &d)) return 2;
            o->sampler.temperature = (float)d;
        } else if (matches(a, NULL, "--top-k")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, INT_MAX, &v)) return 2;
            o->sampler.top_k = (int)v;
        } else if (matches(a, NULL, "--top-p")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 1, &d)) return 2;
            o->sampler.top_p = (float)d;
        } else if (matches(a, NULL, "--seed")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, LLONG_MAX, &v)) return 2;
            o->sampler.seed = (uint64_t)v;
            o->seed_given = 1;
        } else if (matches(a, "-t", "--threads")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 256, &v)) return 2;
            o->params.n_threads = (int)v;
        } else if (matches(a, "-c", "--ctx-size")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, INT_MAX, &v)) return 2;
            o->params.n_ctx = v;
        } else if (matches(a, NULL, "--chunk")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, INT_MAX, &v)) return 2;
            o->params.chunk = v;
        } else if (matches(a, NULL, "--kv")) {
            if (kv_option(cmd, take_value(argc, argv, &i, cmd), &o->params.kv_type)) return 2;
        } else if (matches(a, NULL, "--no-mmap")) {
            o->params.use_mmap = 0;
        } else if (matches(a, NULL, "--no-repack")) {
            o->params.no_repack = 1;
        } else if (dump && matches(a, NULL, "--dump")) {
            if (!(o->dump_dir = take_value(argc, argv, &i, cmd))) return 2;
        } else if (vision && matches(a, NULL, "--mmproj")) {
            if (!(o->params.mmproj_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (vision && matches(a, NULL, "--image")) {
            const char *img = take_value(argc, argv, &i, cmd);
            if (!img) return 2;
            if (o->n_images == (int)(sizeof o->images / sizeof o->images[0]))
                return usage_error(cmd, "at most %d images", (int)(sizeof o->images / sizeof o->images[0]));
            o->images[o->n_images++] = img;
        } else if (vision && matches(a, NULL, "--vit-batch")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 64, &v)) return 2;
            o->params.vit_batch = (int)v;
        } else if (vision && matches(a, NULL, "--no-pipeline")) {
            o->params.pipeline = 0;
        } else if (vision && matches(a, NULL, "--keep-vit")) {
            o->params.keep_vit = 1;
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!o->params.model_path) return usage_error(cmd, "no model given (-m MODEL.gguf)");
    if (o->n_images && !o->params.mmproj_path) return usage_error(cmd, "--image needs a vision model (--mmproj MMPROJ.gguf)");
    if (o->prompt_file && o->prompt_given) return usage_error(cmd, "give either -p or -f, not both");
    if (!o->seed_given) o->sampler.seed = (uint64_t)time(NULL);
    *done = 0;
    return 0;
}

static void gen_options_init(GenOptions *o) {
    memset(o, 0, sizeof *o);
    o->params = bluelmv_default_params();
    o->sampler = bluelmv_default_sampler();
    o->prompt = "";
    o->n_predict = 128;
}

/* The prompt of -p or -f (malloc'd into *owned when read from a file). */
static int read_prompt(GenOptions *o, char **owned, BlvError *err) {
    *owned = NULL;
    if (!o->prompt_file) return 0;
    size_t len;
    if (blv_read_file(o->prompt_file, owned, &len, err) != 0) return -1;
    if (strlen(*owned) != len) {
        free(*owned);
        *owned = NULL;
        return blv_fail(err, "%s: the prompt file contains a NUL byte", o->prompt_file);
    }
    o->prompt = *owned;
    o->prompt_given = 1;
    return 0;
}

static double per_second(double n, double s) { return s > 0 ? n / s : 0.0; }

static void print_speed(const BluelmvStats *st) {
    fprintf(stderr, "prompt: %lld tokens in %.3f s (%.1f tok/s); generated: %lld tokens in %.3f s (%.1f tok/s)%s\n",
            (long long)st->n_prompt, st->prefill_seconds, per_second((double)st->n_prompt, st->prefill_seconds),
            (long long)st->n_generated, st->decode_seconds,
            st->n_generated > 1 ? per_second((double)(st->n_generated - 1), st->decode_seconds) : 0.0,
            st->stopped_at_eos ? "; stopped at end of text" : st->stopped_at_context ? "; stopped: context full" : "");
}

static int cmd_generate(int argc, char **argv) {
    GenOptions o;
    gen_options_init(&o);
    int done, rc = parse_gen_options("generate", generate_usage, 0, 1, argc, argv, &o, &done);
    if (done) return rc;
    BlvError err;
    char *owned;
    if (read_prompt(&o, &owned, &err) != 0) return fail(&err);
    Bluelmv *b = bluelmv_load(&o.params, &err);
    if (!b) {
        free(owned);
        return fail(&err);
    }
    BluelmvStats st;
    rc = o.dump_dir ? bluelmv_set_dump_dir(b, o.dump_dir, &err) : 0;
    if (rc == 0) rc = bluelmv_generate(b, o.prompt, o.n_predict, &o.sampler, print_text, NULL, &st, &err);
    free(owned);
    if (rc != 0) {
        bluelmv_free(b);
        return fail(&err);
    }
    fputs("\n", stdout);
    fflush(stdout);
    print_speed(&st);
    bluelmv_free(b);
    return 0;
}

static void print_image_summary(const BluelmvImage *img) {
    fprintf(stderr, "%s: %dx%d, grid %d:%d, %d tiles%s, %lld image tokens; decode %.3f s, tiles %.3f s, encode %.3f s "
            "(%d batches: patch embedding %.3f s of which %.3f s overlapped, blocks %.3f s, projector %.3f s)\n",
            img->path, img->width, img->height, img->grid_w, img->grid_h, img->n_tiles,
            img->has_thumbnail ? " + thumbnail" : "", (long long)img->n_tokens, img->decode_s, img->preprocess_s,
            img->encode_s, img->n_batches, img->conv_s, img->conv_hidden_s, img->blocks_s, img->project_s);
}

static int cmd_run(int argc, char **argv) {
    GenOptions o;
    gen_options_init(&o);
    int done, rc = parse_gen_options("run", run_usage, 1, 1, argc, argv, &o, &done);
    if (done) return rc;
    BlvError err;
    char *owned;
    if (read_prompt(&o, &owned, &err) != 0) return fail(&err);
    if (!o.prompt_given || !o.prompt[0]) {
        free(owned);
        return usage_error("run", "the prompt is empty: give the question with -p TEXT or -f FILE");
    }
    double t0 = blv_now();
    Bluelmv *b = bluelmv_load(&o.params, &err);
    if (!b) {
        free(owned);
        return fail(&err);
    }
    double t_load = blv_now() - t0;
    rc = o.dump_dir ? bluelmv_set_dump_dir(b, o.dump_dir, &err) : 0;
    BluelmvImage **images = NULL;
    if (rc == 0 && o.n_images) {
        /* decoupled: encoding starts at once on its own thread; here the prompt is already known, so we
         * simply wait (`chat` reads the prompt meanwhile) */
        BluelmvEncodeJob *job = bluelmv_encode_start(b, o.images, o.n_images, &err);
        rc = job ? bluelmv_encode_finish(job, &images, &err) : -1;
    }
    BluelmvStats st = {0};
    if (rc == 0) rc = bluelmv_chat(b, o.prompt, images, o.n_images, o.n_predict, &o.sampler, print_text, NULL, &st, &err);
    free(owned);
    if (rc == 0) {
        fputs("\n", stdout);
        fflush(stdout);
        double encode_s = 0;
        for (int i = 0; i < o.n_images; i++) {
            print_image_summary(images[i]);
            encode_s += images[i]->decode_s + images[i]->preprocess_s + images[i]->encode_s;
        }
        fprintf(stderr, "load %.3f s; images %d (%lld tokens), encode %.3f s; ", t_load, o.n_images,
                (long long)st.n_image_tokens, encode_s);
        print_speed(&st);
        fprintf(stderr, "time to first token %.3f s after the prompt; peak RSS %.3f GB\n", st.first_token_seconds,
                (double)blv_peak_rss_bytes() / 1e9);
    }
    for (int i = 0; images && i < o.n_images; i++) bluelmv_image_free(images[i]);
    free(images);
    bluelmv_free(b);
    return rc == 0 ? 0 : fail(&err);
}

/* Reads one line from stdin into a growing buffer; returns its length, or -1 at end of input. */
static long read_line(char **buf, size_t *cap) {
    size_t n = 0;
    int c;
    while ((c = getchar()) != EOF && c != '\n') {
        if (n + 2 > *cap) {
            size_t nc = *cap ? *cap * 2 : 256;
            char *nb = realloc(*buf, nc);
            if (!nb) return -1;
            *buf = nb;
            *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    if (c == EOF && n == 0) return -1;
    if (!*buf) {
        *buf = malloc(1);
        if (!*buf) return -1;
        *cap = 1;
    }
    (*buf)[n] = 0;
    if (n && (*buf)[n - 1] == '\r') (*buf)[--n] = 0;
    return (long)n;
}

/* Collects finished background encodings (in the order they were started). */
static int collect_images(BluelmvEncodeJob **jobs, int n_jobs, BluelmvImage **out, double t_start, double t_prompt,
                          BlvError *err) {
    int rc = 0;
    for (int i = 0; i < n_jobs; i++) {
        BluelmvImage **one = NULL;
        if (bluelmv_encode_finish(jobs[i], &one, err) != 0) {
            rc = -1;
            out[i] = NULL;
            continue;
        }
        out[i] = one[0];
        free(one);
        print_image_summary(out[i]);
        fprintf(stderr, "%s: encoded %.3f s after start; the question arrived %.3f s after start (%s)\n", out[i]->path,
                out[i]->finished_at - t_start, t_prompt - t_start,
                t_prompt >= out[i]->finished_at ? "encoding was already done" : "waited for the encoding");
    }
    return rc;
}

static int cmd_chat(int argc, char **argv) {
    GenOptions o;
    gen_options_init(&o);
    int done, rc = parse_gen_options("chat", chat_usage, 1, 0, argc, argv, &o, &done);
    if (done) return rc;
    if (o.prompt_given || o.prompt_file) return usage_error("chat", "chat reads its questions from stdin (no -p/-f)");
    BlvError err;
    double t_start = blv_now();
    Bluelmv *b = bluelmv_load(&o.params, &err);
    if (!b) return fail(&err);
    int interactive = isatty(0);
    enum { MAX_JOBS = 16 };
    BluelmvEncodeJob *jobs[MAX_JOBS];
    int n_jobs = 0;
    /* images given on the command line start encoding now, while the first question is typed */
    for (int i = 0; i < o.n_images; i++) {
        if (!(jobs[n_jobs] = bluelmv_encode_start(b, &o.images[i], 1, &err))) {
            for (int k = 0; k < n_jobs; k++) {
                BluelmvImage *img;
                collect_images(&jobs[k], 1, &img, t_start, blv_now(), &err);
                bluelmv_image_free(img);
            }
            bluelmv_free(b);
            return fail(&err);
        }
        n_jobs++;
        fprintf(stderr, "encoding %s in the background\n", o.images[i]);
    }
    char *line = NULL;
    size_t cap = 0;
    rc = 0;
    for (;;) {
        if (interactive) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        long n = read_line(&line, &cap);
        if (n < 0) break;
        if (n == 0) continue;
        if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            bluelmv_chat_reset(b);
            fprintf(stderr, "(new conversation)\n");
            continue;
        }
        if (strncmp(line, "/image ", 7) == 0) {
            const char *path = line + 7;
            if (n_jobs == MAX_JOBS) {
                fprintf(stderr, "bluelmv: error: at most %d images per question\n", MAX_JOBS);
            } else if (!(jobs[n_jobs] = bluelmv_encode_start(b, &path, 1, &err))) {
                fprintf(stderr, "bluelmv: error: %s\n", err.msg);
            } else {
                n_jobs++;
                fprintf(stderr, "encoding %s in the background\n", path);
            }
            continue;
        }
        double t_prompt = blv_now();
        BluelmvImage *imgs[MAX_JOBS];
        int n_imgs = n_jobs;
        int enc = collect_images(jobs, n_jobs, imgs, t_start, t_prompt, &err);
        n_jobs = 0;
        if (n_imgs)
            fprintf(stderr, "vision weights %s before the language model ran\n",
                    bluelmv_vision_loaded(b) ? "still mapped (--keep-vit)" : "released");
        BluelmvStats st;
        if (enc == 0)
            rc = bluelmv_chat(b, line, imgs, n_imgs, o.n_predict, &o.sampler, print_text, NULL, &st, &err);
        for (int i = 0; i < n_imgs; i++) bluelmv_image_free(imgs[i]);
        if (enc == 0 && rc == 0) {
            fputs("\n", stdout);
            fflush(stdout);
            print_speed(&st);
            continue;
        }
        fprintf(stderr, "bluelmv: error: %s\n", err.msg);
        if (!interactive) {  /* in a pipe, an error ends the session with a failure status */
            rc = 1;
            break;
        }
        rc = 0;
    }
    for (int i = 0; i < n_jobs; i++) {
        BluelmvImage *img = NULL;
        collect_images(&jobs[i], 1, &img, t_start, blv_now(), &err);
        bluelmv_image_free(img);
    }
    free(line);
    bluelmv_free(b);
    return rc;
}

static int cmd_encode(int argc, char **argv) {
    const char *cmd = "encode", *image = NULL, *dump_dir = NULL;
    BluelmvParams params = bluelmv_default_params();
    long long v;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(encode_usage, stdout);
            return 0;
        } else if (matches(a, NULL, "--mmproj")) {
            if (!(params.mmproj_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--image")) {
            if (!(image = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--dump")) {
            if (!(dump_dir = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-m", "--model")) {
            if (!(params.model_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-t", "--threads")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 256, &v)) return 2;
            params.n_threads = (int)v;
        } else if (matches(a, NULL, "--vit-batch")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 64, &v)) return 2;
            params.vit_batch = (int)v;
        } else if (matches(a, NULL, "--no-pipeline")) {
            params.pipeline = 0;
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!params.mmproj_path) return usage_error(cmd, "no vision model given (--mmproj MMPROJ.gguf)");
    if (!image) return usage_error(cmd, "no image given (--image FILE)");
    BlvError err;
    Bluelmv *b = bluelmv_load(&params, &err);
    if (!b) return fail(&err);
    int rc = dump_dir ? bluelmv_set_dump_dir(b, dump_dir, &err) : 0;
    BluelmvImage *img = rc == 0 ? bluelmv_encode_image(b, image, &err) : NULL;
    if (img) rc = bluelmv_finish_dump(b, &err);
    if (!img || rc != 0) {
        bluelmv_image_free(img);
        bluelmv_free(b);
        return fail(&err);
    }
    print_image_summary(img);
    const Vit *vit = bluelmv_vit(b);
    if (vit) {
        const VitTimings *t = &vit->timings;
        double blocks = t->qkvo + t->attention + t->mlp + t->other;
        fprintf(stderr, "per tile: %.3f s (patch embedding %.3f, q/k/v/o %.3f, attention %.3f, mlp %.3f, other %.3f, "
                "projector %.3f); blocks %.1f GOP/s (bluelmv bench sets that against the machine's int8 limits); "
                "peak RSS %.3f GB\n", img->encode_s / (double)img->n_images,
                img->conv_s / (double)img->n_images, t->qkvo / (double)img->n_images,
                t->attention / (double)img->n_images, t->mlp / (double)img->n_images, t->other / (double)img->n_images,
                t->project / (double)img->n_images,
                blocks > 0 ? vit_block_ops(&vit->config) * (double)img->n_images / blocks / 1e9 : 0.0,
                (double)blv_peak_rss_bytes() / 1e9);
    }
    bluelmv_image_free(img);
    bluelmv_free(b);
    return 0;
}

static int cmd_compare(int argc, char **argv) {
    const char *cmd = "compare", *dirs[2] = {NULL, NULL};
    CompareOptions o;
    compare_options_default(&o);
    int n_dirs = 0;
    double d;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(compare_usage, stdout);
            return 0;
        } else if (matches(a, NULL, "--tol-nmse")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 1e300, &d)) return 2;
            o.tol_nmse = d;
        } else if (matches(a, NULL, "--tol-top1")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 1, &d)) return 2;
            o.tol_top1 = d;
        } else if (matches(a, NULL, "--tol-max-abs")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 1e300, &d)) return 2;
            o.tol_max_abs = d;
        } else if (a[0] == '-' && a[1] != 0) {
            return usage_error(cmd, "unknown option '%s'", a);
        } else if (n_dirs < 2) {
            dirs[n_dirs++] = a;
        } else {
            return usage_error(cmd, "unexpected argument '%s'", a);
        }
    }
    if (n_dirs != 2) return usage_error(cmd, "give two dump directories");
    BlvError err;
    int n_failed = 0;
    if (dump_compare_dirs(dirs[0], dirs[1], &o, stdout, &n_failed, &err) != 0) return fail(&err);
    return n_failed ? 1 : 0;
}

/* ---- tokenize --------------------------------------------------------------------------------- */

static int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize", *model = NULL, *file = NULL, *text = NULL;
    int add_bos = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(tokenize_usage, stdout);
            return 0;
        } else if (matches(a, "-m", "--model")) {
            if (!(model = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-f", "--file")) {
            if (!(file = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--no-bos")) {
            add_bos = 0;
        } else if (a[0] == '-' && a[1] != 0 && !text) {
            return usage_error(cmd, "unknown option '%s'", a);
        } else if (!text) {
            text = a;
        } else {
            return usage_error(cmd, "more than one TEXT argument ('%s' and '%s'); quote the text", text, a);
        }
    }
    if (!model) return usage_error(cmd, "no model given (-m MODEL.gguf)");
    if (!file && !text) return usage_error(cmd, "nothing to tokenize: give TEXT or --file F");
    if (file && text) return usage_error(cmd, "give either TEXT or --file F, not both");

    BlvError err;
    char *data = NULL;
    size_t len;
    if (file) {
        if (blv_read_file(file, &data, &len, &err) != 0) return fail(&err);
    } else {
        len = strlen(text);
    }
    const char *input = file ? data : text;
    GgufFile f;
    if (gguf_open(&f, model, 1, &err) != 0) {
        free(data);
        return fail(&err);
    }
    Tokenizer tok;
    if (tokenizer_load(&tok, &f, &err) != 0) {
        gguf_close(&f);
        free(data);
        return fail(&err);
    }
    int rc = 0;
    int64_t n = tokenizer_encode(&tok, input, len, add_bos, 1, NULL, 0, &err);
    int32_t *ids = n >= 0 ? malloc((size_t)(n ? n : 1) * sizeof(int32_t)) : NULL;
    if (n < 0 || !ids || tokenizer_encode(&tok, input, len, add_bos, 1, ids, n, &err) != n) {
        if (n >= 0 && !ids) blv_fail(&err, "out of memory for %lld token ids", (long long)n);
        rc = fail(&err);
    } else {
        for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    tokenizer_free(&tok);
    gguf_close(&f);
    free(data);
    return rc;
}

/* ---- convert / gen ---------------------------------------------------------------------------- */

static int cmd_convert(int argc, char **argv) {
    const char *cmd = "convert", *out = NULL, *projector = NULL, *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0, type = TYPE_F32;
    HfVisionOptions vopt = {0, 0};
    int vocab_only = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(convert_usage, stdout);
            return 0;
        } else if (matches(a, "-o", "--output")) {
            if (!(out = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--type")) {
            if (weight_type_option(cmd, take_value(argc, argv, &i, cmd), &type)) return 2;
        } else if (matches(a, NULL, "--projector")) {
            if (!(projector = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--all-layers")) {
            vopt.all_layers = 1;
        } else if (matches(a, NULL, "--post-ln")) {
            vopt.post_ln = 1;
        } else if (matches(a, NULL, "--vocab-only")) {
            vocab_only = 1;
        } else if (a[0] == '-' && a[1] != 0) {
            return usage_error(cmd, "unknown option '%s'", a);
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            return usage_error(cmd, "unexpected argument '%s'", a);
        }
    }
    if (n_pos == 0) return usage_error(cmd, "missing the source format (llama2c, hf or hf-vision)");
    int llama2c = strcmp(pos[0], "llama2c") == 0, vision = strcmp(pos[0], "hf-vision") == 0;
    int hf = strcmp(pos[0], "hf") == 0;
    if (!llama2c && !vision && !hf) return usage_error(cmd, "unknown source format '%s' (llama2c, hf, hf-vision)", pos[0]);
    if (llama2c && n_pos != 3) return usage_error(cmd, "llama2c needs CHECKPOINT and TOKENIZER");
    if ((vision || hf) && n_pos != 2) return usage_error(cmd, "%s needs one checkpoint DIR", pos[0]);
    if (!vision && (projector || vopt.all_layers || vopt.post_ln))
        return usage_error(cmd, "--projector, --all-layers and --post-ln are for hf-vision");
    if (!hf && vocab_only) return usage_error(cmd, "--vocab-only is for hf");
    if (vopt.post_ln && !vopt.all_layers) return usage_error(cmd, "--post-ln needs --all-layers");
    if (vision && type == TYPE_BF16) return usage_error(cmd, "hf-vision writes f32, f16, q8_0 or q4_0");
    if (!out) return usage_error(cmd, "no output file given (-o OUT.gguf)");
    BlvError err;
    double t0 = blv_now();
    int rc = llama2c ? convert_llama2c(pos[1], pos[2], out, type, 1, &err)
             : hf    ? convert_hf_llm(pos[1], out, type, vocab_only, 1, &err)
                     : convert_hf_vision_ex(pos[1], projector, out, type, &vopt, 1, &err);
    if (rc != 0) return fail(&err);
    fprintf(stderr, "wrote %s (%s) in %.2f s\n", out, type_name(type), blv_now() - t0);
    return 0;
}

static int cmd_gen(int argc, char **argv) {
    const char *cmd = "gen", *out = NULL, *preset_name = NULL;
    int type = TYPE_Q4_0, vision_type = TYPE_Q8_0, llm_only = 0;
    long long seed = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(gen_usage, stdout);
            return 0;
        } else if (matches(a, "-o", "--output")) {
            if (!(out = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--preset")) {
            if (!(preset_name = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--type")) {
            if (weight_type_option(cmd, take_value(argc, argv, &i, cmd), &type)) return 2;
        } else if (matches(a, NULL, "--vision-type")) {
            if (weight_type_option(cmd, take_value(argc, argv, &i, cmd), &vision_type)) return 2;
        } else if (matches(a, NULL, "--seed")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, LLONG_MAX, &seed)) return 2;
        } else if (matches(a, NULL, "--llm-only")) {
            llm_only = 1;
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!preset_name) return usage_error(cmd, "no preset given (--preset tiny|bluelm-v-3b)");
    const LlmPreset *p = llm_preset_find(preset_name);
    if (!p) return usage_error(cmd, "unknown preset '%s' (tiny, bluelm-v-3b)", preset_name);
    if (!out) return usage_error(cmd, "no output given (-o PREFIX)");
    fprintf(stderr, "preset %s\n", p->label);
    BlvError err;
    double t0 = blv_now();
    char llm_path[4096], vision_path[4096];
    snprintf(llm_path, sizeof llm_path, llm_only ? "%s" : "%s-llm.gguf", out);
    snprintf(vision_path, sizeof vision_path, "%s-mmproj.gguf", out);
    if (generate_llm_preset(p, (uint64_t)seed, type, llm_path, 1, &err) != 0) return fail(&err);
    fprintf(stderr, "wrote %s (%s) in %.1f s\n", llm_path, type_name(type), blv_now() - t0);
    if (llm_only) return 0;
    VitShape shape;
    if (vit_shape_preset(preset_name, &shape, &err) != 0) return fail(&err);
    t0 = blv_now();
    fprintf(stderr, "writing %s ...\n", vision_path);
    if (vit_write_random(vision_path, &shape, vision_type, (uint64_t)seed + 1, &err) != 0) return fail(&err);
    fprintf(stderr, "wrote %s (%s) in %.1f s\n", vision_path, type_name(vision_type), blv_now() - t0);
    return 0;
}

/* ---- bench ------------------------------------------------------------------------------------- */

static int cmd_bench(int argc, char **argv) {
    const char *cmd = "bench";
    BenchOptions o = bench_default_options();
    long long v;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(bench_usage, stdout);
            return 0;
        } else if (matches(a, "-m", "--model")) {
            if (!(o.model_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-t", "--threads")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 256, &v)) return 2;
            o.n_threads = (int)v;
        } else if (matches(a, NULL, "--reps")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 1000, &v)) return 2;
            o.reps = (int)v;
        } else if (matches(a, NULL, "--prompt-tokens")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 1 << 20, &v)) return 2;
            o.prompt_tokens = v;
        } else if (matches(a, NULL, "--tg-tokens")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 1 << 20, &v)) return 2;
            o.tg_tokens = v;
        } else if (matches(a, "-d", "--depth")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 1 << 20, &v)) return 2;
            o.depth = v;
        } else if (matches(a, NULL, "--kv")) {
            if (kv_option(cmd, take_value(argc, argv, &i, cmd), &o.kv_type)) return 2;
        } else if (matches(a, NULL, "--json")) {
            o.json = 1;
        } else if (matches(a, NULL, "--no-repack")) {
            o.no_repack = 1;
        } else if (matches(a, NULL, "--profile")) {
            o.profile = 1;
        } else if (matches(a, NULL, "--mmproj")) {
            if (!(o.mmproj_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--image")) {
            if (!(o.image_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--no-sweeps")) {
            o.no_sweeps = 1;
        } else if (matches(a, NULL, "--size")) {
            const char *sz = take_value(argc, argv, &i, cmd);
            char x;
            int n = 0;
            if (!sz) return 2;
            if (sscanf(sz, "%d%c%d%n", &o.image_w, &x, &o.image_h, &n) != 3 || (x != 'x' && x != 'X') || sz[n] ||
                o.image_w < 1 || o.image_h < 1 || o.image_w > 16384 || o.image_h > 16384)
                return usage_error(cmd, "--size expects WIDTHxHEIGHT (at most 16384x16384), got '%s'", sz);
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!o.model_path) return usage_error(cmd, "no model given (-m MODEL.gguf)");
    BlvError err;
    if (bench_run(&o, &err) != 0) return fail(&err);
    return 0;
}

/* ---- tiles / decode ---------------------------------------------------------------------------- */

static int cmd_tiles(int argc, char **argv) {
    const char *cmd = "tiles", *image = NULL, *size = NULL, *algo_name = "relaxed";
    long long max_grid = 0, max_num = 0, tile_size = 0, per_tile = 196;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(tiles_usage, stdout);
            return 0;
        } else if (matches(a, NULL, "--image")) {
            if (!(image = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--size")) {
            if (!(size = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--algo")) {
            if (!(algo_name = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--max-grid")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, TILE_MAX_GRID, &max_grid)) return 2;
        } else if (matches(a, NULL, "--max-num")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, TILE_MAX_TILES, &max_num)) return 2;
        } else if (matches(a, NULL, "--tile-size")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, TILE_MAX_SIZE, &tile_size)) return 2;
        } else if (matches(a, NULL, "--tokens-per-tile")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 1 << 20, &per_tile)) return 2;
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!image == !size) return usage_error(cmd, "give exactly one of --image FILE and --size WxH");
    BlvError err;
    TileAlgo algo;
    if (tile_algo_parse(algo_name, &algo, &err) != 0) return usage_error(cmd, "%s", err.msg);
    TilePolicy policy = tile_policy_default(algo);
    if (max_grid) policy.max_grid = (int)max_grid;
    if (max_num) policy.internvl_max_num = (int)max_num;
    if (tile_size) policy.tile_size = (int)tile_size;
    int w = 0, h = 0;
    if (size) {
        char x;
        int n = 0;
        if (sscanf(size, "%d%c%d%n", &w, &x, &h, &n) != 3 || (x != 'x' && x != 'X') || size[n] != 0 || w < 1 || h < 1)
            return usage_error(cmd, "--size expects WIDTHxHEIGHT with positive integers, got '%s'", size);
    } else {
        Image img;
        if (image_load(&img, image, NULL, &err) != 0) return fail(&err);
        w = img.width;
        h = img.height;
        image_free(&img);
    }
    TilePlan plan;
    if (tile_plan(w, h, &policy, &plan, &err) != 0) return fail(&err);
    printf("grid=%d:%d tiles=%d thumbnail=%d image_tokens=%d\n", plan.grid_w, plan.grid_h, plan.n_tiles,
           plan.has_thumbnail, tile_image_tokens(&plan, (int)per_tile));
    return 0;
}

static int cmd_decode(int argc, char **argv) {
    const char *cmd = "decode", *in = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(decode_usage, stdout);
            return 0;
        } else if (matches(a, "-o", "--output")) {
            if (!(out = take_value(argc, argv, &i, cmd))) return 2;
        } else if (a[0] == '-' && a[1] != 0) {
            return usage_error(cmd, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return usage_error(cmd, "more than one IMAGE ('%s' and '%s')", in, a);
        }
    }
    if (!in) return usage_error(cmd, "no IMAGE given");
    if (!out) return usage_error(cmd, "no output file given (-o OUT.ppm)");
    BlvError err;
    Image img;
    if (image_load(&img, in, NULL, &err) != 0) return fail(&err);
    int rc = image_write_ppm(&img, out, &err);
    fprintf(stderr, "%s: %dx%d\n", in, img.width, img.height);
    image_free(&img);
    return rc != 0 ? fail(&err) : 0;
}

/* The kernel families this build has, for BLUELMV_KERNELS's error message. */
#if defined(__x86_64__) || defined(__i386__)
#define KERNEL_FAMILIES "ref, avx2, avx512"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define KERNEL_FAMILIES "ref, neon"
#else
#define KERNEL_FAMILIES "ref"
#endif

/* BLUELMV_KERNELS=NAME: every product and op through that family (both quant.h's and ops.h's), e.g.
 * the scalar reference end to end, to dump the numbers a SIMD or ported run is compared against. */
static int select_kernels(void) {
    const char *name = getenv("BLUELMV_KERNELS");
    if (!name || !*name) return 0;
    const char *best = quant_kernel_name();
    if (quant_force_kernels(name) == 0 && ops_force_kernels(name) == 0) return 0;
    quant_force_kernels(NULL);
    ops_force_kernels(NULL);
    fprintf(stderr,
            "bluelmv: error: BLUELMV_KERNELS=%s: not a kernel family this build can run on this CPU "
            "(this build has %s; this CPU's fastest is %s)\n",
            name, KERNEL_FAMILIES, best);
    return -1;
}

int main(int argc, char **argv) {
    if (select_kernels() != 0) return 2;
    if (argc < 2) {
        fputs(main_usage, stderr);
        return 2;
    }
    const char *c = argv[1];
    if (is_help(c) || strcmp(c, "help") == 0) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (strcmp(c, "generate") == 0) return cmd_generate(argc, argv);
    if (strcmp(c, "run") == 0) return cmd_run(argc, argv);
    if (strcmp(c, "chat") == 0) return cmd_chat(argc, argv);
    if (strcmp(c, "encode") == 0) return cmd_encode(argc, argv);
    if (strcmp(c, "compare") == 0) return cmd_compare(argc, argv);
    if (strcmp(c, "tokenize") == 0) return cmd_tokenize(argc, argv);
    if (strcmp(c, "convert") == 0) return cmd_convert(argc, argv);
    if (strcmp(c, "gen") == 0) return cmd_gen(argc, argv);
    if (strcmp(c, "bench") == 0) return cmd_bench(argc, argv);
    if (strcmp(c, "tiles") == 0) return cmd_tiles(argc, argv);
    if (strcmp(c, "decode") == 0) return cmd_decode(argc, argv);
    fprintf(stderr, "bluelmv: error: unknown command '%s'\n\n%s", c, main_usage);
    return 2;
}
