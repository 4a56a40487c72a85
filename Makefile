# bluelmv — the whole build. Plain `make` needs only a C11 compiler, libc, libm and pthreads.
#
#   make               the `bluelmv` command line and `libbluelmv.a`
#   make test          every C test (tests/run_tests); the last line is `N passed, N failed`
#   make test-neon     cross-build for aarch64 (armv8.2-a+dotprod and plain armv8-a) and run the
#                      kernel and model tests under qemu-aarch64
#   make sanitize      the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make plain-cc      a one-line `cc` build with no Makefile machinery, as a portability check
#   make clang-check   every source and test through clang with the warnings as errors (a second
#                      compiler's view; nothing is linked)
#
# x86 SIMD kernels are compiled with per-function target attributes and chosen by a CPU check at
# start, so the default build runs on any x86-64. ARM kernels are chosen at compile time from
# -march (NEON always on aarch64; vdotq_s32 when +dotprod is given).

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN    := -std=c11 -Wall -Wextra -Wshadow -Wno-unused-parameter
ARCH_FLAGS ?=
SAN     ?=
BUILD   ?= build/native
LDLIBS  := -lm -pthread

LIB_SRC  := $(filter-out main.c,$(wildcard *.c))
TEST_SRC := $(wildcard tests/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
ALL_CFLAGS := $(WARN) $(CFLAGS) $(ARCH_FLAGS) $(SAN) -pthread -D_GNU_SOURCE -I.

.PHONY: all test test-neon sanitize plain-cc clang-check clean demo

all: bluelmv libbluelmv.a

$(BUILD)/%.o: %.c $(wildcard *.h) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libbluelmv.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bluelmv: $(BUILD)/main.o $(BUILD)/libbluelmv.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/run_tests: $(TEST_OBJ) $(BUILD)/libbluelmv.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

# Copied by rename, so a running ./bluelmv (a long benchmark) does not block the build.
bluelmv: $(BUILD)/bluelmv
	cp $< $@.tmp && mv -f $@.tmp $@

libbluelmv.a: $(BUILD)/libbluelmv.a
	cp $< $@.tmp && mv -f $@.tmp $@

test: bluelmv $(BUILD)/run_tests
	$(BUILD)/run_tests

# Kernel and model suites under qemu; the command-line suite needs a native binary and is skipped.
NEON_SUITES := util gguf quant ops tokenizer llm convert tile hfio hfllm dump
QEMU := qemu-aarch64 -L /usr/aarch64-linux-gnu
test-neon:
	$(MAKE) BUILD=build/arm-dotprod CC=aarch64-linux-gnu-gcc ARCH_FLAGS=-march=armv8.2-a+dotprod build/arm-dotprod/run_tests
	$(MAKE) BUILD=build/arm-base CC=aarch64-linux-gnu-gcc ARCH_FLAGS=-march=armv8-a build/arm-base/run_tests
	@echo "== aarch64 armv8.2-a+dotprod"
	$(QEMU) build/arm-dotprod/run_tests $(NEON_SUITES)
	@echo "== aarch64 armv8-a"
	$(QEMU) build/arm-base/run_tests $(NEON_SUITES)

sanitize:
	$(MAKE) BUILD=build/asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" build/asan/run_tests build/asan/bluelmv
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    BLUELMV_BIN=build/asan/bluelmv build/asan/run_tests

plain-cc:
	cc -O2 -pthread -D_GNU_SOURCE -I. -o build/bluelmv-plain *.c -lm

clang-check:
	clang $(WARN) -Werror -pthread -D_GNU_SOURCE -I. -fsyntax-only $(LIB_SRC) main.c $(TEST_SRC)

clean:
	rm -rf build bluelmv libbluelmv.a

# The newcomer's first command: the bundled models. stories260K is a real (tiny) trained model;
# the multimodal `tiny` model has RANDOM weights (its answer is noise), it shows the pipeline.
demo: bluelmv
	./bluelmv convert llama2c tests/data/stories260K/stories260K.bin tests/data/stories260K/tok512.bin -o build/stories260K.gguf
	./bluelmv generate -m build/stories260K.gguf --temp 0 -n 200
	@echo "== the multimodal pipeline on the bundled tiny model (RANDOM weights: the answer is noise)"
	./bluelmv run -m tests/data/e2e/tiny_llm.gguf --mmproj tests/data/e2e/tiny_mmproj.gguf \
	    --image tests/data/e2e/receipt_150x90.png -p "What is in the picture?" --temp 0 -n 24
