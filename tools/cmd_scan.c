/* mamba scan: the selective scan op alone, on tensors in the layout of the official
 * selective_scan_ref: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L),
 * (dim, N) or (batch, G, N, L); D, delta_bias (dim). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "scan_case.h"

static const char usage[] =
    "usage: mamba scan [--backward] --input CASE.safetensors --output OUT.safetensors [--backend B]\n"
    "                  [--softplus | --no-softplus] [--threads N]\n"
    "\n"
    "Run the selective scan on the tensors of CASE, laid out as mamba_ssm's selective_scan_ref\n"
    "takes them: u, delta (batch, dim, L); A (dim, N), already negative; B, C input-dependent\n"
    "(batch, N, L), constant (dim, N) or grouped (batch, G, N, L); optional D, delta_bias (dim)\n"
    "and z (batch, dim, L). softplus is applied to delta + delta_bias when the header metadata\n"
    "says delta_softplus (or softplus) = true, or when --softplus is given. Writes out\n"
    "(batch, dim, L) and last_state (batch, dim, N) as F32.\n"
    "\n"
    "--backward: CASE also holds dout (batch, dim, L), the cotangent of out; writes the gradients\n"
    "of sum(out * dout) as d_u, d_delta, d_A, d_B, d_C and, where those inputs are present, d_D,\n"
    "d_z, d_delta_bias, each in its input's shape (F32).\n";

int cmd_scan(int argc, char **argv)
{
    static const struct option opts[] = {
        {"input", required_argument, 0, 'i'}, {"output", required_argument, 0, 'o'},
        {"backend", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"softplus", no_argument, 0, 'S'}, {"no-softplus", no_argument, 0, 'N'}, {"backward", no_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *in = NULL, *out = NULL, *backend = NULL;
    long threads = 0;
    int softplus = -1, backward = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'b': backend = optarg; break;
        case 'S': softplus = 1; break;
        case 'N': softplus = 0; break;
        case 'B': backward = 1; break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &threads))
                return cli_error("scan", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("scan", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!in || !out) {
        fputs(usage, stderr);
        return cli_error("scan", EXIT_USAGE, "--input and --output are required");
    }
    scan_case sc;
    if (!scan_case_load("scan", in, softplus, &sc)) return EXIT_RUNTIME;
    if (backward) {
        const int rc = cmd_scan_backward(&sc, in, out, backend, (int)threads);
        scan_case_free(&sc);
        return rc;
    }
    const size_t B = sc.batch, D = sc.dim, L = sc.len, N = sc.d_state;
    float *o = calloc(B * D * L, sizeof *o), *state = calloc(B * D * N, sizeof *state);
    mamba_context_t *ctx = NULL;
    int rc = EXIT_RUNTIME;
    if (!o || !state) {
        cli_error("scan", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (!(ctx = cli_context("scan", backend, (int)threads))) goto done;
    mamba_scan_args_t a = sc.args;
    a.out = o;
    a.state_out = state;
    double t0 = cli_now();
    if (mamba_scan(ctx, &a) != MAMBA_OK) {
        cli_error("scan", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    fprintf(stderr, "scan: (%zu, %zu, %zu, %zu) on %s (%s) in %.3f ms (with transfers)\n", B, D, L, N,
            mamba_context_backend(ctx), mamba_context_device(ctx), 1e3 * (cli_now() - t0));
    mamba_tensor_t w[2] = {
        {.name = "out", .dtype = MAMBA_F32, .ndim = 3, .shape = {(int64_t)B, (int64_t)D, (int64_t)L}, .data = o,
         .nbytes = B * D * L * 4},
        {.name = "last_state", .dtype = MAMBA_F32, .ndim = 3, .shape = {(int64_t)B, (int64_t)D, (int64_t)N},
         .data = state, .nbytes = B * D * N * 4},
    };
    if (mamba_tensor_file_write(out, w, 2, NULL, 0) != MAMBA_OK) {
        cli_error("scan", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    rc = EXIT_OK;
done:
    free(o);
    free(state);
    mamba_context_free(ctx);
    scan_case_free(&sc);
    return rc;
}
