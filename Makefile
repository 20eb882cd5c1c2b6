# fp8d — GNU make build (no CMake). `make help` lists the targets.
#
# Sources are found by folder, so a new file needs no Makefile change:
#   common/ ipc/ engine/ engine/models/ kernels/ kernels/ref/ daemon/  -> libfp8dcore.a
#   kernels/cuda/*.cu (nvcc, one -gencode per CUDA_ARCHS entry)        -> libfp8dcore.a
#   client/*.c (but fp8.c)                                             -> libfp8d.{so,a}
#   daemon/main.c -> fp8d;  client/fp8.c -> fp8;  client/examples/*.c  -> examples
#   tests/test-*.c (cmocka, CPU) ; tests/gpu/test-*.c ; tests/fuzz/fuzz-*.c (libFuzzer)

PREFIX     ?= /usr/local
DESTDIR    ?=
BUILD      ?= build
CUDA_HOME  ?= /usr/local/cuda
NVCC       ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCHS ?= 89 90
WITH_CUDA  ?= 1
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 10
VERSION    := 0.1.0
V          ?= 0
ifeq ($(V),0)
  say = @printf '  %-6s %s\n' $(1) $(2);
else
  say =
endif

MSGPACK_PC := $(shell pkg-config --exists msgpack-c 2>/dev/null && echo msgpack-c || echo msgpack)
PKGS       := libzmq $(MSGPACK_PC) libsystemd jansson libpcre2-8 libutf8proc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

CFLAGS     ?= -O2 -g
SANFLAGS   ?=
CPPFLAGS   += -I. -D_GNU_SOURCE -DFP8D_VERSION=\"$(VERSION)\" \
              -DFP8D_SOURCE_DIR=\"$(CURDIR)\" $(PKG_CFLAGS)
ALL_CFLAGS := -std=c11 -Wall -Wextra -Werror -fPIC -pthread -MMD -MP $(CFLAGS) $(SANFLAGS)
LDLIBS     += $(PKG_LIBS) -lm -pthread

NVCCFLAGS  ?= -O3 -lineinfo
ALL_NVCCFLAGS := -std=c++17 $(NVCCFLAGS) -I. -DFP8D_WITH_CUDA=1 \
                 $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
                 -Xcompiler -fPIC,-Wall,-Wextra,-Werror --Werror all-warnings -MMD -MP
CUDA_LIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lnccl -lcudart -lstdc++

CORE_SRC := $(wildcard common/*.c ipc/*.c engine/*.c engine/models/*.c kernels/*.c kernels/ref/*.c) \
            $(filter-out daemon/main.c,$(wildcard daemon/*.c))
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
ifeq ($(WITH_CUDA),1)
  CPPFLAGS += -DFP8D_WITH_CUDA=1
  LINK_CUDA := $(CUDA_LIBS)
else
  CUDA_SRC :=
  LINK_CUDA :=
endif
CLIENT_SRC  := $(filter-out client/fp8.c,$(wildcard client/*.c)) $(wildcard common/*.c ipc/*.c)
EXAMPLE_SRC := $(wildcard client/examples/*.c)
TEST_SRC    := $(wildcard tests/test-*.c)
GPU_TEST_SRC := $(wildcard tests/gpu/test-*.c)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz-*.c)
BENCH_SRC   := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(1)))
CORE_OBJ   := $(call obj,$(CORE_SRC) $(CUDA_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
TEST_BIN   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
GPU_TEST_BIN := $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(GPU_TEST_SRC))
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
EXAMPLE_BIN := $(patsubst client/examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))
BENCH_BIN  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
BINS := $(BUILD)/fp8d $(if $(wildcard client/fp8.c),$(BUILD)/fp8) \
        $(if $(CLIENT_SRC),$(BUILD)/libfp8d.so $(BUILD)/libfp8d.a) $(EXAMPLE_BIN)

.PHONY: all help deps tokenizers test test-cpu test-gpu gpu-tests asan fuzz fuzz-bins bench \
        demo install clean
.DEFAULT_GOAL := all
.SECONDARY:

all: $(BINS) $(TEST_BIN) $(BENCH_BIN)

help:
	@echo "make            build fp8d, fp8, libfp8d (.so/.a), examples and tests into $(BUILD)/"
	@echo "make test       install missing Debian packages (as root), fetch tokenizers, build,"
	@echo "                run every CPU test (ref backend) and a short fuzz run"
	@echo "make demo       build, make a tiny model and run it end to end"
	@echo "make test-gpu   kernel and model parity on a GPU (skips with a message elsewhere)"
	@echo "make asan       CPU tests under AddressSanitizer + UBSan (build-asan/)"
	@echo "make fuzz       libFuzzer targets, FUZZ_SECONDS=$(FUZZ_SECONDS) each (build-fuzz/)"
	@echo "make bench      performance benchmarks (see bench/README.md)"
	@echo "make install    PREFIX=$(PREFIX) DESTDIR=…"
	@echo "variables: CUDA_ARCHS='$(CUDA_ARCHS)' CUDA_HOME=$(CUDA_HOME) WITH_CUDA=$(WITH_CUDA)"

# ---- dependencies ---------------------------------------------------------------------
# Objects wait on this stamp, so a missing package is reported by name before any
# compiler error. `make test` and `make demo` install what is missing when run as root.
$(BUILD)/.deps-ok: tools/deps.sh
	@tools/deps.sh check
	@mkdir -p $(@D) && touch $@

deps:
	@tools/deps.sh install

tokenizers:
	@tools/fetch-tokenizers.sh

# ---- compile ----------------------------------------------------------------------------
$(BUILD)/obj/%.o: %.c | $(BUILD)/.deps-ok
	@mkdir -p $(@D)
	$(call say,CC,$<)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

# Examples include <fp8d.h> as installed programs do.
$(BUILD)/obj/client/examples/%.o: CPPFLAGS += -Iclient

$(BUILD)/obj/%.cu.o: %.cu | $(BUILD)/.deps-ok
	@mkdir -p $(@D)
	$(call say,NVCC,$<)$(NVCC) $(ALL_NVCCFLAGS) -c $< -o $@

$(BUILD)/libfp8dcore.a: $(CORE_OBJ)
	@rm -f $@
	$(call say,AR,$@)$(AR) rcs $@ $^

$(BUILD)/libfp8d.a: $(CLIENT_OBJ)
	@rm -f $@
	$(call say,AR,$@)$(AR) rcs $@ $^

$(BUILD)/libfp8d.so: $(CLIENT_OBJ) client/libfp8d.map
	$(call say,LD,$@)$(CC) -shared -Wl,-soname,libfp8d.so.0 -Wl,--version-script,client/libfp8d.map \
	  $(SANFLAGS) -o $@ $(CLIENT_OBJ) $(PKG_LIBS) -pthread

$(BUILD)/fp8d: $(BUILD)/obj/daemon/main.o $(BUILD)/libfp8dcore.a
	$(call say,LD,$@)$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS) $(LINK_CUDA)

$(BUILD)/fp8: $(BUILD)/obj/client/fp8.o $(BUILD)/libfp8d.a
	$(call say,LD,$@)$(CC) $(SANFLAGS) -o $@ $^ $(PKG_LIBS) -lm -pthread

$(BUILD)/examples/%: $(BUILD)/obj/client/examples/%.o $(BUILD)/libfp8d.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(SANFLAGS) -o $@ $^ $(PKG_LIBS) -lm -pthread

$(BUILD)/tests/gpu/%: $(BUILD)/obj/tests/gpu/%.o $(BUILD)/libfp8dcore.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(SANFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS) $(LINK_CUDA)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libfp8d.a $(BUILD)/libfp8dcore.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(SANFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS) $(LINK_CUDA)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libfp8dcore.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(SANFLAGS) -o $@ $^ $(LDLIBS) $(LINK_CUDA)

$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/libfp8dcore.a
	@mkdir -p $(@D)
	$(call say,LD,$@)$(CC) $(SANFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS) $(LINK_CUDA)

# ---- run --------------------------------------------------------------------------------
# The README's test command. Everything here runs without a GPU.
test:
	@tools/deps.sh install
	@tools/fetch-tokenizers.sh
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@$(MAKE) --no-print-directory fuzz
	@tests/run.sh $(BUILD) $(TEST_BIN)

test-cpu: all
	@tests/run.sh $(BUILD) $(TEST_BIN)

test-gpu:
	@$(MAKE) --no-print-directory -j$(JOBS) all gpu-tests
	@tests/gpu/run.sh $(BUILD) $(GPU_TEST_BIN)

gpu-tests: $(GPU_TEST_BIN)

asan:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-asan WITH_CUDA=0 \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  test-cpu

fuzz:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-fuzz WITH_CUDA=0 CC=clang \
	  CFLAGS="-O1 -g" \
	  SANFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" fuzz-bins
	@tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS) $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC))

fuzz-bins: $(FUZZ_BIN)

bench: all
	@bench/run.sh $(BUILD)

demo:
	@tools/deps.sh install
	@tools/fetch-tokenizers.sh
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@tools/demo.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(BUILD)/fp8d $(DESTDIR)$(PREFIX)/bin/
	$(if $(wildcard $(BUILD)/fp8),install -m 0755 $(BUILD)/fp8 $(DESTDIR)$(PREFIX)/bin/)
	$(if $(wildcard $(BUILD)/libfp8d.so),install -m 0755 $(BUILD)/libfp8d.so $(DESTDIR)$(PREFIX)/lib/libfp8d.so.0 && ln -sf libfp8d.so.0 $(DESTDIR)$(PREFIX)/lib/libfp8d.so)
	$(if $(wildcard $(BUILD)/libfp8d.a),install -m 0644 $(BUILD)/libfp8d.a $(DESTDIR)$(PREFIX)/lib/)
	$(if $(wildcard client/fp8d.h),install -m 0644 client/fp8d.h $(DESTDIR)$(PREFIX)/include/)
	$(if $(wildcard client/libfp8d.pc.in),sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
	  client/libfp8d.pc.in >$(DESTDIR)$(PREFIX)/lib/pkgconfig/libfp8d.pc)
	$(if $(wildcard daemon/systemd/*),install -d $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/lib/systemd/user)
	$(foreach f,$(wildcard daemon/systemd/system/*),install -m 0644 $(f) $(DESTDIR)$(PREFIX)/lib/systemd/system/;)
	$(foreach f,$(wildcard daemon/systemd/user/*),install -m 0644 $(f) $(DESTDIR)$(PREFIX)/lib/systemd/user/;)
	$(foreach f,$(wildcard docs/man/*.[1-8]),install -d $(DESTDIR)$(PREFIX)/share/man/man$(subst .,,$(suffix $(f))) && \
	  install -m 0644 $(f) $(DESTDIR)$(PREFIX)/share/man/man$(subst .,,$(suffix $(f)))/;)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
