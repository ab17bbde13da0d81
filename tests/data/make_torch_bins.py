#!/usr/bin/env python3
"""Write pytorch_model.bin test checkpoints from tests/data/models/tiny without torch.

torch.save's zip format: a ZIP archive (stored entries) holding <name>/data.pkl, a protocol-2
pickle of the state dict in which every tensor is
    torch._utils._rebuild_tensor_v2(persistent_load(('storage', torch.FloatStorage, key,
        'cpu', numel)), storage_offset, size, stride, requires_grad, OrderedDict())
and <name>/data/<key>, each storage's raw little-endian bytes. The pickle is emitted opcode by
opcode below (the layout Python's pickler gives such objects); the archive is written with
zipfile, entries padded to 64 bytes through an extra field as torch does.

Output (run from anywhere; rewrites what it made before):
  models/tiny_bin_sharded       two shards and pytorch_model.bin.index.json, long memo opcodes
  models/tiny_bin_state_spaces  state-spaces names, lm_head.weight sharing the embedding's
                                storage, an OrderedDict root with _metadata, state-spaces config
  models/tiny_bin_strided       a transposed (strided) matrix, vectors at storage offsets in one
                                shared storage, a size-1 dimension with an odd stride
  models/tiny_bin_half          matrices in BFloat16Storage, vectors in HalfStorage
  models/tiny_bin_zip64         ZIP64 central directory and end records, entries not aligned
  torch_bad/*.bin               files the reader must refuse
"""
import json
import math
import os
import shutil
import struct
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "models", "tiny")

F32, F16, BF16 = "FloatStorage", "HalfStorage", "BFloat16Storage"
ESIZE = {F32: 4, F16: 2, BF16: 2}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32"
        b, en = e["data_offsets"]
        out[name] = (list(e["shape"]), list(struct.unpack("<%df" % ((en - b) // 4), data[b:en])))
    return out


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


def f16_bytes(values):
    return struct.pack("<%de" % len(values), *values)  # round to nearest even


def bf16_bytes(values):
    out = bytearray()
    for v in values:
        u = struct.unpack("<I", struct.pack("<f", v))[0]
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even (finite values)
        out += struct.pack("<H", u)
    return bytes(out)


ENCODE = {F32: f32_bytes, F16: f16_bytes, BF16: bf16_bytes}


class Pickler:
    """Protocol-2 opcodes, memoizing every object as Python's pickler does."""

    def __init__(self, long_memo=False):
        self.out = bytearray(b"\x80\x02")
        self.n_memo = 0
        self.long_memo = long_memo
        self.globals = {}

    def put(self):
        i = self.n_memo
        self.n_memo += 1
        if self.long_memo or i > 255:
            self.out += b"r" + struct.pack("<I", i)
        else:
            self.out += b"q" + bytes([i])
        return i

    def get(self, i):
        if self.long_memo or i > 255:
            self.out += b"j" + struct.pack("<I", i)
        else:
            self.out += b"h" + bytes([i])

    def string(self, s):
        b = s.encode()
        self.out += b"X" + struct.pack("<I", len(b)) + b
        self.put()

    def int(self, v):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        elif -2**31 <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            n = (v.bit_length() + 8) // 8
            self.out += b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)

    def glob(self, module, name):
        if (module, name) in self.globals:
            self.get(self.globals[(module, name)])
            return
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.globals[(module, name)] = self.put()

    def tuple_of_ints(self, values):
        if len(values) == 0:
            self.out += b")"
            return
        if len(values) > 3:
            self.out += b"("
        for v in values:
            self.int(v)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")
        self.put()

    def ordered_dict(self):
        self.glob("collections", "OrderedDict")
        self.out += b")R"
        self.put()

    def tensor(self, t):
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.out += b"(("
        self.string("storage")
        self.glob("torch", t["cls"])
        self.string(t["key"])
        self.string("cpu")
        self.int(t["numel"])
        self.out += b"t"
        self.put()
        self.out += b"Q"
        self.int(t["offset"])
        self.tuple_of_ints(t["size"])
        self.tuple_of_ints(t["stride"])
        self.out += b"\x89"
        self.ordered_dict()
        self.out += b"t"
        self.put()
        self.out += b"R"
        self.put()

    def items(self, pairs, emit_value):
        """SETITEMS in batches of 1000, SETITEM for a batch of one."""
        for i in range(0, len(pairs), 1000):
            batch = pairs[i:i + 1000]
            if len(batch) > 1:
                self.out += b"("
            for k, v in batch:
                self.string(k)
                emit_value(v)
            self.out += b"u" if len(batch) > 1 else b"s"

    def state_dict(self, tensors, metadata=None):
        """tensors: list of (name, tensor); metadata: OrderedDict's _metadata (module -> version)."""
        if metadata is None:
            self.out += b"}"
            self.put()
        else:
            self.ordered_dict()
        self.items(tensors, self.tensor)
        if metadata is not None:
            self.out += b"}"
            self.put()
            self.string("_metadata")
            self.ordered_dict()

            def version(v):
                self.out += b"}"
                self.put()
                self.items([("version", v)], self.int)
            self.items(list(metadata.items()), version)
            self.out += b"s" + b"b"
        self.out += b"."
        return bytes(self.out)


def contiguous(size):
    stride, s = [], 1
    for d in reversed(size):
        stride.insert(0, s)
        s *= d
    return stride


def plain(weights, cls_of=lambda name, shape: F32, rename=lambda n: n):
    """Each tensor in its own storage, contiguous: (tensors, storages)."""
    tensors, storages = [], {}
    for i, (name, (shape, values)) in enumerate(weights.items()):
        cls = cls_of(name, shape)
        key = str(i)
        storages[key] = ENCODE[cls](values)
        tensors.append((rename(name), {"cls": cls, "key": key, "numel": len(values), "offset": 0,
                                       "size": shape, "stride": contiguous(shape)}))
    return tensors, storages


def write_archive(path, record, pickle_bytes, storages, align=64, zip64=False, compress=False):
    """The archive as torch.save lays it out: data.pkl, byteorder, data/<key>..., version."""
    entries = [(record + "/data.pkl", pickle_bytes), (record + "/byteorder", b"little")]
    entries += [(record + "/data/" + k, v) for k, v in storages.items()]
    entries += [(record + "/version", b"3\n")]
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    if zip64:
        # small limits make zipfile write ZIP64 extra fields, a ZIP64 end record and its locator
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1024, 4
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED if compress and "/data/" in name else zipfile.ZIP_STORED
                if align:
                    local_zip64 = 20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0
                    start = z.fp.tell() + 30 + len(name.encode()) + 4 + local_zip64
                    pad = -start % align
                    info.extra = struct.pack("<HH", 0x6c6d, pad) + bytes(pad)
                z.writestr(info, data)
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved
    check_archive(path, align if not compress else 0)


def check_archive(path, align):
    with open(path, "rb") as f:
        raw = f.read()
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        for info in z.infolist():
            nlen, xlen = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + nlen + xlen
            assert not align or start % align == 0, (path, info.filename, start)


def load_archive(path):
    """Read an archive back with Python's own unpickler (stub globals, no torch): name -> (dtype, shape,
    row-major values), as an independent check of what the generator wrote."""
    import collections
    import pickle

    with zipfile.ZipFile(path) as z:
        record = [n for n in z.namelist() if n.endswith("/data.pkl")][0][:-len("/data.pkl")]

        def rebuild(storage, offset, size, stride, requires_grad, hooks):
            cls, values = storage
            out, idx = [], [0] * len(size)
            for _ in range(math.prod(size)):
                out.append(values[offset + sum(i * s for i, s in zip(idx, stride))])
                for d in reversed(range(len(size))):
                    idx[d] += 1
                    if idx[d] < size[d]:
                        break
                    idx[d] = 0
            return cls, list(size), out

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                allowed = {("collections", "OrderedDict"): collections.OrderedDict,
                           ("torch._utils", "_rebuild_tensor_v2"): rebuild}
                if module == "torch" and name in ESIZE:
                    return name
                return allowed[(module, name)]

            def persistent_load(self, pid):
                tag, cls, key, location, numel = pid
                raw = z.read(record + "/data/" + key)
                assert len(raw) == numel * ESIZE[cls]
                if cls == F32:
                    values = struct.unpack("<%df" % numel, raw)
                elif cls == F16:
                    values = struct.unpack("<%de" % numel, raw)
                else:
                    values = [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                              for h in struct.unpack("<%dH" % numel, raw)]
                return cls, values

        import io
        return Unpickler(io.BytesIO(z.read(record + "/data.pkl"))).load()


def check_values(path, weights, rename=lambda n: n, cls_of=lambda name, shape: F32):
    loaded = load_archive(path)
    for name, (cls, shape, values) in loaded.items():
        src = {rename(n): n for n in weights}.get(name, "backbone.embeddings.weight")
        want_shape, want = weights[src]
        assert cls == cls_of(src, want_shape) and shape == want_shape, (path, name)
        if cls == F32:
            assert values == want, (path, name)
        else:
            enc = ENCODE[cls](want)
            assert ENCODE[cls](values) == enc, (path, name)


def write_config(d, cfg):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def fresh_dir(*parts):
    d = os.path.join(HERE, *parts)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def tiny_config():
    with open(os.path.join(TINY, "config.json")) as f:
        return json.load(f)


def sharded(weights):
    d = fresh_dir("models", "tiny_bin_sharded")
    names = list(weights)
    halves = [names[:len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for k, part in enumerate(halves):
        fname = "pytorch_model-%05d-of-00002.bin" % (k + 1)
        tensors, storages = plain({n: weights[n] for n in part})
        write_archive(os.path.join(d, fname), fname[:-4], Pickler(long_memo=True).state_dict(tensors), storages)
        weight_map.update({n: fname for n in part})
        check_values(os.path.join(d, fname), {n: weights[n] for n in part})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(4 * len(v) for _, v in weights.values())},
                   "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    write_config(d, tiny_config())


def state_spaces(weights):
    d = fresh_dir("models", "tiny_bin_state_spaces")
    rename = {"backbone.embeddings.weight": "backbone.embedding.weight"}
    tensors, storages = plain(weights, rename=lambda n: rename.get(n, n))
    emb = dict(tensors)["backbone.embedding.weight"]
    tensors.append(("lm_head.weight", dict(emb)))  # the tied head: the embedding's storage again
    modules = [""] + sorted({n.rsplit(".", 1)[0] for n, _ in tensors})
    pkl = Pickler().state_dict(tensors, metadata={m: 1 for m in modules})
    write_archive(os.path.join(d, "pytorch_model.bin"), "archive", pkl, storages)
    check_values(os.path.join(d, "pytorch_model.bin"), weights, rename=lambda n: rename.get(n, n))
    write_config(d, {"d_model": 32, "n_layer": 2, "vocab_size": 61, "pad_vocab_size_multiple": 8,
                     "ssm_cfg": {"d_state": 8, "dt_rank": 4}, "rms_norm": True, "residual_in_fp32": True,
                     "fused_add_norm": True, "tie_embeddings": True})


def strided(weights):
    d = fresh_dir("models", "tiny_bin_strided")
    tensors, storages = plain(weights)
    by_name = dict(tensors)
    # in_proj of layer 0 stored transposed: the storage holds W^T, the tensor is its transpose
    name = "backbone.layers.0.mixer.in_proj.weight"
    shape, values = weights[name]
    rows, cols = shape
    storages[by_name[name]["key"]] = f32_bytes([values[r * cols + c] for c in range(cols) for r in range(rows)])
    by_name[name].update(stride=[1, rows])
    # the 1-D tensors of layer 1, one after another in one storage, each at its offset
    shared, offset = [], 0
    key = "shared"
    for n, t in tensors:
        if n.startswith("backbone.layers.1.") and len(t["size"]) == 1:
            del storages[t["key"]]
            t.update(key=key, offset=offset)
            shared += weights[n][1]
            offset += len(weights[n][1])
    for n, t in tensors:
        if t["key"] == key:
            t["numel"] = len(shared)
    storages[key] = f32_bytes(shared)
    # conv1d weight (64, 1, 4): a size-1 dimension's stride is irrelevant to its layout
    by_name["backbone.layers.1.mixer.conv1d.weight"]["stride"] = [4, 999, 1]
    write_archive(os.path.join(d, "pytorch_model.bin"), "pytorch_model", Pickler().state_dict(tensors), storages)
    check_values(os.path.join(d, "pytorch_model.bin"), weights)
    write_config(d, tiny_config())


def half(weights):
    d = fresh_dir("models", "tiny_bin_half")
    cls_of = lambda n, shape: BF16 if len(shape) == 2 else F16  # noqa: E731
    tensors, storages = plain(weights, cls_of=cls_of)
    write_archive(os.path.join(d, "pytorch_model.bin"), "pytorch_model", Pickler().state_dict(tensors), storages)
    check_values(os.path.join(d, "pytorch_model.bin"), weights, cls_of=cls_of)
    write_config(d, tiny_config())


def zip64(weights):
    d = fresh_dir("models", "tiny_bin_zip64")
    tensors, storages = plain(weights)
    write_archive(os.path.join(d, "pytorch_model.bin"), "pytorch_model", Pickler().state_dict(tensors), storages,
                  align=0, zip64=True)
    with open(os.path.join(d, "pytorch_model.bin"), "rb") as f:
        raw = f.read()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # the ZIP64 end record and locator
    check_values(os.path.join(d, "pytorch_model.bin"), weights)
    write_config(d, tiny_config())


def bad(weights):
    d = fresh_dir("torch_bad")

    def raw_pickle(name, body):
        write_archive(os.path.join(d, name), "pytorch_model", body, {})

    # code execution through REDUCE of an imported callable: refused at the GLOBAL
    raw_pickle("global_os_system.bin", b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwned\x85R.")
    raw_pickle("global_builtins_eval.bin",
               b"\x80\x02cbuiltins\neval\nq\x00X\x0b\x00\x00\x00print(1234)\x85R.")
    raw_pickle("opcode_unknown.bin", b"\x80\x02}q\x00\xff.")
    # protocol 4's way to import: STACK_GLOBAL of two strings
    raw_pickle("opcode_stack_global.bin", b"\x80\x02X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93.")
    raw_pickle("protocol5.bin", b"\x80\x05}q\x00.")
    raw_pickle("marks_too_deep.bin", b"\x80\x02" + b"(" * 100 + b"t" * 100 + b".")
    raw_pickle("memo_skips.bin", b"\x80\x02}q\x05.")
    raw_pickle("not_a_dict.bin", b"\x80\x02K\x07.")
    # the legacy format's first pickle: PROTO 2, the magic number as LONG1, STOP
    with open(os.path.join(d, "legacy_format.bin"), "wb") as f:
        f.write(b"\x80\x02\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little") + b".")
    tensors, storages = plain(weights)
    pkl = Pickler().state_dict(tensors)
    write_archive(os.path.join(d, "compressed.bin"), "pytorch_model", pkl, storages, compress=True)
    good = os.path.join(d, "good.bin")
    write_archive(good, "pytorch_model", pkl, storages)
    with open(good, "rb") as f:
        raw = f.read()
    os.remove(good)
    with open(os.path.join(d, "truncated.bin"), "wb") as f:
        f.write(raw[:len(raw) // 2])

    def variant(name, change):
        ts = [(n, dict(t)) for n, t in tensors]
        st = dict(storages)
        change(dict(ts), st)
        write_archive(os.path.join(d, name), "pytorch_model", Pickler().state_dict(ts), st)

    def offset_out_of_range(ts, st):
        ts["backbone.layers.0.mixer.D"]["offset"] = 1
    variant("offset_out_of_range.bin", offset_out_of_range)

    def storage_missing(ts, st):
        del st[ts["backbone.norm_f.weight"]["key"]]
    variant("storage_missing.bin", storage_missing)

    def numel_mismatch(ts, st):
        ts["backbone.layers.1.mixer.A_log"]["numel"] += 1
    variant("numel_mismatch.bin", numel_mismatch)


def main():
    weights = read_safetensors(os.path.join(TINY, "model.safetensors"))
    sharded(weights)
    state_spaces(weights)
    strided(weights)
    half(weights)
    zip64(weights)
    bad(weights)


if __name__ == "__main__":
    main()
