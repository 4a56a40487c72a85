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

#include "bench.h"
#include "bluelmv.h"
#include "convert.h"
#include "quant.h"

static const char *main_usage =
    "usage: bluelmv COMMAND [options]\n"
    "\n"
    "BlueLM-V-3B inference in plain C (language side: llama-architecture GGUF models).\n"
    "\n"
    "commands:\n"
    "  generate   generate text from a prompt (like llama-cli)\n"
    "  tokenize   print the token ids of a text\n"
    "  convert    convert a llama2.c checkpoint to GGUF\n"
    "  gen        write a random-weight model of a preset shape (for benchmarks and tests)\n"
    "  bench      measure decode and prefill speed against this machine's limits\n"
    "\n"
    "`bluelmv COMMAND --help` documents each command's options.\n";

static const char *generate_usage =
    "usage: bluelmv generate -m MODEL.gguf [options]\n"
    "\n"
    "Evaluates BOS and the prompt, then samples up to N tokens, streaming the text to stdout (the\n"
    "prompt is not echoed; a newline ends the output). Speed figures go to stderr.\n"
    "\n"
    "  -m, --model FILE     language model GGUF (llama architecture)\n"
    "  -p, --prompt TEXT    prompt (default: empty, i.e. start from BOS)\n"
    "  -f, --file FILE      read the prompt from a file\n"
    "  -n, --n-predict N    tokens to generate (default 128)\n"
    "      --temp T         temperature; 0 = greedy (default 0.8)\n"
    "      --top-k K        keep the K most likely tokens; 0 = off (default 40)\n"
    "      --top-p P        nucleus sampling threshold; 1 = off (default 0.95)\n"
    "      --seed S         sampler seed (default: from the clock)\n"
    "  -t, --threads N      threads (default 1)\n"
    "  -c, --ctx-size N     KV cache length (default: the model's context length)\n"
    "      --chunk C        prefill chunk size in tokens (default 128)\n"
    "      --kv TYPE        KV cache type: f32, f16 or q8_0 (default f16)\n"
    "      --no-mmap        read the model into memory instead of mapping it\n";

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
    "\n"
    "Converts a llama2.c checkpoint (legacy or version-1 export, shared or separate classifier) and a\n"
    "llama2.c tokenizer.bin into a llama-architecture GGUF that llama.cpp can also load.\n"
    "\n"
    "  -o, --output FILE    the GGUF file to write\n"
    "      --type TYPE      weight matrices as f32 (default), f16, bf16, q8_0 or q4_0; norms stay f32,\n"
    "                       and a matrix whose rows are not a multiple of 32 is stored as f16 when a\n"
    "                       quantized type is asked for\n";

static const char *gen_usage =
    "usage: bluelmv gen --preset NAME --llm-only -o OUT.gguf [--type TYPE] [--seed S]\n"
    "\n"
    "Writes a language model with random weights (N(0, 0.02), norms 1) in a preset's shape.\n"
    "Presets: tiny; bluelm-v-3b (an ILLUSTRATIVE 2.7B shape: BlueLM-3B's real configuration is\n"
    "unpublished; for speed and memory measurements only).\n"
    "\n"
    "  --preset NAME        tiny or bluelm-v-3b\n"
    "  --llm-only           write only the language model (the vision file comes with the vision path)\n"
    "  -o, --output FILE    the GGUF file to write\n"
    "  --type TYPE          f32, f16, bf16, q8_0 or q4_0 (default q4_0)\n"
    "  --seed S             random seed (default 1)\n";

static const char *bench_usage =
    "usage: bluelmv bench -m MODEL.gguf [-t THREADS] [--reps N] [--prompt-tokens N] [--kv TYPE]\n"
    "\n"
    "Measures, in one run: the machine's read bandwidth and int8 dot-product peak (built-in probes),\n"
    "decode speed (tg: one token at a time) and prefill speed at N prompt tokens (pp, default 128),\n"
    "each as a fraction of its limit, and peak RSS. Medians over --reps runs (default 5).\n"
    "\n"
    "  -m, --model FILE     language model GGUF\n"
    "  -t, --threads N      threads (default 2)\n"
    "      --reps N         repetitions per measurement (default 5)\n"
    "      --prompt-tokens N  prefill length (default 128)\n"
    "      --tg-tokens N    decoded tokens per repetition (default 32)\n"
    "      --kv TYPE        KV cache type (default f16)\n"
    "      --json           print the results as one JSON object on stdout\n";

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

static int cmd_generate(int argc, char **argv) {
    const char *cmd = "generate";
    BluelmvParams params = bluelmv_default_params();
    BluelmvSampler sampler = bluelmv_default_sampler();
    const char *prompt = "", *prompt_file = NULL;
    long long n_predict = 128, v;
    double d;
    int seed_given = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(generate_usage, stdout);
            return 0;
        } else if (matches(a, "-m", "--model")) {
            if (!(params.model_path = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-p", "--prompt")) {
            if (!(prompt = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-f", "--file")) {
            if (!(prompt_file = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, "-n", "--n-predict")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, INT_MAX, &n_predict)) return 2;
        } else if (matches(a, NULL, "--temp")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 100, &d)) return 2;
            sampler.temperature = (float)d;
        } else if (matches(a, NULL, "--top-k")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, INT_MAX, &v)) return 2;
            sampler.top_k = (int)v;
        } else if (matches(a, NULL, "--top-p")) {
            if (float_option(cmd, a, take_value(argc, argv, &i, cmd), 0, 1, &d)) return 2;
            sampler.top_p = (float)d;
        } else if (matches(a, NULL, "--seed")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 0, LLONG_MAX, &v)) return 2;
            sampler.seed = (uint64_t)v;
            seed_given = 1;
        } else if (matches(a, "-t", "--threads")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, 256, &v)) return 2;
            params.n_threads = (int)v;
        } else if (matches(a, "-c", "--ctx-size")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, INT_MAX, &v)) return 2;
            params.n_ctx = v;
        } else if (matches(a, NULL, "--chunk")) {
            if (int_option(cmd, a, take_value(argc, argv, &i, cmd), 1, INT_MAX, &v)) return 2;
            params.chunk = v;
        } else if (matches(a, NULL, "--kv")) {
            if (kv_option(cmd, take_value(argc, argv, &i, cmd), &params.kv_type)) return 2;
        } else if (matches(a, NULL, "--no-mmap")) {
            params.use_mmap = 0;
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!params.model_path) return usage_error(cmd, "no model given (-m MODEL.gguf)");
    if (!seed_given) sampler.seed = (uint64_t)time(NULL);

    BlvError err;
    char *file_prompt = NULL;
    if (prompt_file) {
        size_t len;
        if (blv_read_file(prompt_file, &file_prompt, &len, &err) != 0) return fail(&err);
        if (strlen(file_prompt) != len) {
            free(file_prompt);
            fprintf(stderr, "bluelmv: error: %s: the prompt file contains a NUL byte\n", prompt_file);
            return 1;
        }
        prompt = file_prompt;
    }
    Bluelmv *b = bluelmv_load(&params, &err);
    if (!b) {
        free(file_prompt);
        return fail(&err);
    }
    BluelmvStats st;
    int rc = bluelmv_generate(b, prompt, n_predict, &sampler, print_text, NULL, &st, &err);
    free(file_prompt);
    if (rc != 0) {
        bluelmv_free(b);
        return fail(&err);
    }
    fputs("\n", stdout);
    fflush(stdout);
    fprintf(stderr, "prompt: %lld tokens in %.3f s (%.1f tok/s); generated: %lld tokens in %.3f s (%.1f tok/s)%s\n",
            (long long)st.n_prompt, st.prefill_seconds, st.n_prompt / (st.prefill_seconds > 0 ? st.prefill_seconds : 1e-9),
            (long long)st.n_generated, st.decode_seconds,
            st.n_generated > 1 ? (st.n_generated - 1) / (st.decode_seconds > 0 ? st.decode_seconds : 1e-9) : 0.0,
            st.stopped_at_eos ? "; stopped at end of text" : st.stopped_at_context ? "; stopped: context full" : "");
    bluelmv_free(b);
    return 0;
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
    const char *cmd = "convert", *out = NULL, *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0, type = TYPE_F32;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(convert_usage, stdout);
            return 0;
        } else if (matches(a, "-o", "--output")) {
            if (!(out = take_value(argc, argv, &i, cmd))) return 2;
        } else if (matches(a, NULL, "--type")) {
            if (weight_type_option(cmd, take_value(argc, argv, &i, cmd), &type)) return 2;
        } else if (a[0] == '-' && a[1] != 0) {
            return usage_error(cmd, "unknown option '%s'", a);
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            return usage_error(cmd, "unexpected argument '%s'", a);
        }
    }
    if (n_pos == 0) return usage_error(cmd, "missing the source format (llama2c)");
    if (strcmp(pos[0], "llama2c") != 0)
        return usage_error(cmd, "unknown source format '%s' (this version converts: llama2c)", pos[0]);
    if (n_pos != 3) return usage_error(cmd, "llama2c needs CHECKPOINT and TOKENIZER");
    if (!out) return usage_error(cmd, "no output file given (-o OUT.gguf)");
    BlvError err;
    double t0 = blv_now();
    if (convert_llama2c(pos[1], pos[2], out, type, 1, &err) != 0) return fail(&err);
    fprintf(stderr, "wrote %s (%s) in %.2f s\n", out, type_name(type), blv_now() - t0);
    return 0;
}

static int cmd_gen(int argc, char **argv) {
    const char *cmd = "gen", *out = NULL, *preset_name = NULL;
    int type = TYPE_Q4_0, llm_only = 0;
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
    if (!llm_only)
        return usage_error(cmd, "only --llm-only is available in this version (the vision side is not written yet)");
    if (!out) return usage_error(cmd, "no output file given (-o OUT.gguf)");
    fprintf(stderr, "preset %s\n", p->label);
    BlvError err;
    double t0 = blv_now();
    if (generate_llm_preset(p, (uint64_t)seed, type, out, 1, &err) != 0) return fail(&err);
    fprintf(stderr, "wrote %s (%s) in %.1f s\n", out, type_name(type), blv_now() - t0);
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
        } else if (matches(a, NULL, "--kv")) {
            if (kv_option(cmd, take_value(argc, argv, &i, cmd), &o.kv_type)) return 2;
        } else if (matches(a, NULL, "--json")) {
            o.json = 1;
        } else {
            return usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!o.model_path) return usage_error(cmd, "no model given (-m MODEL.gguf)");
    BlvError err;
    if (bench_run(&o, &err) != 0) return fail(&err);
    return 0;
}

int main(int argc, char **argv) {
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
    if (strcmp(c, "tokenize") == 0) return cmd_tokenize(argc, argv);
    if (strcmp(c, "convert") == 0) return cmd_convert(argc, argv);
    if (strcmp(c, "gen") == 0) return cmd_gen(argc, argv);
    if (strcmp(c, "bench") == 0) return cmd_bench(argc, argv);
    fprintf(stderr, "bluelmv: error: unknown command '%s'\n\n%s", c, main_usage);
    return 2;
}
