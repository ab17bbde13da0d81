/* mamba info: the backends and devices found at run time. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba info [--help]\n"
    "\n"
    "List the backends (cpu, opencl, cuda), whether each is available and why not, and every\n"
    "device found, with the name to pass as --backend (for example cuda:0 or opencl:1).\n";

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (optind < argc) {
        cli_error("info", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    mamba_backend_info_t be[8];
    mamba_device_info_t dev[64];
    size_t nb, nd;
    if (mamba_list_backends(be, 8, &nb) != MAMBA_OK || mamba_list_devices(dev, 64, &nd) != MAMBA_OK)
        return cli_error("info", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    printf("libmamba %s\n\nbackends:\n", mamba_version());
    for (size_t i = 0; i < nb && i < 8; i++)
        printf("  %-7s %-13s %s\n", be[i].name, be[i].available ? "available" : "not available", be[i].note);
    printf("\ndevices:\n");
    for (size_t i = 0; i < nd && i < 64; i++)
        printf("  %s:%-3d %-40s %8.1f GiB  %3d units  %s%s  %s\n", dev[i].backend, dev[i].index, dev[i].name,
               (double)dev[i].memory_bytes / (1024.0 * 1024 * 1024), dev[i].compute_units, dev[i].is_gpu ? "GPU" : "CPU",
               dev[i].usable ? "" : " (not usable)", dev[i].note);
    return EXIT_OK;
}
