/* Backend registry: the CPU backend is built in; OpenCL and CUDA are modules loaded with
 * dlopen from $MAMBA_BACKEND_PATH, then the directory of libmamba.so, then the install
 * libdir. libmamba itself links neither OpenCL nor CUDA. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef MB_INSTALL_LIBDIR
#define MB_INSTALL_LIBDIR "/usr/local/lib"
#endif

/* Modules stay resident once loaded (RTLD_NODELETE): GPU runtimes and the C++ libraries they
 * pull in are not safe to unload and load again within a process. *abi_mismatch is set when
 * the module loaded but speaks another ABI version. */
static const mb_backend *try_module(const char *path, void **module, int *abi_mismatch, char *note, size_t note_len)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        snprintf(note, note_len, "%s", dlerror());
        return NULL;
    }
    mb_backend_register_fn reg;
    *(void **)&reg = dlsym(h, MB_BACKEND_ENTRY);
    const mb_backend *be = reg ? reg(MB_BACKEND_ABI_VERSION) : NULL;
    if (!reg)
        snprintf(note, note_len, "%s: no " MB_BACKEND_ENTRY " symbol", path);
    else if (!be)
        snprintf(note, note_len, "%s: the module refuses backend ABI version %d (it was built for another "
                 "libmamba: rebuild it with this one)", path, MB_BACKEND_ABI_VERSION);
    else if (be->abi_version != MB_BACKEND_ABI_VERSION || !be->device || !be->ops || !be->probe)
        snprintf(note, note_len, "%s: backend ABI version %d, this libmamba needs %d (rebuild the module)", path,
                 be->abi_version, MB_BACKEND_ABI_VERSION);
    if (!be || be->abi_version != MB_BACKEND_ABI_VERSION || !be->device || !be->ops || !be->probe) {
        *abi_mismatch = reg != NULL;
        dlclose(h);
        return NULL;
    }
    *module = h;
    snprintf(note, note_len, "%s", path);
    return be;
}

static int own_dir(char *dir, size_t len)
{
    Dl_info info;
    if (!dladdr((void *)&own_dir, &info) || !info.dli_fname) return 0;
    snprintf(dir, len, "%s", info.dli_fname);
    char *slash = strrchr(dir, '/');
    if (!slash) return 0;
    *slash = 0;
    return 1;
}

const mb_backend *mb_backend_get(const char *name, void **module, char *note, size_t note_len)
{
    *module = NULL;
    if (strcmp(name, "cpu") == 0) {
        snprintf(note, note_len, "built in");
        return mb_cpu_backend();
    }
    if (strcmp(name, "opencl") != 0 && strcmp(name, "cuda") != 0) {
        snprintf(note, note_len, "unknown backend '%s' (expected auto, cpu, opencl or cuda)", name);
        return NULL;
    }
    char file[64], path[4096], first_err[512] = "";
    snprintf(file, sizeof file, "libmamba-%s.so", name);
    const char *env = getenv("MAMBA_BACKEND_PATH");
    char dirs[4096] = "";
    if (env) snprintf(dirs, sizeof dirs, "%s:", env);
    char self[2048];
    if (own_dir(self, sizeof self)) {
        size_t l = strlen(dirs);
        snprintf(dirs + l, sizeof dirs - l, "%s:", self);
    }
    size_t l = strlen(dirs);
    snprintf(dirs + l, sizeof dirs - l, "%s", MB_INSTALL_LIBDIR);
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (!*d) continue;
        snprintf(path, sizeof path, "%s/%s", d, file);
        char why[512];
        int mismatch = 0;
        const mb_backend *be = try_module(path, module, &mismatch, why, sizeof why);
        if (be) {
            snprintf(note, note_len, "%s", why);
            return be;
        }
        /* a module of another libmamba stops the search: the one found first is the one meant */
        if (mismatch) {
            snprintf(note, note_len, "module %s failed to load: %s", file, why);
            return NULL;
        }
        /* Remember the first failure that is not a plain missing file. */
        if (!first_err[0] && !strstr(why, "No such file")) snprintf(first_err, sizeof first_err, "%s", why);
    }
    if (first_err[0])
        snprintf(note, note_len, "module %s failed to load: %s", file, first_err);
    else
        snprintf(note, note_len, "module %s not found (built without it? searched $MAMBA_BACKEND_PATH, "
                 "the directory of libmamba.so and %s)", file, MB_INSTALL_LIBDIR);
    return NULL;
}

static const char *const backend_names[] = {"cpu", "opencl", "cuda"};
#define N_BACKENDS (sizeof backend_names / sizeof backend_names[0])

mamba_status_t mamba_list_backends(mamba_backend_info_t *out, size_t cap, size_t *count)
{
    if (!count || (cap && !out))
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_list_backends: NULL argument");
    for (size_t i = 0; i < N_BACKENDS && i < cap; i++) {
        mamba_backend_info_t *bi = &out[i];
        memset(bi, 0, sizeof *bi);
        snprintf(bi->name, sizeof bi->name, "%s", backend_names[i]);
        void *module;
        const mb_backend *be = mb_backend_get(backend_names[i], &module, bi->note, sizeof bi->note);
        if (be) {
            char why[256] = "";
            int n = be->device->device_count(why, sizeof why);
            bi->n_devices = n > 0 ? n : 0;
            bi->available = n > 0;
            if (n <= 0) snprintf(bi->note, sizeof bi->note, "%s", why[0] ? why : "no device found");
        }
        if (module) dlclose(module);
    }
    *count = N_BACKENDS;
    return MAMBA_OK;
}

mamba_status_t mamba_list_devices(mamba_device_info_t *out, size_t cap, size_t *count)
{
    if (!count || (cap && !out))
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_list_devices: NULL argument");
    size_t k = 0;
    for (size_t i = 0; i < N_BACKENDS; i++) {
        void *module;
        char note[256];
        const mb_backend *be = mb_backend_get(backend_names[i], &module, note, sizeof note);
        if (!be) continue;
        int n = be->device->device_count(note, sizeof note);
        for (int d = 0; d < n; d++, k++) {
            if (k >= cap) continue;
            mb_device_props p;
            memset(&p, 0, sizeof p);
            be->device->device_props(d, &p);
            mamba_device_info_t *di = &out[k];
            memset(di, 0, sizeof *di);
            snprintf(di->backend, sizeof di->backend, "%s", backend_names[i]);
            di->index = d;
            snprintf(di->name, sizeof di->name, "%s", p.name);
            snprintf(di->note, sizeof di->note, "%s", p.note);
            di->memory_bytes = p.memory_bytes;
            di->compute_units = p.compute_units;
            di->is_gpu = p.is_gpu;
            di->usable = p.usable;
        }
        if (module) dlclose(module);
    }
    *count = k;
    return MAMBA_OK;
}
