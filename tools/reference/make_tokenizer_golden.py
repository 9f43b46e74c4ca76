#!/usr/bin/env python3
"""Golden token ids for kvc's tokenizer tests, from Hugging Face `tokenizers` (developer-only).

    # (re)write the tricky-string inputs (tests/fixtures/tokenizer/tricky.json)
    python tools/reference/make_tokenizer_golden.py tricky

    # goldens for one tokenizer: <name>.tricky.json and <name>.kjv.json in
    # tests/fixtures/tokenizer/golden/ (then add the name to kGoldenTokenizers in
    # tests/tokenizer/tokenizer_golden_test.cpp)
    python tools/reference/make_tokenizer_golden.py golden \
        --tokenizer ../shared/data/gpt-neox-20b-tokenizer.json --name gpt-neox-20b
    python tools/reference/make_tokenizer_golden.py golden \
        --tokenizer models/kjv-mini/tokenizer.json --name kjv-mini

    # single-thread encoding speed of `tokenizers` on the KJV text
    RAYON_NUM_THREADS=1 python tools/reference/make_tokenizer_golden.py bench \
        --tokenizer ../shared/data/gpt-neox-20b-tokenizer.json

Inputs are encoded with add_special_tokens=False. Bytes that are not valid UTF-8 are decoded
with errors="replace" first (the Python binding only accepts str); kvc does the same.
The KJV text is never committed: the golden keeps its SHA-256, the SHA-256 of the id sequence
(little-endian int32), the count and the first/last 1000 ids; the test regenerates the text
with the `bible` program of Debian's bible-kjv.
"""
import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time
import unicodedata

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "tokenizer")
KJV_COMMAND = ["bible", "Gen1:1-Rev22:21"]
EDGE_IDS = 1000


def tricky_cases():
    """The tricky inputs: (name, text or bytes). Deterministic."""
    cases = []

    def add(name, value):
        cases.append((name, value))

    add("empty", "")
    add("ascii", "Hello, world! This is a test.")
    add("latin_accents", "Héllo wörld, façade, naïve, coöperate, Ærøskøbing")
    add("chinese", "你好，世界！我们今天学习分词。")
    add("japanese", "こんにちは世界。カタカナとひらがな、漢字。")
    add("korean", "안녕하세요 세계, 한국어 문장입니다.")
    add("arabic", "مرحبا بالعالم، هذه جملة عربية.")
    add("hebrew", "שלום עולם, זה משפט בעברית.")
    add("hindi", "नमस्ते दुनिया, यह हिन्दी वाक्य है।")
    add("thai", "สวัสดีชาวโลก นี่คือประโยคภาษาไทย")
    add("russian", "Привет, мир! Съешь же ещё этих мягких французских булок.")
    add("greek", "Γειά σου Κόσμε· ἐν ἀρχῇ ἦν ὁ λόγος")
    add("vietnamese", "Tiếng Việt có nhiều dấu: ắ ằ ẳ ẵ ặ ệ ộ ữ")
    add("mixed_scripts", "abcабв中文123αβγ한글カナ")
    add("emoji", "I ❤️ tokens 😀😃😄 👍🏽 🎉")
    add("emoji_zwj_family", "family: 👨‍👩‍👧‍👦 and 👩‍❤️‍💋‍👨, done")
    add("emoji_flags_keycaps", "🇺🇸🇫🇷🇯🇵 1️⃣ #️⃣ 🏳️‍🌈")
    add("emoji_long", "😀" * 300)
    # Combining marks that NFC changes (decomposed -> composed, reordering, singletons).
    add("nfc_e_acute", "Cafe\u0301 re\u0301sume\u0301")
    add("nfc_angstrom", "A\u030A and \u212B and \u00C5")
    add("nfc_hangul_jamo", "\u1100\u1161\u11A8 \u1112\u1161\u11AB\u1100\u1173\u11AF")
    add("nfc_reorder", "a\u0307\u0323 q\u0307\u0323 o\u0308\u0304")
    add("nfc_singletons", "\u0344 \u0340 \u2126 \u1FEE K")
    add("combining_after_space", "x \u0301y  \u0308z")
    add("combining_alone", "\u0301\u0302\u0303")
    add("combining_many", "a" + "\u0301" * 200)
    # Whitespace runs of many lengths (GPT-NeoX has added tokens for 2..24 spaces).
    for k in list(range(1, 31)) + [47, 48, 49, 100, 1000]:
        add(f"spaces_{k}_between", "a" + " " * k + "b")
    for k in [1, 2, 3, 5, 24, 25, 60]:
        add(f"spaces_{k}_alone", " " * k)
        add(f"spaces_{k}_before_newline", "a" + " " * k + "\nb")
        add(f"spaces_{k}_leading", " " * k + "word")
        add(f"spaces_{k}_trailing", "word" + " " * k)
    for k in [1, 2, 3, 4, 7, 16, 33]:
        add(f"tabs_{k}", "a" + "\t" * k + "b")
        add(f"newlines_{k}", "a" + "\n" * k + "b")
        add(f"crlf_{k}", "line" + "\r\n" * k + "next")
    add("mixed_whitespace", "a \t \n  \t\t\n\n   b \r\n\t c   \n")
    add("indented_code", "def f(x):\n    if x:\n        return 1\n\treturn 0\n")
    add("spaces_10000", " " * 10000)
    add("newlines_5000", "\n" * 5000)
    add("space_newline_2000", " \n" * 2000 + "end")
    # Unicode whitespace and look-alikes: \s in the split pattern is Unicode White_Space.
    add("nbsp", "a\u00A0b \u00A0 c\u00A0\u00A0d")
    add("nel", "a\u0085b !\u0085! \u0085\u0085x")
    add("mongolian_vowel_separator", "a\u180Eb !\u180E! \u180E\u180Ex")
    add("zero_width_space", "a\u200Bb !\u200B! \u200B\u200Bx")
    add("unicode_spaces", "a\u1680b\u2000c\u2003d\u200Ae\u2028f\u2029g\u202Fh\u205Fi\u3000j")
    add("unicode_spaces_punct", "!\u2003!\u3000!\u2028!\u00A0!\u1680!")
    add("info_separators", "a\u001Cb\u001Dc\u001Ed\u001Ff !\u001C!")
    add("vertical_tab_formfeed", "a\u000Bb\u000Cc !\u000B\u000C!")
    # Digits and numbers.
    add("digits", "1234567890 3.14159 1,000,000 2024-01-01 0x1F 1e-9")
    add("digits_long", "1" * 2000)
    add("digits_unicode", "２０２４ ٣٤٥ ०१२ Ⅻ ½ ² ³")
    # Contractions and apostrophes.
    add("contractions", "I'm sure you're right, we've said it's what they'll do, he'd go, don't")
    add("contractions_upper", "I'M SURE YOU'RE RIGHT, IT'S DON'T 'S 'T 'RE")
    add("contractions_curly", "It’s they’re we’ve I’ll")
    add("apostrophes", "'''s ''t 'x '' ' 's")
    # Very long words and repetitions.
    add("long_a", "a" * 1000)
    add("long_word_repeat", "supercalifragilistic" * 50)
    add("long_ab", "ab" * 3000)
    rng = random.Random(1234)
    letters = "abcdefghijklmnopqrstuvwxyz"
    add("long_random_letters", "".join(rng.choice(letters) for _ in range(5000)))
    add("long_punct", "!" * 500 + "?." * 200)
    add("long_cjk", "".join(chr(0x4E00 + rng.randrange(0x5000)) for _ in range(2000)))
    add("url", "https://example.com/path?query=a%20b&x=1#frag user@example.org")
    add("punctuation", "\"Quoted\" (paren) [bracket] {brace} <angle> ... --- ;;; ::: @#$%^&*")
    # Added tokens in the text (GPT-NeoX: <|endoftext|>, <|padding|>).
    add("special_token", "<|endoftext|>")
    add("special_in_text", "hello<|endoftext|>world <|padding|> x<|endoftext|><|endoftext|>")
    add("special_partial", "<|endoftext| <|endoftext <|padding|")
    add("special_then_combining", "<|endoftext|>\u0301a")
    add("special_and_spaces", "   <|endoftext|>   x")
    # This GPT-NeoX-20B file also lists "assistant" and "RWKV" as special tokens: they are cut
    # out of words too.
    add("special_words", "An assistant, assistants, RWKVs, myassistant and <|im_start|>user\n"
        "hi<|im_end|>\n  assistant  ")
    # Control characters.
    add("controls", "a\u0000b\u0001c\u007Fd\u0080e\u009Ff")
    add("private_use_and_noncharacters", "\uE000\uF8FF\uFFFE\uFFFF \U0010FFFD")
    add("bom", "\uFEFFstart")
    # Bytes that are not valid UTF-8 (replaced by U+FFFD like errors="replace").
    add("bad_lone_surrogate_high", b"a\xed\xa0\x80b")
    add("bad_lone_surrogate_low", b"a\xed\xb0\x80b")
    add("bad_surrogate_pair_cesu", b"x\xed\xa0\xbd\xed\xb8\x80y")
    add("bad_overlong_slash", b"\xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf")
    add("bad_above_max", b"\xf4\x90\x80\x80 \xf5\x80 \xf8\x88\x80\x80\x80")
    add("bad_ff_fe", b"\xff\xfe\xfd")
    add("bad_continuation", b"\x80\xbf abc \x80")
    add("bad_truncated", b"\xe2\x82 \xf0\x9f\x98abc \xc3")
    add("bad_truncated_end", b"end\xf0\x9f\x98")
    add("bad_mixed", b"ok \xe2\x9c\x93 \xe2\x9c bad \xc3\xa9 \xc3 e")
    return cases


def write_tricky():
    out = []
    for name, value in tricky_cases():
        if isinstance(value, bytes):
            out.append({"name": name, "hex": value.hex()})
        else:
            out.append({"name": name, "text": value})
    path = os.path.join(FIXTURES, "tricky.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(out)} cases")


def load_tricky():
    with open(os.path.join(FIXTURES, "tricky.json"), encoding="utf-8") as f:
        cases = json.load(f)
    result = []
    for c in cases:
        if "hex" in c:
            result.append((c["name"], bytes.fromhex(c["hex"]).decode("utf-8", errors="replace")))
        else:
            result.append((c["name"], c["text"]))
    return result


def tokenizer_location(path):
    """Where the tests find the file: relative to the source tree or to the shared data."""
    path = os.path.abspath(path)
    for root, base in (("shared", SHARED_DATA), ("source", REPO)):
        if path.startswith(base + os.sep):
            return {"root": root, "path": os.path.relpath(path, base)}
    sys.exit(f"{path}: must be inside {REPO} or {SHARED_DATA}")


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ids_sha256(ids):
    return hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()


def kjv_text():
    env = dict(os.environ, COLUMNS="80")  # bible wraps lines to $COLUMNS
    return subprocess.run(KJV_COMMAND, check=True, capture_output=True, env=env).stdout


def make_golden(args):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    header = {
        "tokenizer": tokenizer_location(args.tokenizer),
        "tokenizer_sha256": sha256_file(args.tokenizer),
        "generator": f"tokenizers {__import__('tokenizers').__version__}, "
                     "encode(text, add_special_tokens=False)",
    }
    out_dir = os.path.join(FIXTURES, "golden")
    os.makedirs(out_dir, exist_ok=True)

    cases = []
    for name, text in load_tricky():
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        cases.append({"name": name, "ids": ids, "decoded": decoded,
                      "decoded_is_nfc_input": decoded == unicodedata.normalize("NFC", text)})
    path = os.path.join(out_dir, f"{args.name}.tricky.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(header, cases=cases), f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(cases)} cases")

    raw = kjv_text()
    text = raw.decode("utf-8")
    ids = tok.encode(text, add_special_tokens=False).ids
    decoded = tok.decode(ids, skip_special_tokens=False)
    if decoded != text:
        sys.exit("the KJV text does not round-trip through this tokenizer")
    kjv = dict(header, text={"command": " ".join(KJV_COMMAND), "bytes": len(raw),
                             "sha256": hashlib.sha256(raw).hexdigest()},
               count=len(ids), ids_sha256=ids_sha256(ids),
               head=ids[:EDGE_IDS], tail=ids[-EDGE_IDS:])
    path = os.path.join(out_dir, f"{args.name}.kjv.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(kjv, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(ids)} ids for {len(raw)} bytes")


def bench(args):
    from tokenizers import Tokenizer

    if os.environ.get("RAYON_NUM_THREADS") != "1":
        print("note: set RAYON_NUM_THREADS=1 for a single-thread number", file=sys.stderr)
    tok = Tokenizer.from_file(args.tokenizer)
    text = kjv_text().decode("utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    tok.encode(text, add_special_tokens=False)  # warm-up (fills the BPE cache)
    # Wall and process CPU time: on a loaded machine the CPU time is the fairer single-thread
    # number (kvc's benchmark reports CPU time too).
    wall, cpu = [], []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        tok.encode(text, add_special_tokens=False)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    print(f"tokenizers {__import__('tokenizers').__version__}: KJV {mb:.3f} MB, "
          f"{args.repeats} runs: CPU best {min(cpu) * 1e3:.1f} ms = {mb / min(cpu):.2f} MB/s, "
          f"median {mb / sorted(cpu)[len(cpu) // 2]:.2f} MB/s; "
          f"wall best {mb / min(wall):.2f} MB/s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("tricky", help="write tests/fixtures/tokenizer/tricky.json")
    g = sub.add_parser("golden", help="write the goldens of one tokenizer")
    g.add_argument("--tokenizer", required=True, help="path of tokenizer.json")
    g.add_argument("--name", required=True, help="name of the golden files")
    b = sub.add_parser("bench", help="single-thread encoding speed of tokenizers on the KJV")
    b.add_argument("--tokenizer", required=True)
    b.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    {"tricky": lambda a: write_tricky(), "golden": make_golden, "bench": bench}[args.command](args)


if __name__ == "__main__":
    main()
