/* The restricted pickle interpreter. Values live in one arena and are referred to by index;
 * the stack, the memo, tuples and dicts hold indices. Nothing recurses: nesting costs no C
 * stack, and every count (bytes, values, stack, marks, memo) is bounded. */
#include <stdlib.h>
#include <string.h>

#include "pickle_reader.h"
#include "zip_reader.h"
#include "api/alloc.h"

/* values (about 25 a tensor) and tuple items of one pickle */
#define MAX_VALUES ((size_t)1 << 22)
#define MAX_ITEMS ((size_t)1 << 24)
#define NO_PAIR UINT32_MAX

typedef enum kind { K_NONE, K_BOOL, K_INT, K_STR, K_TUPLE, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR } kind;
static const char *const kind_names[] = {"None", "bool", "int", "str", "tuple", "dict", "global", "storage", "tensor"};

typedef enum global { G_ORDERED_DICT, G_REBUILD_TENSOR, G_FLOAT_STORAGE, G_HALF_STORAGE, G_BF16_STORAGE } global;
static const struct { const char *module, *name; } globals[] = {
    [G_ORDERED_DICT] = {"collections", "OrderedDict"},
    [G_REBUILD_TENSOR] = {"torch._utils", "_rebuild_tensor_v2"},
    [G_FLOAT_STORAGE] = {"torch", "FloatStorage"},
    [G_HALF_STORAGE] = {"torch", "HalfStorage"},
    [G_BF16_STORAGE] = {"torch", "BFloat16Storage"},
};

/* INT/BOOL: i. STR: bytes [a, a + b) of the pickle. TUPLE: items [a, a + b). DICT: pairs linked
 * from a to b, i of them. GLOBAL: i is the global. STORAGE, TENSOR: record a. */
typedef struct val {
    kind kind;
    uint32_t a, b;
    int64_t i;
} val;

typedef struct pair { uint32_t key, value, next; } pair;
typedef struct storage_rec { mamba_dtype_t dtype; uint32_t key; uint64_t numel; } storage_rec;
typedef struct tensor_rec {
    uint32_t storage;   /* record */
    uint64_t offset;
    int ndim;
    int64_t size[MAMBA_MAX_DIMS], stride[MAMBA_MAX_DIMS];
} tensor_rec;

typedef struct vm {
    const unsigned char *data;
    size_t len, pos, op_pos;
    const char *where;
    char *err;
    val *vals; size_t n_vals, cap_vals;
    uint32_t *items; size_t n_items, cap_items;
    pair *pairs; size_t n_pairs, cap_pairs;
    storage_rec *storages; size_t n_storages, cap_storages;
    tensor_rec *tensors; size_t n_tensors, cap_tensors;
    uint32_t *stack; size_t n_stack, cap_stack;
    uint32_t *memo; size_t n_memo, cap_memo;
    size_t marks[MB_PICKLE_MAX_MARKS]; size_t n_marks;
} vm;

static const struct { unsigned char op; const char *name; } opcode_names[] = {
    {'(', "MARK"}, {'.', "STOP"}, {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"}, {'F', "FLOAT"},
    {'I', "INT"}, {'J', "BININT"}, {'K', "BININT1"}, {'L', "LONG"}, {'M', "BININT2"}, {'N', "NONE"},
    {'P', "PERSID"}, {'Q', "BINPERSID"}, {'R', "REDUCE"}, {'S', "STRING"}, {'T', "BINSTRING"},
    {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"}, {'X', "BINUNICODE"}, {'a', "APPEND"}, {'b', "BUILD"},
    {'c', "GLOBAL"}, {'d', "DICT"}, {'}', "EMPTY_DICT"}, {'e', "APPENDS"}, {'g', "GET"}, {'h', "BINGET"},
    {'i', "INST"}, {'j', "LONG_BINGET"}, {'l', "LIST"}, {']', "EMPTY_LIST"}, {'o', "OBJ"}, {'p', "PUT"},
    {'q', "BINPUT"}, {'r', "LONG_BINPUT"}, {'s', "SETITEM"}, {'t', "TUPLE"}, {')', "EMPTY_TUPLE"},
    {'u', "SETITEMS"}, {'G', "BINFLOAT"}, {0x80, "PROTO"}, {0x81, "NEWOBJ"}, {0x82, "EXT1"},
    {0x83, "EXT2"}, {0x84, "EXT4"}, {0x85, "TUPLE1"}, {0x86, "TUPLE2"}, {0x87, "TUPLE3"},
    {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"}, {0x8a, "LONG1"}, {0x8b, "LONG4"}, {'B', "BINBYTES"},
    {'C', "SHORT_BINBYTES"}, {0x8c, "SHORT_BINUNICODE"}, {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"},
    {0x8f, "EMPTY_SET"}, {0x90, "ADDITEMS"}, {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"},
    {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"}, {0x95, "FRAME"}, {0x96, "BYTEARRAY8"},
    {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
};

static const char *opcode_name(unsigned char op)
{
    for (size_t i = 0; i < sizeof opcode_names / sizeof opcode_names[0]; i++)
        if (opcode_names[i].op == op) return opcode_names[i].name;
    return NULL;
}

static mamba_status_t fail(vm *m, const char *what)
{
    const char *op = opcode_name(m->data[m->op_pos]);
    return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: %s (opcode %s at byte %zu)", m->where, what, op ? op : "?",
                     m->op_pos);
}

static mamba_status_t oom(vm *m)
{
    return mb_seterr(m->err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory running the pickle", m->where);
}

/* Room for one more element in *p (n used of *cap); 0 on allocation failure. */
static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return 1;
    const size_t want = *cap ? 2 * *cap : 64;
    void *q = mb_realloc(*p, want * elem);
    if (!q) return 0;
    *p = q;
    *cap = want;
    return 1;
}
#define GROW(m, arr, n, cap) grow((void **)&(m)->arr, &(m)->cap, (m)->n, sizeof *(m)->arr)

static mamba_status_t new_val(vm *m, kind k, uint32_t a, uint32_t b, int64_t i, uint32_t *out)
{
    if (m->n_vals >= MAX_VALUES) return fail(m, "more objects than a state dict needs (limit reached)");
    if (!GROW(m, vals, n_vals, cap_vals)) return oom(m);
    m->vals[m->n_vals] = (val){k, a, b, i};
    *out = (uint32_t)m->n_vals++;
    return MAMBA_OK;
}

static mamba_status_t push(vm *m, uint32_t v)
{
    if (m->n_stack >= MB_PICKLE_MAX_STACK) return fail(m, "stack too deep");
    if (!GROW(m, stack, n_stack, cap_stack)) return oom(m);
    m->stack[m->n_stack++] = v;
    return MAMBA_OK;
}

static mamba_status_t push_new(vm *m, kind k, uint32_t a, uint32_t b, int64_t i)
{
    uint32_t v = 0;
    mamba_status_t st = new_val(m, k, a, b, i, &v);
    return st != MAMBA_OK ? st : push(m, v);
}

/* Values above the innermost mark. */
static size_t above_mark(const vm *m) { return m->n_stack - (m->n_marks ? m->marks[m->n_marks - 1] : 0); }

static mamba_status_t pop(vm *m, uint32_t *v)
{
    if (above_mark(m) == 0 || !m->stack) return fail(m, "stack underflow");
    *v = m->stack[--m->n_stack];
    return MAMBA_OK;
}

static mamba_status_t pop_mark(vm *m, size_t *base)
{
    if (m->n_marks == 0) return fail(m, "no MARK to close");
    *base = m->marks[--m->n_marks];
    return MAMBA_OK;
}

static int need(const vm *m, size_t k) { return m->len - m->pos >= k; }

static uint64_t read_le(const unsigned char *p, size_t k)
{
    uint64_t x = 0;
    for (size_t i = k; i-- > 0;) x = x << 8 | p[i];
    return x;
}

/* A tuple of the values [base, n_stack) of the stack, which it replaces. */
static mamba_status_t make_tuple(vm *m, size_t base)
{
    const size_t n = m->n_stack - base;
    if (m->n_items + n > MAX_ITEMS) return fail(m, "more tuple items than a state dict needs (limit reached)");
    while (m->cap_items < m->n_items + n)
        if (!grow((void **)&m->items, &m->cap_items, m->cap_items, sizeof *m->items)) return oom(m);
    const uint32_t first = (uint32_t)m->n_items;
    if (n) memcpy(m->items + m->n_items, m->stack + base, n * sizeof *m->items);
    m->n_items += n;
    m->n_stack = base;
    return push_new(m, K_TUPLE, first, (uint32_t)n, 0);
}

static mamba_status_t dict_add(vm *m, uint32_t dict, uint32_t key, uint32_t value)
{
    if (m->vals[dict].kind != K_DICT) return fail(m, "setting an item of something that is not a dict");
    if (!GROW(m, pairs, n_pairs, cap_pairs)) return oom(m);
    const uint32_t p = (uint32_t)m->n_pairs++;
    m->pairs[p] = (pair){key, value, NO_PAIR};
    val *d = &m->vals[dict];
    if (d->a == NO_PAIR) d->a = p; else m->pairs[d->b].next = p;
    d->b = p;
    d->i++;
    return MAMBA_OK;
}

static const val *item(const vm *m, const val *tuple, uint32_t k) { return &m->vals[m->items[tuple->a + k]]; }

static int is_int_tuple(const vm *m, const val *t, int64_t min)
{
    if (t->kind != K_TUPLE) return 0;
    for (uint32_t k = 0; k < t->b; k++)
        if (item(m, t, k)->kind != K_INT || item(m, t, k)->i < min) return 0;
    return 1;
}

static mamba_status_t op_global(vm *m)
{
    const char *line[2];
    size_t n[2];
    for (int k = 0; k < 2; k++) {
        const size_t avail = m->len - m->pos < MB_PICKLE_MAX_STR ? m->len - m->pos : MB_PICKLE_MAX_STR;
        const unsigned char *nl = memchr(m->data + m->pos, '\n', avail);
        if (!nl) return fail(m, "GLOBAL's module or name is not a line");
        line[k] = (const char *)m->data + m->pos;
        n[k] = (size_t)(nl - (m->data + m->pos));
        m->pos += n[k] + 1;
    }
    for (size_t g = 0; g < sizeof globals / sizeof globals[0]; g++)
        if (strlen(globals[g].module) == n[0] && memcmp(globals[g].module, line[0], n[0]) == 0 &&
            strlen(globals[g].name) == n[1] && memcmp(globals[g].name, line[1], n[1]) == 0)
            return push_new(m, K_GLOBAL, 0, 0, (int64_t)g);
    char qm[96], qn[96];
    return mb_seterr(m->err, MAMBA_ERR_FORMAT,
                     "%s: global '%s.%s' (GLOBAL at byte %zu) is not allowed: a PyTorch checkpoint names only "
                     "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.FloatStorage, "
                     "torch.HalfStorage or torch.BFloat16Storage", m->where, mb_quote(qm, sizeof qm, line[0], n[0]),
                     mb_quote(qn, sizeof qn, line[1], n[1]), m->op_pos);
}

static int str_is(const vm *m, const val *v, const char *s)
{
    return v->kind == K_STR && v->b == strlen(s) && memcmp(m->data + v->a, s, v->b) == 0;
}

/* ('storage', <storage class>, key, location, numel) */
static mamba_status_t op_binpersid(vm *m)
{
    uint32_t pid = 0;
    mamba_status_t st = pop(m, &pid);
    if (st != MAMBA_OK) return st;
    const val *t = &m->vals[pid];
    if (t->kind != K_TUPLE || t->b != 5 || !str_is(m, item(m, t, 0), "storage"))
        return fail(m, "a persistent id that is not ('storage', class, key, location, numel)");
    const val *cls = item(m, t, 1), *key = item(m, t, 2), *loc = item(m, t, 3), *numel = item(m, t, 4);
    if (cls->kind != K_GLOBAL || cls->i < G_FLOAT_STORAGE)
        return fail(m, "a persistent id whose class is not torch.FloatStorage, HalfStorage or BFloat16Storage");
    if (key->kind != K_STR || loc->kind != K_STR || numel->kind != K_INT || numel->i < 0)
        return fail(m, "a storage's key, location or element count has the wrong type");
    if (!GROW(m, storages, n_storages, cap_storages)) return oom(m);
    const mamba_dtype_t dt = cls->i == G_FLOAT_STORAGE ? MAMBA_F32 : cls->i == G_HALF_STORAGE ? MAMBA_F16 : MAMBA_BF16;
    m->storages[m->n_storages] = (storage_rec){dt, m->items[t->a + 2], (uint64_t)numel->i};
    return push_new(m, K_STORAGE, (uint32_t)m->n_storages++, 0, 0);
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks) */
static mamba_status_t rebuild_tensor(vm *m, const val *args)
{
    if (args->b != 6) return fail(m, "_rebuild_tensor_v2 called with other than 6 arguments");
    const val *s = item(m, args, 0), *off = item(m, args, 1), *size = item(m, args, 2), *stride = item(m, args, 3);
    const val *grad = item(m, args, 4), *hooks = item(m, args, 5);
    if (s->kind != K_STORAGE || off->kind != K_INT || off->i < 0)
        return fail(m, "_rebuild_tensor_v2: the storage or the storage offset is not one");
    if (!is_int_tuple(m, size, 0) || !is_int_tuple(m, stride, 0) || size->b != stride->b)
        return fail(m, "_rebuild_tensor_v2: size and stride are not tuples of as many non-negative ints");
    if (size->b > MAMBA_MAX_DIMS) return fail(m, "_rebuild_tensor_v2: more dimensions than supported");
    if (grad->kind != K_BOOL || hooks->kind != K_DICT || hooks->i != 0)
        return fail(m, "_rebuild_tensor_v2: requires_grad is not a bool or backward hooks are not an empty dict");
    if (!GROW(m, tensors, n_tensors, cap_tensors)) return oom(m);
    tensor_rec *r = &m->tensors[m->n_tensors];
    r->storage = s->a;
    r->offset = (uint64_t)off->i;
    r->ndim = (int)size->b;
    for (int d = 0; d < r->ndim; d++) {
        r->size[d] = item(m, size, (uint32_t)d)->i;
        r->stride[d] = item(m, stride, (uint32_t)d)->i;
    }
    return push_new(m, K_TENSOR, (uint32_t)m->n_tensors++, 0, 0);
}

static mamba_status_t op_reduce(vm *m)
{
    uint32_t a = 0, f = 0;
    mamba_status_t st = pop(m, &a);
    if (st == MAMBA_OK) st = pop(m, &f);
    if (st != MAMBA_OK) return st;
    const val *fn = &m->vals[f], *args = &m->vals[a];
    if (fn->kind != K_GLOBAL) return fail(m, "REDUCE of something that is not a global");
    if (args->kind != K_TUPLE) return fail(m, "REDUCE with arguments that are not a tuple");
    if (fn->i == G_ORDERED_DICT) {
        if (args->b != 0) return fail(m, "OrderedDict called with arguments");
        return push_new(m, K_DICT, NO_PAIR, NO_PAIR, 0);
    }
    if (fn->i == G_REBUILD_TENSOR) return rebuild_tensor(m, args);
    char msg[160];
    snprintf(msg, sizeof msg, "REDUCE of %s.%s, which a state dict never calls", globals[fn->i].module,
             globals[fn->i].name);
    return fail(m, msg);
}

/* the pickler sets an OrderedDict's attributes (a state dict's _metadata) with BUILD: the
 * state is checked to be a dict and dropped */
static mamba_status_t op_build(vm *m)
{
    uint32_t state = 0;
    mamba_status_t st = pop(m, &state);
    if (st != MAMBA_OK) return st;
    if (above_mark(m) == 0) return fail(m, "stack underflow");
    if (m->vals[m->stack[m->n_stack - 1]].kind != K_DICT || m->vals[state].kind != K_DICT)
        return fail(m, "BUILD of something other than a dict's attributes");
    return MAMBA_OK;
}

static mamba_status_t op_setitems(vm *m)
{
    size_t base = 0;
    mamba_status_t st = pop_mark(m, &base);
    if (st != MAMBA_OK) return st;
    if ((m->n_stack - base) % 2) return fail(m, "SETITEMS with an odd number of values");
    if (above_mark(m) <= m->n_stack - base) return fail(m, "SETITEMS without a dict below its MARK");
    for (size_t k = base; k < m->n_stack && st == MAMBA_OK; k += 2)
        st = dict_add(m, m->stack[base - 1], m->stack[k], m->stack[k + 1]);
    m->n_stack = base;
    return st;
}

static mamba_status_t op_memo(vm *m, unsigned char op)
{
    const size_t k = op == 'q' || op == 'h' ? 1 : 4;
    if (!need(m, k)) return fail(m, "truncated argument");
    const size_t idx = (size_t)read_le(m->data + m->pos, k);
    m->pos += k;
    if (op == 'h' || op == 'j') {
        if (idx >= m->n_memo) return fail(m, "memo index never stored");
        return push(m, m->memo[idx]);
    }
    if (above_mark(m) == 0) return fail(m, "stack underflow");
    /* Python's pickler numbers its memo entries 0, 1, 2 ...: anything else is refused, which
     * keeps the memo no larger than the pickle */
    if (idx > m->n_memo) return fail(m, "memo index skips ahead");
    if (idx == m->n_memo) {
        if (!GROW(m, memo, n_memo, cap_memo)) return oom(m);
        m->n_memo++;
    }
    m->memo[idx] = m->stack[m->n_stack - 1];
    return MAMBA_OK;
}

static mamba_status_t op_int(vm *m, unsigned char op)
{
    size_t k = op == 'J' ? 4 : op == 'K' ? 1 : op == 'M' ? 2 : 1;
    if (!need(m, k)) return fail(m, "truncated argument");
    int64_t v;
    if (op == 0x8a) {   /* LONG1: a length byte, then that many bytes of two's complement */
        k = m->data[m->pos++];
        if (k > 8) return fail(m, "an integer of more than 64 bits");
        if (!need(m, k)) return fail(m, "truncated argument");
        uint64_t u = read_le(m->data + m->pos, k);
        if (k > 0 && k < 8 && (m->data[m->pos + k - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * k);
        memcpy(&v, &u, sizeof v);
    } else if (op == 'J') {
        const uint32_t u = (uint32_t)read_le(m->data + m->pos, 4);
        v = u >= 0x80000000u ? (int64_t)u - ((int64_t)1 << 32) : (int64_t)u;
    } else {
        v = (int64_t)read_le(m->data + m->pos, k);
    }
    m->pos += k;
    return push_new(m, K_INT, 0, 0, v);
}

static mamba_status_t step(vm *m, unsigned char op, int *stop)
{
    uint32_t b = 0, c = 0;
    size_t base = 0;
    mamba_status_t st;
    switch (op) {
    case '}': return push_new(m, K_DICT, NO_PAIR, NO_PAIR, 0);
    case ')': return push_new(m, K_TUPLE, 0, 0, 0);
    case 'N': return push_new(m, K_NONE, 0, 0, 0);
    case 0x88: return push_new(m, K_BOOL, 0, 0, 1);
    case 0x89: return push_new(m, K_BOOL, 0, 0, 0);
    case '(':
        if (m->n_marks >= MB_PICKLE_MAX_MARKS) return fail(m, "MARKs nested too deep");
        m->marks[m->n_marks++] = m->n_stack;
        return MAMBA_OK;
    case 'X': {
        if (!need(m, 4)) return fail(m, "truncated argument");
        const size_t n = (size_t)read_le(m->data + m->pos, 4);
        m->pos += 4;
        if (n > MB_PICKLE_MAX_STR) return fail(m, "a string longer than a state dict needs");
        if (!need(m, n)) return fail(m, "a string runs past the end of the pickle");
        m->pos += n;
        return push_new(m, K_STR, (uint32_t)(m->pos - n), (uint32_t)n, 0);
    }
    case 'J': case 'K': case 'M': case 0x8a: return op_int(m, op);
    case 't':
        if ((st = pop_mark(m, &base)) != MAMBA_OK) return st;
        return make_tuple(m, base);
    case 0x85: case 0x86: case 0x87:
        if (above_mark(m) < (size_t)(op - 0x84)) return fail(m, "stack underflow");
        return make_tuple(m, m->n_stack - (size_t)(op - 0x84));
    case 'q': case 'r': case 'h': case 'j': return op_memo(m, op);
    case 'c': return op_global(m);
    case 'R': return op_reduce(m);
    case 'b': return op_build(m);
    case 'Q': return op_binpersid(m);
    case 'u': return op_setitems(m);
    case 's':
        if ((st = pop(m, &c)) != MAMBA_OK || (st = pop(m, &b)) != MAMBA_OK) return st;
        if (above_mark(m) == 0) return fail(m, "SETITEM without a dict");
        return dict_add(m, m->stack[m->n_stack - 1], b, c);
    case '.':
        if (m->n_marks != 0 || m->n_stack != 1) return fail(m, "STOP with other than one value on the stack");
        *stop = 1;
        return MAMBA_OK;
    case 0x80: return fail(m, "PROTO after the start");
    default: break;
    }
    const char *name = opcode_name(op);
    if (name)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT,
                         "%s: pickle opcode %s (0x%02x) at byte %zu is not allowed in a PyTorch checkpoint", m->where,
                         name, op, m->op_pos);
    return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: unknown pickle opcode 0x%02x at byte %zu", m->where, op, m->op_pos);
}

static mamba_status_t run(vm *m, uint32_t *result)
{
    if (m->len > MB_PICKLE_MAX_BYTES)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: %zu bytes, more than the limit of %zu for a state dict's pickle",
                         m->where, m->len, MB_PICKLE_MAX_BYTES);
    if (m->len < 2 || m->data[0] != 0x80)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT,
                         "%s: no PROTO opcode at the start: pickle protocol 0 or 1 is not supported (torch.save "
                         "writes protocol 2)", m->where);
    if (m->data[1] != 2)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT,
                         "%s: pickle protocol %u is not supported (torch.save writes protocol 2)", m->where,
                         m->data[1]);
    m->pos = 2;
    int stop = 0;
    while (!stop) {
        if (m->pos >= m->len)
            return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: the pickle ends at byte %zu without STOP: truncated?",
                             m->where, m->len);
        m->op_pos = m->pos;
        const unsigned char op = m->data[m->pos++];
        mamba_status_t st = step(m, op, &stop);
        if (st != MAMBA_OK) return st;
    }
    if (m->pos != m->len)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: %zu bytes after the pickle's STOP", m->where, m->len - m->pos);
    *result = m->stack[0];
    return MAMBA_OK;
}

static void vm_free(vm *m)
{
    free(m->vals); free(m->items); free(m->pairs); free(m->storages); free(m->tensors);
    free(m->stack); free(m->memo);
}

void mb_pickle_free(mb_pk_tensor *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        free(t[i].name);
        free(t[i].key);
    }
    free(t);
}

/* A NUL-terminated copy of a string value; NULL when it holds a NUL (*st says which). */
static char *str_copy(vm *m, const val *v, const char *what, mamba_status_t *st)
{
    if (memchr(m->data + v->a, 0, v->b)) {
        char q[96];
        *st = mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: %s '%s' holds a NUL byte", m->where, what,
                        mb_quote(q, sizeof q, (const char *)m->data + v->a, v->b));
        return NULL;
    }
    char *s = mb_malloc((size_t)v->b + 1);
    if (!s) { *st = oom(m); return NULL; }
    memcpy(s, m->data + v->a, v->b);
    s[v->b] = 0;
    return s;
}

static mamba_status_t extract(vm *m, uint32_t root, mb_pk_tensor **out, size_t *n)
{
    if (!m->vals || root >= m->n_vals)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: the pickle gave no result", m->where);
    const val *d = &m->vals[root];
    if (d->kind != K_DICT)
        return mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: the pickle's result is of type %s, not a dict of tensors", m->where,
                         kind_names[d->kind]);
    mb_pk_tensor *t = mb_calloc(d->i ? (size_t)d->i : 1, sizeof *t);
    if (!t) return oom(m);
    mamba_status_t st = MAMBA_OK;
    size_t k = 0;
    for (uint32_t p = d->a; p != NO_PAIR && st == MAMBA_OK; p = m->pairs[p].next) {
        const val *key = &m->vals[m->pairs[p].key], *v = &m->vals[m->pairs[p].value];
        if (key->kind != K_STR) {
            st = mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: state dict key %zu is of type %s, not a string", m->where, k,
                           kind_names[key->kind]);
            break;
        }
        if (!(t[k].name = str_copy(m, key, "tensor name", &st))) break;
        k++;
        if (v->kind != K_TENSOR) {
            st = mb_seterr(m->err, MAMBA_ERR_FORMAT, "%s: state dict entry '%s' is of type %s, not a tensor", m->where,
                           t[k - 1].name, kind_names[v->kind]);
            break;
        }
        const tensor_rec *r = &m->tensors[v->a];
        const storage_rec *s = &m->storages[r->storage];
        if (!(t[k - 1].key = str_copy(m, &m->vals[s->key], "storage key", &st))) break;
        t[k - 1].dtype = s->dtype;
        t[k - 1].numel = s->numel;
        t[k - 1].offset = r->offset;
        t[k - 1].ndim = r->ndim;
        memcpy(t[k - 1].size, r->size, sizeof r->size);
        memcpy(t[k - 1].stride, r->stride, sizeof r->stride);
    }
    if (st != MAMBA_OK) {
        mb_pickle_free(t, k);
        return st;
    }
    *out = t;
    *n = k;
    return MAMBA_OK;
}

mamba_status_t mb_pickle_state_dict(const unsigned char *data, size_t len, const char *where, mb_pk_tensor **out,
                                    size_t *n, char *err)
{
    *out = NULL;
    *n = 0;
    vm m;
    memset(&m, 0, sizeof m);
    m.data = data;
    m.len = len;
    m.where = where;
    m.err = err;
    uint32_t root = 0;
    mamba_status_t st = run(&m, &root);
    if (st == MAMBA_OK) st = extract(&m, root, out, n);
    vm_free(&m);
    return st;
}
