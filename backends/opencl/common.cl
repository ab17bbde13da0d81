/* OpenCL C 1.2 helpers of both programs (kernels.cl, train_kernels.cl): each is built from this
 * file's text followed by its own. */

/* Tree sum over a work-group of a power-of-two size of at most 256 items; every item gets it. */
inline float group_sum(float v, __local float *tmp)
{
    const uint l = get_local_id(0), n = get_local_size(0);
    tmp[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = n / 2; s > 0; s >>= 1) {
        if (l < s) tmp[l] += tmp[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = tmp[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}
