#!/usr/bin/env python3
"""Writes the SentencePiece-style tokenizer fixtures: needs only the `tokenizers` package (no torch, no GPU).

Usage: python3 scripts/make_tokenizer_fixtures.py OUT_DIR
Writes, under OUT_DIR:
  tokenizer-llama2/    Llama 2 layout: normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer,
                       BPE with byte_fallback and fuse_unk, decoder Sequence[Replace("▁", " "), ByteFallback, Fuse,
                       Strip(" ", 1, 0)], TemplateProcessing "<s> $A"
  tokenizer-mistral/   Mistral v0.x as newer transformers converts it: no normalizer, Metaspace pre-tokenizer
                       (prepend_scheme "first", split false), the same BPE, Metaspace decoder, "[INST]"/"[/INST]"
  <tokenizer>/tokenizer.json and encodings.json ([{"text", "ids", "decoded"}] over test_strings() +
  sentencepiece_strings()).
The vocab is tiny (3 specials, the 256 "<0xXX>" byte tokens, a few hundred pieces trained on this Python's
standard library) and its alphabet is cut short, so CJK, most emoji and rare symbols go through byte fallback.

test_strings() is also the string list of scripts/make_parity_fixtures.py (the byte-level fixtures).
"""
import json
import os
import random
import sys
import textwrap

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPIECE = "\u2581"
SPECIALS = ["<unk>", "<s>", "</s>"]


def test_strings():
    rng = random.Random(7)
    pieces = ["hello", "world", " ", "  ", "\n", "\n\n", "\t", "\r\n", "   \n  ", "1234567", "3.14159", "2026",
              "don't", "I'LL", "we've", "café", "naïve", "東京", "中文字符", "Привет", "😀", "🚀🚀", "e\u0301",
              "<|endoftext|>", "<|pad|>", "!!!", "...", "(x)", "{\"a\": 1}", "def f(x):", "    return x",
              "ﬁ", "½", "ℌ", "\u00a0", "\u200b", "ABCDEFG", "x" * 40, "0" * 13, "#$%&", "a-b_c", "'s"]
    out = ["", " ", "a", "hello world", "The pass key is 71432. Remember it.", "<|endoftext|>hi<|endoftext|>"]
    while len(out) < 300:
        out.append("".join(rng.choice(pieces) + (" " if rng.random() < 0.5 else "")
                           for _ in range(rng.randint(1, 12))))
    return out


def sentencepiece_strings():
    """What SentencePiece-style files treat specially: spaces and the metaspace char, special-token text, bytes."""
    fixed = ["  ", "   ", " leading", "  two leading", "trailing ", "trailing  ", " both ", "multiple   spaces",
             "\t", "a\tb", "\ttabbed", "line1\nline2\n", "\n", "\n\n\n", "\r\n", " \n ", "end\n", SPIECE,
             SPIECE + "hello", SPIECE + SPIECE + " x", "a" + SPIECE + "b", "<s>", "</s>", "<unk>", "<s>hello</s>",
             "hello <s> world", " <s>", "<s> ", "<s><s>", "x</s>y", "[INST] hi [/INST]", "[INST]hi[/INST] ok",
             "<0x41>", "<0xE2>", "<s", "s>", "🤖🦀", "emoji 😀 and 🚀", "𝔘𝔫𝔦", "ꙮ", "\u0000", "a\u0000b", "\x7f",
             "\u00e9", "e\u0301", "\u00c5", "A\u030a", "\u212b", "\ud55c\uad6d\uc5b4",
             "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165", "中文字符", "日本語のテキスト", "東京タワー",
             "0123456789", "3.14", "-42", "1,000,000", "x = y + 2 * (z - 1)",
             "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n  sum += i;\n}",
             "#include <vector>", "<html><body></body></html>", "    indented", "\u00a0nbsp", "zero\u200bwidth",
             "Ünïcödé façade", "Привет мир", "Ελληνικά", "العربية", "ﬁ ½ ℌ", "\ufeffbom"]
    rng = random.Random(11)
    pieces = fixed + ["hello", "world", " ", "  ", "\n", "x", "42", "café", "😀", "中"]
    out = list(fixed)
    while len(out) < 120:
        out.append("".join(rng.choice(pieces) + (" " if rng.random() < 0.4 else "")
                           for _ in range(rng.randint(1, 8))))
    return out


def corpus():
    """Plain local text: some of this Python's standard library, and a few other scripts (not CJK, not 🚀)."""
    root = os.path.dirname(textwrap.__file__)
    texts = []
    for name in ["textwrap.py", "difflib.py", "string.py", "json/decoder.py", "json/encoder.py", "csv.py"]:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            texts += f.read().splitlines()
    texts += ["Ünïcödé façade naïve café Привет мир 😀 Ελληνικά hello world"] * 50
    # Only ASCII and the chars of the line above, so the alphabet (and with it every id) is the same on every run.
    keep = set("Ünïcödé façade naïve café Привет мир 😀 Ελληνικά")
    return ["".join(c for c in text if c.isascii() or c in keep) for text in texts]


def trained_pieces():
    """Vocab and merges of a small BPE, in training order. Words are cut as SentencePiece cuts them: a run of
    "▁" joins the word after it, so pieces such as "▁▁▁▁" (indentation) are learned too."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always", split=False),
        pre_tokenizers.Split(Regex(SPIECE + "*[^" + SPIECE + "]+|" + SPIECE + "+"), behavior="isolated")])
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return [token for token, _ in vocab], merges


def sentencepiece_bpe(pieces, merges):
    """Llama 2's id layout: <unk> <s> </s>, then <0x00>..<0xFF>, then the pieces."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token in pieces:
        vocab.setdefault(token, len(vocab))
    return models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)


def make_tokenizer(root, name, pieces, merges):
    tok = Tokenizer(sentencepiece_bpe(pieces, merges))
    if name == "tokenizer-llama2":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
        tok.decoder = decoders.Sequence([decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    if name == "tokenizer-mistral":
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ["[INST]", "[/INST]"]])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    os.makedirs(os.path.join(root, name), exist_ok=True)
    tok.save(os.path.join(root, name, "tokenizer.json"))
    enc = []
    for s in test_strings() + sentencepiece_strings():
        ids = tok.encode(s).ids
        enc.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    with open(os.path.join(root, name, "encodings.json"), "w", encoding="utf-8") as f:
        json.dump(enc, f, ensure_ascii=False, indent=0)
    fallback = sum(any(3 <= i < 259 for i in e["ids"]) for e in enc)
    print(name, "vocab", tok.get_vocab_size(), "strings", len(enc), "with byte fallback", fallback)


def main():
    out = sys.argv[1]
    pieces, merges = trained_pieces()
    for name in ["tokenizer-llama2", "tokenizer-mistral"]:
        make_tokenizer(out, name, pieces, merges)
    print("versions: python", sys.version.split()[0], "tokenizers", __import__("tokenizers").__version__)


if __name__ == "__main__":
    main()
