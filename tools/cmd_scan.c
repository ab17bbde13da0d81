/* mamba scan: the selective scan op alone, on tensors in the layout of the official
 * selective_scan_ref: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L),
 * (dim, N) or (batch, G, N, L); D, delta_bias (dim). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba scan --input CASE.safetensors --output OUT.safetensors [--backend B]\n"
    "                  [--softplus | --no-softplus] [--threads N]\n"
    "\n"
    "Run the selective scan on the tensors of CASE, laid out as mamba_ssm's selective_scan_ref\n"
    "takes them: u, delta (batch, dim, L); A (dim, N), already negative; B, C input-dependent\n"
    "(batch, N, L), constant (dim, N) or grouped (batch, G, N, L); optional D, delta_bias (dim)\n"
    "and z (batch, dim, L). softplus is applied to delta + delta_bias when the header metadata\n"
    "says delta_softplus (or softplus) = true, or when --softplus is given. Writes out\n"
    "(batch, dim, L) and last_state (batch, dim, N) as F32.\n";

typedef struct bc_layout { size_t groups; ptrdiff_t sb, st, sg, sn; int mode; /* 0 var, 1 const, 2 grouped */ } bc_layout;

static int bc_of(const mamba_tensor_t *t, size_t B, size_t D, size_t L, size_t N, bc_layout *o)
{
    if (t->ndim == 3 && (size_t)t->shape[0] == B && (size_t)t->shape[1] == N && (size_t)t->shape[2] == L) {
        *o = (bc_layout){1, (ptrdiff_t)(N * L), 1, 0, (ptrdiff_t)L, 0};
        return 1;
    }
    if (t->ndim == 2 && (size_t)t->shape[0] == D && (size_t)t->shape[1] == N) {
        *o = (bc_layout){D, 0, 0, (ptrdiff_t)N, 1, 1};
        return 1;
    }
    if (t->ndim == 4 && (size_t)t->shape[0] == B && t->shape[1] > 0 && D % (size_t)t->shape[1] == 0 &&
        (size_t)t->shape[2] == N && (size_t)t->shape[3] == L) {
        size_t G = (size_t)t->shape[1];
        *o = (bc_layout){G, (ptrdiff_t)(G * N * L), 1, (ptrdiff_t)(N * L), (ptrdiff_t)L, 2};
        return 1;
    }
    return 0;
}

int cmd_scan(int argc, char **argv)
{
    static const struct option opts[] = {
        {"input", required_argument, 0, 'i'}, {"output", required_argument, 0, 'o'},
        {"backend", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"softplus", no_argument, 0, 'S'}, {"no-softplus", no_argument, 0, 'N'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *in = NULL, *out = NULL, *backend = NULL;
    long threads = 0;
    int softplus = -1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'b': backend = optarg; break;
        case 'S': softplus = 1; break;
        case 'N': softplus = 0; break;
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
    mamba_tensor_file_t *f;
    if (mamba_tensor_file_open(in, &f) != MAMBA_OK) return cli_error("scan", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    static const char *const names[] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"};
    enum { U, DELTA, A, BB, CC, DD, Z, BIAS, NT };
    mamba_tensor_t t[NT];
    float *v[NT] = {0};
    float *o = NULL, *state = NULL;
    mamba_context_t *ctx = NULL;
    int rc = EXIT_RUNTIME;
    for (int i = 0; i < NT; i++) {
        if (mamba_tensor_file_find(f, names[i], &t[i]) != MAMBA_OK) {
            if (i <= CC) {
                cli_error("scan", EXIT_RUNTIME, "%s: required tensor '%s' is missing", in, names[i]);
                goto done;
            }
            continue;
        }
        if (!(v[i] = cli_tensor_f32(&t[i]))) {
            cli_error("scan", EXIT_RUNTIME, "%s: tensor '%s' has dtype %s, expected a float type", in, names[i],
                      mamba_dtype_name(t[i].dtype));
            goto done;
        }
    }
    if (t[U].ndim != 3 || t[A].ndim != 2) {
        cli_error("scan", EXIT_RUNTIME, "%s: u must be (batch, dim, L) and A (dim, N)", in);
        goto done;
    }
    const size_t B = (size_t)t[U].shape[0], D = (size_t)t[U].shape[1], L = (size_t)t[U].shape[2];
    const size_t N = (size_t)t[A].shape[1];
    if (!B || !D || !L || !N || (size_t)t[A].shape[0] != D) {
        cli_error("scan", EXIT_RUNTIME, "%s: u (%zu, %zu, %zu) and A (%lld, %zu) disagree or are empty", in, B, D, L,
                  (long long)t[A].shape[0], N);
        goto done;
    }
    const struct { int i; int ndim; } same[] = {{DELTA, 3}, {Z, 3}};
    for (size_t k = 0; k < 2; k++) {
        const mamba_tensor_t *x = &t[same[k].i];
        if (v[same[k].i] && (x->ndim != 3 || x->shape[0] != (int64_t)B || x->shape[1] != (int64_t)D || x->shape[2] != (int64_t)L)) {
            cli_error("scan", EXIT_RUNTIME, "%s: '%s' must have the shape of u (%zu, %zu, %zu)", in, names[same[k].i], B, D, L);
            goto done;
        }
    }
    for (int i = DD; i <= BIAS; i += 2) /* D and delta_bias */
        if (v[i] && (t[i].ndim != 1 || t[i].shape[0] != (int64_t)D)) {
            cli_error("scan", EXIT_RUNTIME, "%s: '%s' must have shape (%zu)", in, names[i], D);
            goto done;
        }
    bc_layout lb, lc;
    if (!bc_of(&t[BB], B, D, L, N, &lb) || !bc_of(&t[CC], B, D, L, N, &lc)) {
        cli_error("scan", EXIT_RUNTIME,
                  "%s: B and C must be (batch, N, L) = (%zu, %zu, %zu), (dim, N) = (%zu, %zu) or (batch, G, N, L)", in,
                  B, N, L, D, N);
        goto done;
    }
    /* B and C share one grouping in the op; express an input-dependent tensor with dim groups
     * (group stride 0) when the other is constant. */
    if (lb.groups != lc.groups) {
        bc_layout *var = lb.mode == 0 ? &lb : lc.mode == 0 ? &lc : NULL;
        bc_layout *other = var == &lb ? &lc : &lb;
        if (!var || other->mode != 1) {
            cli_error("scan", EXIT_RUNTIME, "%s: B and C with different group counts are supported only as one constant and one input-dependent", in);
            goto done;
        }
        var->groups = D;
        var->sg = 0;
    }
    if (softplus < 0) {
        const char *meta = mamba_tensor_file_metadata(f, "delta_softplus");
        if (!meta) meta = mamba_tensor_file_metadata(f, "softplus");
        softplus = meta && (strcmp(meta, "true") == 0 || strcmp(meta, "True") == 0 || strcmp(meta, "1") == 0);
    }
    o = calloc(B * D * L, sizeof *o);
    state = calloc(B * D * N, sizeof *state);
    if (!o || !state) {
        cli_error("scan", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (!(ctx = cli_context("scan", backend, (int)threads))) goto done;
    const ptrdiff_t sb = (ptrdiff_t)(D * L), sd = (ptrdiff_t)L;
    mamba_scan_args_t a = {
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = lb.groups,
        .u = v[U], .u_sb = sb, .u_st = 1, .u_sd = sd,
        .delta = v[DELTA], .delta_sb = sb, .delta_st = 1, .delta_sd = sd,
        .A = v[A],
        .B = v[BB], .B_sb = lb.sb, .B_st = lb.st, .B_sg = lb.sg, .B_sn = lb.sn,
        .C = v[CC], .C_sb = lc.sb, .C_st = lc.st, .C_sg = lc.sg, .C_sn = lc.sn,
        .D = v[DD], .z = v[Z], .z_sb = sb, .z_st = 1, .z_sd = sd,
        .delta_bias = v[BIAS], .delta_softplus = softplus,
        .out = o, .out_sb = sb, .out_st = 1, .out_sd = sd, .state_out = state,
    };
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
    for (int i = 0; i < NT; i++) free(v[i]);
    free(o);
    free(state);
    mamba_context_free(ctx);
    mamba_tensor_file_close(f);
    return rc;
}
