#include "safetensors.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/files.h"
#include "engine/safetensors_header.h"

#define ST_INDEX_MAX_BYTES (64u << 20)
#define ST_MAX_SHARDS 4096

struct st_file {
    char *path;
    void *map;
    uint64_t size;
    struct st_header header;
};

struct st_entry {
    struct st_tensor t; /* first, so that &entries[i].t is what callers get */
    int32_t file;       /* index into files */
};

struct st_model {
    int32_t n_files;
    struct st_file *files; /* (n_files) */
    int32_t n_tensors;
    struct st_entry *entries; /* (n_tensors) sorted by name */
};

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct st_entry *)a)->t.name, ((const struct st_entry *)b)->t.name);
}

static int entry_name_cmp(const void *key, const void *b)
{
    return strcmp(key, ((const struct st_entry *)b)->t.name);
}

static void file_release(struct st_file *f)
{
    st_header_free(&f->header);
    if (f->map)
        munmap(f->map, f->size);
    free(f->path);
}

static int file_open(struct st_file *f, const char *path, struct fp8_err *err)
{
    static const uint8_t empty[1];
    memset(f, 0, sizeof(*f));
    f->path = strdup(path);
    if (!f->path)
        return fp8_err_set(err, -ENOMEM, "%s: out of memory", path);
    int rc = fp8_file_map(path, &f->map, &f->size, err);
    if (rc < 0)
        goto fail;
    rc = st_header_parse(f->map ? f->map : empty, f->size, &f->header, err);
    if (rc < 0) {
        fp8_err_prefix(err, rc, "%s", path);
        goto fail;
    }
    return 0;
fail:
    file_release(f);
    memset(f, 0, sizeof(*f));
    return rc;
}

/* A shard name from an index must be a plain file name in the checkpoint directory. */
static bool shard_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < NAME_MAX && !strchr(s, '/') && s[0] != '.';
}

/* The shard list of an index, in first-mention order, and each weight_map entry's shard. */
struct index {
    json_t *root;
    json_t *weight_map;
    int32_t n_shards;
    const char *shards[ST_MAX_SHARDS];
};

static int index_load(const char *path, struct index *ix, struct fp8_err *err)
{
    char *text = NULL;
    json_error_t je;
    int rc = fp8_file_read(path, ST_INDEX_MAX_BYTES, &text, NULL, err);
    if (rc < 0)
        return rc;
    memset(ix, 0, sizeof(*ix));
    ix->root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!ix->root)
        return fp8_err_set(err, -EINVAL, "%s: malformed JSON at line %d column %d: %s", path,
                           je.line, je.column, je.text);
    ix->weight_map = json_object_get(ix->root, "weight_map");
    if (!json_is_object(ix->weight_map)) {
        rc = fp8_err_set(err, -EINVAL, "%s: \"weight_map\" missing or not an object", path);
        goto fail;
    }
    const char *name;
    json_t *v;
    json_object_foreach(ix->weight_map, name, v) {
        if (!json_is_string(v) || !shard_name_ok(json_string_value(v))) {
            rc = fp8_err_set(err, -EINVAL,
                             "%s: tensor \"%s\" maps to something other than a plain file name "
                             "in the checkpoint directory", path, name);
            goto fail;
        }
        const char *s = json_string_value(v);
        int32_t k = 0;
        while (k < ix->n_shards && strcmp(ix->shards[k], s))
            k++;
        if (k == ix->n_shards) {
            if (ix->n_shards == ST_MAX_SHARDS) {
                rc = fp8_err_set(err, -EINVAL, "%s: more than %d shards", path, ST_MAX_SHARDS);
                goto fail;
            }
            ix->shards[ix->n_shards++] = s;
        }
    }
    if (ix->n_shards == 0) {
        rc = fp8_err_set(err, -EINVAL, "%s: \"weight_map\" is empty", path);
        goto fail;
    }
    return 0;
fail:
    json_decref(ix->root);
    ix->root = NULL;
    return rc;
}

/* Checks the merged, name-sorted entries against the index: every listed tensor is in the
 * shard the index names, and no shard holds a tensor the index does not list. */
static int index_check(const struct index *ix, const char *index_path, const struct st_model *m,
                       struct fp8_err *err)
{
    const char *name;
    json_t *v;
    json_object_foreach(ix->weight_map, name, v) {
        const struct st_entry *e = bsearch(name, m->entries, (size_t)m->n_tensors,
                                           sizeof(*m->entries), entry_name_cmp);
        const char *want = json_string_value(v);
        if (!e)
            return fp8_err_set(err, -EINVAL, "%s: tensor \"%s\" is listed in shard %s, which "
                               "does not contain it", index_path, name, want);
        const char *have = strrchr(m->files[e->file].path, '/') + 1;
        if (strcmp(have, want))
            return fp8_err_set(err, -EINVAL, "%s: tensor \"%s\" is listed in shard %s but "
                               "found in %s", index_path, name, want, have);
    }
    if ((size_t)m->n_tensors != json_object_size(ix->weight_map))
        for (int32_t i = 0; i < m->n_tensors; i++)
            if (!json_object_get(ix->weight_map, m->entries[i].t.name))
                return fp8_err_set(err, -EINVAL, "%s holds tensor \"%s\", which %s does not "
                                   "list", m->files[m->entries[i].file].path,
                                   m->entries[i].t.name, index_path);
    return 0;
}

/* Merges every file's tensors into one name-sorted table; a name in two files is an error. */
static int model_merge(struct st_model *m, struct fp8_err *err)
{
    int64_t total = 0;
    for (int32_t f = 0; f < m->n_files; f++)
        total += m->files[f].header.n_tensors;
    if (total > INT32_MAX)
        return fp8_err_set(err, -E2BIG, "%lld tensors: too many", (long long)total);
    m->entries = calloc(total ? (size_t)total : 1, sizeof(*m->entries));
    if (!m->entries)
        return fp8_err_set(err, -ENOMEM, "out of memory for %lld tensors", (long long)total);
    int32_t n = 0;
    for (int32_t f = 0; f < m->n_files; f++)
        for (int32_t i = 0; i < m->files[f].header.n_tensors; i++)
            m->entries[n++] = (struct st_entry){m->files[f].header.tensors[i], f};
    m->n_tensors = n;
    qsort(m->entries, (size_t)n, sizeof(*m->entries), entry_cmp);
    for (int32_t i = 1; i < n; i++)
        if (!strcmp(m->entries[i - 1].t.name, m->entries[i].t.name))
            return fp8_err_set(err, -EINVAL, "tensor \"%s\" appears in both %s and %s",
                               m->entries[i].t.name, m->files[m->entries[i - 1].file].path,
                               m->files[m->entries[i].file].path);
    return 0;
}

int st_model_open(const char *dir, struct st_model **out, struct fp8_err *err)
{
    struct index ix = {0};
    char *index_path = NULL, *path = NULL;
    struct st_model *m = NULL;
    int rc;

    if (!dir || !out)
        return fp8_err_set(err, -EINVAL, "st_model_open: NULL argument");
    m = calloc(1, sizeof(*m));
    index_path = fp8_path_join(dir, "model.safetensors.index.json");
    path = fp8_path_join(dir, "model.safetensors");
    if (!m || !index_path || !path) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }

    bool sharded = access(index_path, F_OK) == 0;
    if (sharded) {
        rc = index_load(index_path, &ix, err);
        if (rc < 0)
            goto fail;
    } else if (access(path, F_OK) != 0) {
        rc = fp8_err_set(err, -ENOENT, "%s: no model.safetensors or "
                         "model.safetensors.index.json", dir);
        goto fail;
    }

    int32_t n_files = sharded ? ix.n_shards : 1;
    m->files = calloc((size_t)n_files, sizeof(*m->files));
    if (!m->files) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int32_t f = 0; f < n_files; f++) {
        char *p = sharded ? fp8_path_join(dir, ix.shards[f]) : strdup(path);
        if (!p) {
            rc = fp8_err_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        rc = file_open(&m->files[f], p, err);
        if (rc == -ENOENT && sharded)
            fp8_err_set(err, rc, "%s names shard %s, which does not exist", index_path,
                        ix.shards[f]);
        free(p);
        if (rc < 0)
            goto fail;
        m->n_files++;
    }
    rc = model_merge(m, err);
    if (rc < 0)
        goto fail;
    if (sharded) {
        rc = index_check(&ix, index_path, m, err);
        if (rc < 0)
            goto fail;
    }

    json_decref(ix.root);
    free(index_path);
    free(path);
    *out = m;
    return 0;

fail:
    json_decref(ix.root);
    free(index_path);
    free(path);
    st_model_free(m);
    return rc;
}

void st_model_free(struct st_model *m)
{
    if (!m)
        return;
    for (int32_t f = 0; f < m->n_files; f++)
        file_release(&m->files[f]);
    free(m->files);
    free(m->entries);
    free(m);
}

int32_t st_model_n_tensors(const struct st_model *m)
{
    return m ? m->n_tensors : 0;
}

const struct st_tensor *st_model_tensor(const struct st_model *m, int32_t i)
{
    if (!m || i < 0 || i >= m->n_tensors)
        return NULL;
    return &m->entries[i].t;
}

const struct st_tensor *st_model_find(const struct st_model *m, const char *name)
{
    int32_t i = st_model_index(m, name);
    return i < 0 ? NULL : &m->entries[i].t;
}

int32_t st_model_index(const struct st_model *m, const char *name)
{
    if (!m || !name)
        return -1;
    const struct st_entry *e =
        bsearch(name, m->entries, (size_t)m->n_tensors, sizeof(*m->entries), entry_name_cmp);
    return e ? (int32_t)(e - m->entries) : -1;
}

int32_t st_model_n_files(const struct st_model *m)
{
    return m ? m->n_files : 0;
}

const char *st_model_file_path(const struct st_model *m, int32_t i)
{
    return m && i >= 0 && i < m->n_files ? m->files[i].path : NULL;
}
