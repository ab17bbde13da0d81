#!/usr/bin/env python3
"""Differential check of libmamba's tokenizer against Hugging Face tokenizers on random text:
  python3 scripts/tokenizer-diff.py BUILD_DIR TOKENIZER_JSON [N] [SEED]
Needs `tokenizers` importable (a venv: pip install tokenizers); calls libmamba through ctypes.
Encodes N random texts both ways (special tokens recognized, and as text) and decodes random
ids both ways; prints the first differences and exits 1 if there are any."""
import ctypes
import random
import sys

from tokenizers import Tokenizer

build, path = sys.argv[1], sys.argv[2]
n_texts = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)

lib = ctypes.CDLL(build + "/libmamba.so")
lib.mamba_last_error.restype = ctypes.c_char_p
tok = ctypes.c_void_p()
if lib.mamba_tokenizer_load(path.encode(), ctypes.byref(tok)) != 0:
    sys.exit("load: " + lib.mamba_last_error(None).decode())
hf = Tokenizer.from_file(path)
hf_text = Tokenizer.from_file(path)
hf_text.encode_special_tokens = True
vocab = lib.mamba_tokenizer_vocab_size.restype = ctypes.c_size_t
vocab = lib.mamba_tokenizer_vocab_size(tok)


def ours(text, flags):
    b = text.encode("utf-8")
    n = ctypes.c_size_t()
    cap = 3 * len(b) + 1
    ids = (ctypes.c_int32 * cap)()
    st = lib.mamba_tokenize(tok, b, ctypes.c_size_t(len(b)), flags, ids, ctypes.c_size_t(cap), ctypes.byref(n))
    if st != 0:
        raise RuntimeError(lib.mamba_last_error(None).decode())
    return list(ids[: n.value])


def our_decode(ids):
    arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
    n = ctypes.c_size_t()
    if lib.mamba_detokenize(tok, arr, ctypes.c_size_t(len(ids)), None, ctypes.c_size_t(0), ctypes.byref(n)) != 0:
        return None  # an id without a token: tokenizers skips it, libmamba refuses
    buf = ctypes.create_string_buffer(n.value + 1)
    lib.mamba_detokenize(tok, arr, ctypes.c_size_t(len(ids)), buf, ctypes.c_size_t(n.value), ctypes.byref(n))
    return buf.raw[: n.value].decode("utf-8")


added = [t.content for t in hf.get_added_tokens_decoder().values()]
pieces = [
    lambda: rng.choice(["the", "The", "hello", "world", "it", "a", "aaaa", "x", "hi", "Ab", "café", "naïve"]),
    lambda: " " * rng.randint(1, 30),
    lambda: rng.choice(["\t", "\n", "\r\n", "\n\n\n", "\u00a0", "\u3000", "\u2028", "\u0085", "\u000b", "\u000c"]),
    lambda: rng.choice(["'s", "'S", "'ll", "'re", "'ve", "'m", "'d", "'t", "’s", "'", "''"]),
    lambda: str(rng.randint(0, 10 ** rng.randint(1, 12))),
    lambda: "".join(rng.choice("!?.,;:-_()[]{}<>|/\\\"#$%&*+=@^`~") for _ in range(rng.randint(1, 6))),
    lambda: rng.choice(["\u0301", "\u0308", "\u0338", "\u0327\u0301", "e\u0301", "\u1100\u1161\u11a8", "\u3099", "\u0958"]),
    lambda: "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 8))),
    lambda: rng.choice(["\U0001F600", "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F1FA\U0001F1F8", "1\uFE0F\u20E3"]),
    lambda: rng.choice(added) if added else "",
    lambda: rng.choice(["<|endof", "<|", "|>", "<|endoftext|", "endoftext|>"]),
    lambda: chr(rng.choice([0, 1, 0x1C, 0x1D, 0x1E, 0x1F, 0x7F, 0x200B, 0x200D, 0xFEFF, 0x202E])),
    lambda: chr(rng.randint(0x80, 0x2FFF)),
    lambda: chr(rng.randint(0x10000, 0x10FFFF)) if rng.random() < 0.5 else chr(rng.randint(0xA000, 0xD7FF)),
]


def random_text():
    return "".join(rng.choice(pieces)() for _ in range(rng.randint(0, 25)))


bad = 0
for i in range(n_texts):
    t = random_text()
    for flags, ref in ((0, hf), (1, hf_text)):
        want = ref.encode(t).ids
        got = ours(t, flags)
        if got != want:
            bad += 1
            if bad <= 10:
                print("encode differs (flags %d): %r\n  ours %s\n  hf   %s" % (flags, t, got, want))
    ids = [rng.randrange(vocab) for _ in range(rng.randint(0, 12))]
    mine = our_decode(ids)
    if mine is not None and mine != hf.decode(ids, skip_special_tokens=False):
        bad += 1
        if bad <= 10:
            print("decode differs: %s: %r vs %r" % (ids, our_decode(ids), hf.decode(ids, skip_special_tokens=False)))
print("%d texts, %d differences" % (n_texts, bad))
lib.mamba_tokenizer_free(tok)
sys.exit(1 if bad else 0)
