#define _GNU_SOURCE
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "could not remove %s\n", path);
    return 0;
}

static void cleanup(void) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

const char *fuzz_dir(void)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/mamba-fuzz-XXXXXX");
        if (!mkdtemp(dir)) abort();
        atexit(cleanup);
    }
    return dir;
}

const char *fuzz_write(const char *name, const uint8_t *data, size_t size)
{
    static char path[2][512];
    static int slot;
    slot ^= 1;
    snprintf(path[slot], sizeof path[slot], "%s/%s", fuzz_dir(), name);
    FILE *fp = fopen(path[slot], "wb");
    if (!fp) abort();
    if (size && fwrite(data, 1, size, fp) != size) abort();
    fclose(fp);
    return path[slot];
}

static mamba_context_t *ctx;
static void free_context(void) { mamba_context_free(ctx); }

mamba_context_t *fuzz_context(void)
{
    if (!ctx) {
        mamba_context_options_t o;
        mamba_context_options_init(&o);
        o.backend = "cpu";
        o.n_threads = 1;
        o.log_level = MAMBA_LOG_ERROR;
        if (mamba_context_create(&o, &ctx) != MAMBA_OK) abort();
        atexit(free_context);
    }
    return ctx;
}
