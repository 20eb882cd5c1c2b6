#!/usr/bin/env python3
"""Deterministic test strings and chat conversations for the tokenizer golden fixtures.

Stdlib only, seeded: the same output on every machine and Python 3.x.
  gen_strings.py strings          -> JSONL, one JSON string per line (>= 2,000 strings)
  gen_strings.py chats            -> JSONL, one chat request per line
  gen_strings.py corpus NBYTES    -> JSONL documents totalling >= NBYTES of UTF-8 (bench)
"""
import json
import random
import sys

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you doing today?",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "I'm sure they'll say we've done it, but he'd disagree: you're wrong, isn't it?",
    "HELLO World, THIS is MiXeD CaSe; DON'T panic.",
    "e.g. i.e. etc. Mr. Smith vs. Mrs. Jones -- an em—dash and an en–dash…",
    "\"Quoted\" 'single' `backtick` «guillemets» „low“ ‘curly’",
    "URLs: https://example.com/path?q=1&r=two#frag and mailto:someone@example.org",
]
CODE = [
    "def f(x):\n    return x * 2\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (size_t i = 0; i < n; i++) { a[i] += b[i] << 3; }",
    "const x = async () => { await fetch('/api/v1/users?id=123'); };",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
    "    if x:\n        pass\n    else:\n\t\tcontinue\r\n",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0xff; 16]; Ok(()) }",
    "<html><body><div class=\"x\"><table><tr><td>1</td></tr></table></div></body></html>",
    "$ ls -la | grep '\\.c$' && make -j2 2>&1 | tee log.txt",
]
TURKISH = ["İstanbul'da ılık bir gün; ŞEKER, çiçek, ğ ü ö ı İ", "Türkçe karakterler: ıİiI ğĞ şŞ çÇ öÖ üÜ",
           "Kırk yıl düşünsen aklına gelmez."]
CJK = ["你好，世界！今天天气很好。", "日本語のテキスト、ひらがなとカタカナ。漢字も。", "한국어 문장입니다. 안녕하세요!",
       "中文标点：“引号”、《书名》——破折号……", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３"]
ARABIC = ["مرحبا بالعالم! كيف حالك؟", "اللُّغَةُ العَرَبِيَّةُ جميلة ١٢٣٤٥", "עברית: שלום עולם"]
HINDI = ["नमस्ते दुनिया! आप कैसे हैं?", "हिन्दी में क्षत्रिय और ज्ञान", "বাংলা ভাষা", "தமிழ் மொழி", "ภาษาไทยสวัสดี"]
EMOJI = ["😀😃😄 emoji!", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coder", "🏳️‍🌈 flag", "🇺🇸🇯🇵🇩🇪 flags", "❤️‍🔥 heart on fire",
         "1️⃣ keycap #️⃣", "🧑🏿‍🤝‍🧑🏻 people"]
COMBINING = ["e\u0301", "cafe\u0301 vs caf\u00e9", "A\u030a\u0301", "\u1e9b\u0323", "o\u0308\u0304", "\u0041\u030A",
             "ﬁ ligature", "Å Ω K", "한\u1100\u1161", "\u1100\u1161\u11a8", "q\u0307\u0323", "\u0958 \u095e"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<start_of_turn>",
           "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<|im_start|>user\nhi<|im_end|>",
           "<start_of_turn>user\nhello<end_of_turn>\n", "<table><tr>", "<unused0>", "<unused6241>",
           "<|vision_start|><|image_pad|><|vision_end|>", "<tool_call>", "</tool_call>", "<0x41>", "▁▁▁",
           "<|im_start", "im_start|>", "<<|im_end|>>", "<start_of_image>", "<image_soft_token>", "[multimodal]"]
WS = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", "\t\t", " \n ", "\u00a0", "\u3000", "\u2003",
      "\u0085", "\u2028", "\u200b", "\u180e", "\u000b", "\u000c", "\u001c", "\u202f", "\u205f", "\u1680"]
DIGITS = ["0", "7", "42", "123", "1234567890", "3.14159", "-273.15", "1e-9", "0xDEADBEEF", "1,000,000",
          "٠١٢٣٤٥٦٧٨٩", "१२३", "²³¹", "½¼", "Ⅻ", "①②"]

# Code point ranges (start, end inclusive) to draw random characters from.
BLOCKS = [
    (0x20, 0x7e), (0x00, 0x1f), (0x80, 0xff), (0x100, 0x24f), (0x250, 0x2ff), (0x300, 0x36f),
    (0x370, 0x3ff), (0x400, 0x4ff), (0x530, 0x58f), (0x590, 0x5ff), (0x600, 0x6ff), (0x900, 0x97f),
    (0x980, 0x9ff), (0xe00, 0xe7f), (0x10a0, 0x10ff), (0x1100, 0x11ff), (0x1e00, 0x1eff),
    (0x2000, 0x206f), (0x20a0, 0x20cf), (0x2100, 0x214f), (0x2190, 0x21ff), (0x2200, 0x22ff),
    (0x2500, 0x257f), (0x2600, 0x26ff), (0x2700, 0x27bf), (0x3000, 0x303f), (0x3040, 0x30ff),
    (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xe000, 0xe0ff), (0xfb00, 0xfb4f), (0xfe00, 0xfe0f),
    (0xfe70, 0xfeff), (0xff00, 0xffef), (0xfff0, 0xfffd), (0x10000, 0x1007f), (0x1d400, 0x1d7ff),
    (0x1f300, 0x1f5ff), (0x1f600, 0x1f64f), (0x1f680, 0x1f6ff), (0x1f900, 0x1f9ff),
    (0x20000, 0x2a6df), (0xe0000, 0xe007f), (0xf0000, 0xf00ff), (0x10fff0, 0x10ffff),
]

POOLS = [ENGLISH, CODE, TURKISH, CJK, ARABIC, HINDI, EMOJI, COMBINING, SPECIAL, WS, DIGITS]
WORDS = " ".join(ENGLISH).split()


def rand_char(r):
    lo, hi = r.choice(BLOCKS)
    c = r.randint(lo, hi)
    if 0xd800 <= c <= 0xdfff:
        c = 0xfffd
    return chr(c)


def rand_unicode(r, n):
    return "".join(rand_char(r) for _ in range(n))


def mixed(r, parts):
    out = []
    for _ in range(parts):
        k = r.random()
        if k < 0.55:
            out.append(r.choice(r.choice(POOLS)))
        elif k < 0.7:
            out.append(r.choice(WS) * r.randint(1, 6))
        elif k < 0.85:
            out.append(" ".join(r.choice(WORDS) for _ in range(r.randint(1, 8))))
        else:
            out.append(rand_unicode(r, r.randint(1, 12)))
    return "".join(out)


def strings():
    r = random.Random(20261125)
    out = []
    for pool in POOLS:
        out.extend(pool)
    out += ["", " ", "a", "ab", " a", "a ", "  hello", "hello  ", "x\ty", "\n\n\nend", "end\n\n\n"]
    for w in WS:  # runs of each whitespace kind, alone and around words
        for n in (1, 2, 3, 5, 8, 17, 33):
            out.append(w * n)
            out.append("a" + w * n + "b")
            out.append(w * n + "word")
    for s in DIGITS:
        out.append("x" + s + "y " + s + s)
    while len(out) < 1700:
        out.append(mixed(r, r.randint(1, 8)))
    while len(out) < 2100:
        out.append(rand_unicode(r, r.randint(1, 40)))
    for n in (300, 1000, 3000, 8000):  # long texts (single-word BPE for Gemma3)
        out.append(mixed(r, n // 10))
        out.append(" ".join(r.choice(WORDS) for _ in range(n // 5)))
    out.append("a" * 5000)
    out.append(" " * 3000)
    out.append("\n" * 500 + "x")
    out.append("ab" * 2000)
    out.append("😀" * 800)
    return out


def chats():
    r = random.Random(7)
    users = ["Hello!", "What is 2+2?", "  Tell me a joke.  ", "Write C code\nfor a loop.\n", "你好",
             "<|im_start|>tricky", "\n\nleading newlines", "trailing spaces   \n", "Explain <think> tags",
             "mañana\u00a0", "\u3000wide space\u3000"]
    assistants = ["Hi there!", "4", "<think>\nThe user adds.\n</think>\n\nThe answer is 4.",
                  "<think>reasoning without newlines</think>answer", "  padded answer  ",
                  "<think>\n\n</think>\n\nshort", "Sure:\n```c\nfor(;;){}\n```", "</think>only close tag",
                  "prefix <think>mid</think>\n\nsuffix"]
    systems = ["You are a helpful assistant.", "  Be terse.  \n", "Système: réponds en français."]
    out = []
    for i in range(48):
        msgs = []
        if i % 3 != 2:
            sys_msg = r.choice(systems)
            if i % 7 == 0:
                msgs.append({"role": "system", "content": [{"type": "text", "text": sys_msg}]})
            else:
                msgs.append({"role": "system", "content": sys_msg})
        turns = 1 + (i % 4)
        for t in range(turns):
            u = r.choice(users)
            if i % 5 == 1 and t == 0:
                msgs.append({"role": "user", "content": [{"type": "text", "text": u}]})
            else:
                msgs.append({"role": "user", "content": u})
            if t < turns - 1 or i % 6 == 3:
                msgs.append({"role": "assistant", "content": r.choice(assistants)})
        gen = (i % 6 != 3)
        think = [None, True, False][i % 3]
        req = {"messages": msgs, "add_generation_prompt": gen, "enable_thinking": think}
        out.append(req)
    # Rules the random conversations rarely reach: tool results, explicit reasoning_content,
    # a system turn after the start, unknown roles, image parts, empty content.
    tool = "<tool_response>\n{\"temp\": 21}\n</tool_response>"
    special = [
        [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Let me check."},
         {"role": "tool", "content": "{\"temp\": 21}"}, {"role": "tool", "content": "sunny"}],
        [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "<think>call</think>ok"},
         {"role": "user", "content": tool}, {"role": "assistant", "content": "<think>\nhot\n</think>\n\n21 C"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "\nr\n"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"},
         {"role": "user", "content": "q2"}],
        [{"role": "user", "content": "q"}, {"role": "system", "content": "late system"},
         {"role": "user", "content": "q2"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
         {"role": "developer", "content": "ignored?"}, {"role": "user", "content": "q3"}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " look  "}]}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": ""},
         {"role": "assistant", "content": ""}, {"role": "user", "content": "\t x \u2003"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "assistant", "content": "first"}],
        [{"role": "user", "content": "<think>user think</think>after"},
         {"role": "assistant", "content": "<think>a</think><think>b</think>c"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\n\n<think>\n\nr1\n\n</think>\n\n\nans\n"}],
    ]
    for i, msgs in enumerate(special):
        out.append({"messages": msgs, "add_generation_prompt": i % 2 == 0,
                    "enable_thinking": [None, False, True][i % 3]})
    return out


def corpus(nbytes):
    r = random.Random(99)
    total = 0
    docs = []
    while total < nbytes:
        k = r.random()
        if k < 0.5:
            d = " ".join(r.choice(WORDS) for _ in range(r.randint(50, 400)))
        elif k < 0.7:
            d = "\n".join(r.choice(CODE) for _ in range(r.randint(5, 40)))
        else:
            d = mixed(r, r.randint(20, 200))
        docs.append(d)
        total += len(d.encode("utf-8"))
    return docs


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "strings"
    if mode == "strings":
        items = strings()
    elif mode == "chats":
        items = chats()
    elif mode == "corpus":
        items = corpus(int(sys.argv[2]))
    else:
        sys.exit("usage: gen_strings.py strings|chats|corpus NBYTES")
    w = sys.stdout
    for it in items:
        w.write(json.dumps(it, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
