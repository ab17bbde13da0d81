/* How the selective scan's backward (mb_scan_bwd_op) splits its work and what working memory
 * it needs: the same plan on every backend, so that one formula (tested against
 * mamba_memory_usage) states the memory. Header-only, like util.h.
 *
 * Time is cut into chunks of chunk_len steps. A first pass keeps the state entering each chunk
 * (n_chunks x batch x dim x N floats, the only memory that grows with L besides the partial
 * sums of a time-varying dB/dC); the backward then walks the chunks from the last, recomputes
 * the chunk's states from its boundary state into a history of chunk_len x N floats per
 * channel in flight, and runs the adjoint recurrence back over the chunk.
 *
 * Channels are taken tile at a time (a CPU work item, a GPU work-group), each tile inside one
 * reduction class: the channels whose dB/dC contributions at one time step land on the same
 * elements (one group when a time-varying B or C has a group stride, else every channel). A
 * tile's contributions to a time-varying dB/dC are summed over its channels in a fixed order
 * (GPU: after each chunk, from the contributions kept in cB/cC) and written as its partial sums; a second pass adds the partial sums of the tiles (and of the
 * batch, where B_sb = 0) in index order. Constant-in-time dB/dC, dA, dD and ddelta_bias are
 * accumulated per (batch, channel) and folded in index order at the end.
 *
 * Scratch (floats), with BD = batch x dim, U = batch x n_classes x tiles (the tiles):
 *   H        n_chunks x N x BD                              states entering each chunk
 *   hist     chunk_len x N x slots                          slots: U x tile (GPU: one per
 *                                                           work-item), or one per CPU thread
 *   cB, cC   chunk_len x N x slots each (GPU only), when dB / dC is wanted and that tensor
 *            varies in time: each work-item's contributions over the chunk, which the
 *            work-group then sums per (step, state) over its items in order
 *   PB, PC   U x p_len x N each, when dB / dC is wanted and that tensor varies in time;
 *            p_len = L (GPU: all partials kept), chunk_len (CPU: folded after each chunk)
 *   accA     BD x N when dA is wanted; accB, accC BD x N when dB / dC is wanted and constant
 *   accD, accbias  BD each when wanted
 *   carry    BD x N (CPU only: the adjoint entering each chunk; GPUs keep it in registers)
 * For (1, 1536, 65536, 16), input-dependent B and C, a GPU tile of 64: 256-step chunks, H and
 * hist 24 MiB each, PB and PC 96 MiB each, 240 MiB in all (tested). */
#ifndef MB_API_SCAN_BWD_H
#define MB_API_SCAN_BWD_H

#include <stddef.h>

#include "api/backend.h"

typedef struct mb_scan_bwd_plan {
    size_t chunk_len, n_chunks;
    size_t tile, n_classes, class_size, tiles, units;
    int tv_B, tv_C;   /* dB / dC wanted and B / C vary in time: per-step partial sums */
    int tc_B, tc_C;   /* dB / dC wanted and constant in time: per-channel accumulators */
    size_t slots, p_len;
    size_t seg_chunks; /* the chunk-parallel layout: chunks whose partial sums PB/PC hold at once */
    /* offsets into the scratch and its size, in floats (regions not needed are empty) */
    size_t off_H, off_hist, off_cB, off_cC, off_PB, off_PC, off_accA, off_accB, off_accC, off_accD, off_accbias,
        off_carry, off_S, off_K, total;
} mb_scan_bwd_plan;

#define MB_SCAN_BWD_MAX_CHUNK 512

/* 16 doubled while its square is below len, at most MB_SCAN_BWD_MAX_CHUNK: about sqrt(len), which balances the
 * boundary states (len / chunk_len) against the history (chunk_len). */
static inline size_t mb_scan_bwd_chunk_len(size_t len)
{
    size_t c = 16;
    while (c * c < len && c < MB_SCAN_BWD_MAX_CHUNK) c *= 2;
    return c;
}

/* threads = 0: the GPU layout (history per work-item, partials over all of L, no carry
 * array); threads > 0: the CPU layout (history per thread, partials per chunk, a carry). */
static inline void mb_scan_bwd_plan_init(mb_scan_bwd_plan *p, const mb_scan_bwd_op *op, size_t tile, size_t threads)
{
    const mb_scan_op *f = &op->fwd;
    const size_t B = f->batch, D = f->dim, L = f->len, N = f->d_state, G = f->n_groups ? f->n_groups : 1;
    const size_t BD = B * D;
    p->chunk_len = mb_scan_bwd_chunk_len(L);
    p->n_chunks = (L + p->chunk_len - 1) / p->chunk_len;
    p->tv_B = op->dB.buf && f->B_st != 0;
    p->tv_C = op->dC.buf && f->C_st != 0;
    p->tc_B = op->dB.buf && f->B_st == 0;
    p->tc_C = op->dC.buf && f->C_st == 0;
    const int by_group = G > 1 && ((p->tv_B && f->B_sg != 0) || (p->tv_C && f->C_sg != 0));
    p->n_classes = by_group ? G : 1;
    p->class_size = D / p->n_classes;
    p->tile = tile;
    p->tiles = (p->class_size + tile - 1) / tile;
    p->units = B * p->n_classes * p->tiles;
    p->slots = threads ? threads : p->units * tile;
    p->p_len = threads ? p->chunk_len : L;
    size_t o = 0;
    p->off_H = o;       o += p->n_chunks * N * BD;
    p->off_hist = o;    o += p->chunk_len * N * p->slots;
    p->off_cB = o;      o += !threads && p->tv_B ? p->chunk_len * N * p->slots : 0;
    p->off_cC = o;      o += !threads && p->tv_C ? p->chunk_len * N * p->slots : 0;
    p->off_PB = o;      o += p->tv_B ? p->units * p->p_len * N : 0;
    p->off_PC = o;      o += p->tv_C ? p->units * p->p_len * N : 0;
    p->off_accA = o;    o += op->dA.buf ? BD * N : 0;
    p->off_accB = o;    o += p->tc_B ? BD * N : 0;
    p->off_accC = o;    o += p->tc_C ? BD * N : 0;
    p->off_accD = o;    o += op->dD.buf ? BD : 0;
    p->off_accbias = o; o += op->ddelta_bias.buf ? BD : 0;
    p->off_carry = o;   o += threads ? BD * N : 0;
    p->off_S = p->off_K = o;
    p->seg_chunks = p->n_chunks;
    p->total = o;
}

/* The chunk-parallel layout (CUDA, N <= 16): every chunk of MB_SCAN_BWD_PCHUNK steps is worked
 * on at once. A first pass runs each chunk from a zero state, forward (its end state and the
 * sum of its dt) and backward (the adjoint it passes to the chunk before, from a zero carry);
 * a second pass chains those over the chunks, by channel and state, into the state entering
 * each chunk (H) and the adjoint entering it from the right (K); the main pass then does each
 * chunk's backward on its own. Each chunk keeps its per-channel sums (dA, dD, ddelta_bias, a
 * constant dB/dC), folded over the chunks at the end; a time-varying dB/dC has one partial
 * sum per tile of MB_SCAN_BWD_PTILE channels and step, for seg_chunks chunks at a time (at
 * most `parts` floats for PB and PC), folded after each segment.
 *
 * Scratch (floats), C = n_chunks, BD = batch x dim, U the tiles as above:
 *   S        C x BD           the sum of dt over each chunk (its decay is exp(A S))
 *   H, K     C x N x BD each
 *   PB, PC   U x seg_chunks x chunk_len x N each, when dB / dC is wanted and varies in time
 *   accA, accB, accC   C x BD x N (per chunk); accD, accbias  C x BD
 * For (1, 1536, 65536, 16), input-dependent B and C: 2,048 chunks, H, K and accA 192 MiB each,
 * PB and PC 64 MiB each, 740 MiB in all (tested). */
#define MB_SCAN_BWD_PCHUNK 32
#define MB_SCAN_BWD_PTILE 32
#define MB_SCAN_BWD_PPARTS ((size_t)1 << 25)

/* parts: the floats PB and PC may take (MB_SCAN_BWD_PPARTS unless a test asks for less) */
static inline void mb_scan_bwd_plan_parallel(mb_scan_bwd_plan *p, const mb_scan_bwd_op *op, size_t parts)
{
    const mb_scan_op *f = &op->fwd;
    const size_t B = f->batch, D = f->dim, L = f->len, N = f->d_state;
    const size_t BD = B * D;
    mb_scan_bwd_plan_init(p, op, MB_SCAN_BWD_PTILE, 0);
    /* a work-group stages its chunk's B and C rows once for all its channels: where they vary
     * in time by group, its channels are one group's, whether or not dB/dC is wanted */
    const size_t G = f->n_groups ? f->n_groups : 1;
    if (G > 1 && p->n_classes == 1 && ((f->B_st && f->B_sg) || (f->C_st && f->C_sg))) {
        p->n_classes = G;
        p->class_size = D / G;
        p->tiles = (p->class_size + p->tile - 1) / p->tile;
        p->units = B * p->n_classes * p->tiles;
    }
    p->chunk_len = MB_SCAN_BWD_PCHUNK;
    p->n_chunks = (L + p->chunk_len - 1) / p->chunk_len;
    const size_t C = p->n_chunks, per_chunk = p->units * p->chunk_len * N * (size_t)(p->tv_B + p->tv_C);
    p->seg_chunks = C;
    if (per_chunk && per_chunk * C > parts) p->seg_chunks = parts / per_chunk ? parts / per_chunk : 1;
    p->slots = 0;
    p->p_len = p->seg_chunks * p->chunk_len;
    size_t o = 0;
    p->off_S = o;       o += C * BD;
    p->off_H = o;       o += C * N * BD;
    p->off_K = o;       o += C * N * BD;
    p->off_hist = p->off_cB = p->off_cC = o;
    p->off_PB = o;      o += p->tv_B ? p->units * p->p_len * N : 0;
    p->off_PC = o;      o += p->tv_C ? p->units * p->p_len * N : 0;
    p->off_accA = o;    o += op->dA.buf ? C * BD * N : 0;
    p->off_accB = o;    o += p->tc_B ? C * BD * N : 0;
    p->off_accC = o;    o += p->tc_C ? C * BD * N : 0;
    p->off_accD = o;    o += op->dD.buf ? C * BD : 0;
    p->off_accbias = o; o += op->ddelta_bias.buf ? C * BD : 0;
    p->off_carry = o;
    p->total = o;
}

#endif /* MB_API_SCAN_BWD_H */
