#!/usr/bin/env python3
"""Print the two tables that make the tokenizer's Unicode behave as Hugging Face tokenizers'
on Debian 12's libraries: the code points tokenizers' NFC does not normalize but utf8proc does
(core/tokenizer_unicode.c, hf_inert), and the letters and digits tokenizers' split pattern
knows but Debian's Oniguruma does not (core/tokenizer_split.c, the pattern's classes).

NFC:
tokenizers normalizes with unicode-normalization-alignments 0.1.12, whose tables are Unicode
9.0; utf8proc 2.8.0 (Debian 12) has Unicode 15.0. Characters assigned since 9.0 that have a
combining class, a canonical decomposition or a canonical composition are unknown to the
former: it treats them as starters that neither decompose nor compose, so nothing reorders or
composes across them. This probes tokenizers for every code point that utf8proc does not treat
that way (a mark is known if tokenizers reorders it before U+0345, a decomposable character if
tokenizers' NFD changes it, another composing character if tokenizers composes one of its
pairs), checks that splitting the text at the unknown ones gives tokenizers' NFC on random
strings, and prints the C table.

The split pattern: tokenizers 0.23.3 runs it with the Oniguruma it bundles (6.9.10, Unicode
16.0); Debian 12's libonig5 is 6.9.8 (Unicode 14.0). A code point is a letter to tokenizers
when "a" followed by it is one piece of its ByteLevel pre-tokenizer, a digit when "1" followed
by it is; the ones Debian's \p{L} / \p{N} lack are printed as class ranges.
  python3 scripts/tokenizer-unicode-tables.py     (tokenizers importable: pip install tokenizers)"""
import ctypes
import random

from tokenizers import normalizers, pre_tokenizers

u8 = ctypes.CDLL("libutf8proc.so.2")
libc = ctypes.CDLL(None)


class Prop(ctypes.Structure):
    _fields_ = [("category", ctypes.c_int16), ("combining_class", ctypes.c_int16), ("bidi_class", ctypes.c_int16),
                ("decomp_type", ctypes.c_int16), ("decomp_seqindex", ctypes.c_uint16),
                ("casefold_seqindex", ctypes.c_uint16), ("uppercase_seqindex", ctypes.c_uint16),
                ("lowercase_seqindex", ctypes.c_uint16), ("titlecase_seqindex", ctypes.c_uint16),
                ("comb_index", ctypes.c_uint16), ("bits", ctypes.c_uint32)]


u8.utf8proc_get_property.restype = ctypes.POINTER(Prop)
u8.utf8proc_NFC.restype = ctypes.c_void_p
u8.utf8proc_NFD.restype = ctypes.c_void_p


def u8_norm(fn, s):
    p = fn(s.encode() + b"\0")
    r = ctypes.string_at(p).decode()
    libc.free(ctypes.c_void_p(p))
    return r


HF_NFC, HF_NFD = normalizers.NFC(), normalizers.NFD()
CODE_POINTS = [c for c in range(0x300, 0x110000) if not 0xD800 <= c <= 0xDFFF]


def hangul(c):
    return 0xAC00 <= c <= 0xD7A3 or 0x1100 <= c <= 0x11FF


pairs = {}
for c in CODE_POINTS:
    d = u8_norm(u8.utf8proc_NFD, chr(c))
    if len(d) == 2 and u8_norm(u8.utf8proc_NFC, d) == chr(c):
        for x in d:
            pairs.setdefault(ord(x), []).append((d, chr(c)))
unknown = []
for c in CODE_POINTS:
    ch, p = chr(c), u8.utf8proc_get_property(c).contents
    if p.combining_class:
        known = p.combining_class >= 240 or HF_NFC.normalize_str("x\u0345" + ch) != "x\u0345" + ch
    elif u8_norm(u8.utf8proc_NFD, ch) != ch:
        known = HF_NFD.normalize_str(ch) != ch
    elif p.comb_index != 0xFFFF and not hangul(c):
        known = any(HF_NFC.normalize_str(d) == x for d, x in pairs.get(c, []))
    else:
        continue
    if not known:
        unknown.append(c)

inert = set(unknown)
marks = [c for c in range(0x300, 0x20000) if not 0xD800 <= c <= 0xDFFF and
         (u8.utf8proc_get_property(c).contents.combining_class or c in inert or c in pairs)]


def split_nfc(s):
    out, cur = [], ""
    for ch in s:
        if ord(ch) in inert:
            out += [u8_norm(u8.utf8proc_NFC, cur), ch]
            cur = ""
        else:
            cur += ch
    return "".join(out) + u8_norm(u8.utf8proc_NFC, cur)


rng = random.Random(3)
for _ in range(200000):
    s = "".join(chr(rng.choice(marks)) if rng.random() < 0.7 else rng.choice("aeoAEu\u1100\u1161\uac00 ")
                for _ in range(rng.randint(1, 6)))
    assert split_nfc(s) == HF_NFC.normalize_str(s), [hex(ord(c)) for c in s]

ranges = []
for c in unknown:
    if ranges and ranges[-1][1] == c - 1:
        ranges[-1][1] = c
    else:
        ranges.append([c, c])
line = "   "
for a, b in ranges:
    item = " {0x%04X, 0x%04X}," % (a, b)
    if len(line) + len(item) > 100:
        print(line)
        line = "   "
    line += item
print(line)


# ---- the split pattern's classes ----
onig = ctypes.CDLL("libonig.so.5")
enc = ctypes.addressof(ctypes.c_char.in_dll(onig, "OnigEncodingUTF8"))
syntax = ctypes.c_void_p.in_dll(onig, "OnigDefaultSyntax")
onig.onig_initialize((ctypes.c_void_p * 1)(enc), 1)
onig.onig_new.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
onig.onig_search.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_uint]


def onig_class(pattern):
    reg, buf = ctypes.c_void_p(), ctypes.create_string_buffer(pattern.encode())
    info = ctypes.create_string_buffer(64)
    assert onig.onig_new(ctypes.byref(reg), ctypes.addressof(buf), ctypes.addressof(buf) + len(pattern), 0, enc,
                         syntax, info) == 0

    def match(ch):
        b = ctypes.create_string_buffer(ch.encode())
        start = ctypes.addressof(b)
        end = start + len(ch.encode())
        return onig.onig_search(reg, start, end, start, end, None, 0) >= 0
    return match


byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
for name, debian, lead in (("letters", onig_class(r"\A\p{L}\z"), "a"), ("digits", onig_class(r"\A\p{N}\z"), "1")):
    extra = []
    for c in list(range(0x80, 0x40000)) + list(range(0xE0000, 0xE1000)):
        if 0xD800 <= c <= 0xDFFF:
            continue
        theirs = len(byte_level.pre_tokenize_str(lead + chr(c))) == 1
        assert theirs or not debian(chr(c)), "a %s Debian has and tokenizers not: %X" % (name, c)
        if theirs and not debian(chr(c)):
            extra.append(c)
    ranges = []
    for c in extra:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    print("%s: %d code points" % (name, len(extra)))
    line = ' "'
    for a, b in ranges:
        item = "\\\\x{%X}-\\\\x{%X}" % (a, b) if a != b else "\\\\x{%X}" % a
        if len(line) + len(item) > 98:
            print(line + '"')
            line = ' "'
        line += item
    print(line + '"')
