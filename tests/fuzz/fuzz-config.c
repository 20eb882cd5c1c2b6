/* libFuzzer target: config.json + generation_config.json parsing. The input is split at
 * its first NUL byte into the two texts; whatever they hold, the parser returns 0 with a
 * description whose dimensions are in range, or a negative code with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 2);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = text[size + 1] = '\0';
    size_t split = strlen(text);
    const char *gen = split < size ? text + split + 1 : NULL;
    struct fp8_model_config c;
    struct fp8_err err;
    if (fp8_model_config_parse(text, gen, &c, &err) == 0) {
        if (c.n_layers < 1 || c.n_layers > FP8_MAX_LAYERS || c.hidden_size < 1 ||
            c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads || c.n_eos < 0 || c.n_eos > FP8_MAX_EOS)
            abort();
        for (int32_t i = 0; i < c.n_eos; i++)
            if (c.eos_token_ids[i] < 0 || c.eos_token_ids[i] >= c.vocab_size)
                abort();
    } else if (!memchr(err.msg, '\0', sizeof(err.msg)) || !err.msg[0]) {
        abort();
    }
    free(text);
    return 0;
}
