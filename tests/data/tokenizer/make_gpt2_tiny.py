#!/usr/bin/env python3
"""Write a small GPT-2-style tokenizer.json (no normalizer, add_prefix_space, a special token
with normalized true as GPT-2's <|endoftext|>, added tokens with lstrip/rstrip and single_word,
few merges) in both merges forms, and the ids of some texts computed here by a plain Python
BPE, independent of the library (Hugging Face tokenizers 0.23.3 gives the same ids for all of
them). Needs the `regex` module (for \\p{L}). Run from anywhere; writes next to itself."""
import json
import os

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()
# the alphabet: printable ASCII, the space and the newline; other bytes are not in the vocab
ALPHABET = [chr(c) for c in range(33, 127)] + [B2U[ord(" ")], B2U[ord("\n")]]
MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "ll"), ("h", "ell"), ("hell", "o"),
    ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d"), ("Ġ", "h"), ("ll", "o"),
    ("e", "llo"), ("Ġh", "ello"), ("'", "s"), ("1", "2"), ("12", "3"), ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("a", "a"), ("aa", "aa"),
    ("Ċ", "Ċ"), ("Ġ", "1"), ("Ġ1", "2"), ("i", "t"), ("Ġ", "a"), ("h", "i"), ("Ġ", "hi"), ("t", "he"),
]
vocab = {}
for t in ALPHABET:
    vocab[t] = len(vocab)
for a, b in MERGES:
    for t in (a, b, a + b):
        assert t in vocab or t == a + b, t
    if a + b not in vocab:
        vocab[a + b] = len(vocab)
# ids as tokenizers gives them: in the vocab already, or from the vocab's size on
ADDED = [
    {"content": "<|endoftext|>", "special": True, "normalized": True, "lstrip": False, "rstrip": False, "single_word": False},
    {"content": "[X]", "special": False, "normalized": False, "lstrip": True, "rstrip": True, "single_word": False},
    {"content": "hi", "special": False, "normalized": True, "lstrip": False, "rstrip": False, "single_word": True},
]
next_id = len(vocab)
for t in ADDED:
    if t["content"] in vocab:
        t["id"] = vocab[t["content"]]
    else:
        t["id"] = next_id
        next_id += 1

TEXTS = [
    "hello world", "Hello world", "the hello", "hellohello", " the", "  the  ", "a\n\nb", "it's", "123 1234",
    "aaaaaaaa", "<|endoftext|>hello", "x <|endoftext|> y", "a [X] b", "a[X]b", "  [X]  ", "hi there", "this hi",
    "chi", "hi", "hi!", "tab\there", "caf\u00e9", "", "hell\u00f6", "aaaaa aaa", "    x", "x    ", "1234567",
]


def is_word_char(c):
    return c.isalnum() or c == "_"


def added_splits(text, tokens, special_as_text=False):
    """(start, stop, id or None) as tokenizers' find_matches makes them (leftmost-longest)."""
    out, cursor, pos = [], 0, 0
    while True:
        best = None
        for start in range(pos, len(text)):
            for t in tokens:
                c = t["content"]
                if text.startswith(c, start) and (best is None or len(c) > len(best[1]["content"])):
                    best = (start, t)
            if best:
                break
        if not best:
            break
        start, t = best
        stop = start + len(t["content"])
        pos = stop
        if special_as_text and t["special"]:
            continue
        if t["single_word"]:
            if (start > 0 and is_word_char(text[start - 1])) or (stop < len(text) and is_word_char(text[stop])):
                continue
        if t["lstrip"]:
            s = start
            while s > 0 and text[s - 1].isspace():
                s -= 1
            start = max(s, cursor)
        if t["rstrip"]:
            while stop < len(text) and text[stop].isspace():
                stop += 1
        if cursor < start:
            out.append((cursor, start, None))
        out.append((start, stop, t["id"]))
        cursor = stop
    if cursor < len(text):
        out.append((cursor, len(text), None))
    return out


RANKS = {pair: i for i, pair in enumerate(MERGES)}


def bpe(word):
    syms = [c for c in word if c in vocab]  # characters without a token are dropped
    while len(syms) > 1:
        best = min(range(len(syms) - 1), key=lambda i: (RANKS.get((syms[i], syms[i + 1]), 1 << 30), i))
        if (syms[best], syms[best + 1]) not in RANKS:
            break
        syms[best:best + 2] = [syms[best] + syms[best + 1]]
    return [vocab[s] for s in syms]


def encode(text):
    ids = []
    raw = [t for t in ADDED if not t["normalized"]]
    norm = [t for t in ADDED if t["normalized"]]
    for a, b, tid in added_splits(text, raw):
        if tid is not None:
            ids.append(tid)
            continue
        piece = text[a:b]  # no normalizer
        for c, d, nid in added_splits(piece, norm):
            if nid is not None:
                ids.append(nid)
                continue
            p = piece[c:d]
            if not p.startswith(" "):
                p = " " + p
            for w in regex.findall(PATTERN, p):
                ids += bpe("".join(B2U[x] for x in w.encode("utf-8")))
    return ids


def tokenizer_json(pair_form):
    merges = [[a, b] for a, b in MERGES] if pair_form else ["%s %s" % m for m in MERGES]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [dict(id=t["id"], **{k: v for k, v in t.items() if k != "id"}) for t in ADDED],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab, "merges": merges},
    }


def main():
    for name, pair in (("gpt2_tiny.json", False), ("gpt2_tiny_pairs.json", True)):
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(pair), f, ensure_ascii=False, indent=1)
    with open(os.path.join(HERE, "gpt2_tiny_cases.jsonl"), "w", encoding="utf-8") as f:
        for t in TEXTS:
            f.write(json.dumps({"text": t, "ids": encode(t)}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
