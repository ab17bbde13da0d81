/* A backend module built for an older libmamba: its registration answers with a vtable of ABI
 * version 3 whatever it is asked. The api suite checks that libmamba refuses it by name. */
#include <stddef.h>

struct old_vtable {
    int abi_version;
    const char *name;
};

static const struct old_vtable old = {3, "cuda"};

__attribute__((visibility("default"))) const void *mamba_backend_register(int abi_version)
{
    (void)abi_version;
    return &old;
}
