"""Random-weight GGUF files that the real llama.cpp loads and runs.

Two uses, both with weights nobody has to download:

- the tests' tiny model (``write_tiny_model``): a few hundred kilobytes, a
  byte-level BPE vocabulary (``gpt2`` tokenizer model, every byte a token plus
  whole English words, a few merges) and a chat template, so the grammar
  engine, the chat template and the token stream all run as with a real model;
- the benchmark's model (``write_model`` with ``QWEN25_15B``): the default
  script model's exact tensor shapes and quantisation family (Q4_K matrices,
  Q6_K embeddings), because tensor sizes, not values, decide llama.cpp's speed.

A byte-fallback SPM vocabulary would be smaller still, but llama.cpp's grammar
engine cannot match its tokens, so every model here is byte-level BPE.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The chat template the tiny model carries (the same ChatML shape as Qwen's).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: Topic words of the tests' main prompt ("How does a heat pump keep a house warm in
#: winter?"): the tiny vocabulary holds each in four forms, so that even random weights
#: name the topic within a script (about 7 % of the tokens are one of them).
TOPIC_WORDS = ("heat", "pump", "house", "warm", "winter", "keep")
#: Words of the tiny model's vocabulary (each also as a token with a leading space).
BASE_WORDS = (
    "the a an and or but so because when how why what this that these it its is are was be can "
    "will would makes make works work uses use keeps keep moves move takes take gives give "
    "heat pump pumps house home warm winter cold air outside inside energy refrigerant compressor "
    "coil fan power electricity water sun light sky blue black hole holes star gravity space time "
    "mac mini chip fast speed battery phone camera screen sound noise headphones music wave waves "
    "simple simply really very most best first next then now here there just also more less "
    "new old big small good great clever smart real true idea point part way thing things "
    "you we they your our their people everyone think know see look feel want need"
).split()
TINY_WORDS = tuple(
    dict.fromkeys([*BASE_WORDS, *(f for w in TOPIC_WORDS for f in (w, w.capitalize(), w + "s", w + "ing"))])
)


@dataclass(frozen=True)
class ModelShape:
    """Tensor shapes of a Qwen2-architecture model (names as in llama.cpp's GGUF files).

    embedding: hidden size; layers: transformer blocks; heads / kv_heads: attention
    heads and key-value heads; feed_forward: MLP width; vocab: tokens (None: the
    vocabulary written decides); context: training context, tokens;
    quantized: Q4_K matrices and Q6_K embeddings (True) or float32 (False).
    """

    embedding: int
    layers: int
    heads: int
    kv_heads: int
    feed_forward: int
    vocab: int | None = None
    context: int = 32768
    quantized: bool = False


#: Qwen2.5-1.5B-Instruct (config.json of the published model): tied embeddings.
QWEN25_15B = ModelShape(
    embedding=1536, layers=28, heads=12, kv_heads=2, feed_forward=8960, vocab=151936, quantized=True
)
#: The tests' model: small enough to write and load in well under a second.
TINY = ModelShape(embedding=64, layers=2, heads=4, kv_heads=2, feed_forward=128)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _encode(text: str, table: dict[int, str]) -> str:
    return "".join(table[b] for b in text.encode("utf-8"))


def _pseudo_words() -> Iterator[str]:
    """Pronounceable made-up words ("baba", "babe", ..., "bababa", ...): two syllables, then three."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    yield from (a + b for a in syllables for b in syllables)
    yield from (a + b + c for a in syllables for b in syllables for c in syllables)


def byte_level_vocab(
    words: tuple[str, ...] = TINY_WORDS,
    size: int | None = None,
    *,
    merge_words: bool = False,
    word_filler: bool = False,
) -> tuple[list[str], list[str]]:
    """(tokens, merges): every byte, a few merged pairs, the words with and without a
    leading space, then the special tokens; padded with unused tokens up to ``size``.

    merge_words: also add the merge chain that builds each word from its bytes, so the
    tokenizer reads those words as one token each (text costs as many tokens as with a
    real vocabulary); without it, prompts are tokenized byte by byte.
    word_filler: pad with made-up words that have a leading space instead of unused tokens.
    A real vocabulary is mostly whole words of that kind, so a random model picks a new word
    far more often than a piece that glues onto the last one: its text costs about a token a
    word, as real text does. Without them, random words glue the merge chains' pieces
    ("nexclevenex") and a word costs two to five tokens, by the luck of the vocabulary.
    """
    table = _bytes_to_unicode()
    tokens = [table[b] for b in range(256)]
    seen = set(tokens)
    merges: list[str] = []

    def add(token: str) -> None:
        if token not in seen:
            seen.add(token)
            tokens.append(token)

    for left, right in (("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġ", "a")):
        merges.append(f"{left} {right}")
        add(left + right)
    merged = set(merges)
    for word in words:
        for piece in (word, " " + word):
            token = _encode(piece, table)
            if merge_words:
                for end in range(2, len(token) + 1):
                    pair = f"{token[: end - 1]} {token[end - 1]}"
                    if pair not in merged:
                        merged.add(pair)
                        merges.append(pair)
                    add(token[:end])
            add(token)
    if size is not None:
        missing = size - len(tokens) - len(SPECIAL_TOKENS)
        if word_filler:
            fillers = (token for w in _pseudo_words() if (token := _encode(" " + w, table)) not in seen)
            tokens += [next(fillers) for _ in range(missing)]
        else:
            tokens += [f"<|unused_{i}|>" for i in range(missing)]
    tokens += list(SPECIAL_TOKENS)
    return tokens, merges


def _q4_k(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random Q4_K blocks (144 bytes per 256 weights) with small, finite scales."""
    blocks = rng.integers(0, 256, size=(rows * cols // 256, 144), dtype=np.uint8)
    blocks[:, 0:2] = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)  # d
    blocks[:, 2:4] = np.frombuffer(np.float16(0.001).tobytes(), dtype=np.uint8)  # dmin
    return blocks.reshape(rows, cols // 256 * 144)


def _q6_k(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random Q6_K blocks (210 bytes per 256 weights), scale d last."""
    blocks = rng.integers(0, 256, size=(rows * cols // 256, 210), dtype=np.uint8)
    blocks[:, 192:208] = rng.integers(1, 16, size=(blocks.shape[0], 16), dtype=np.uint8)  # int8 scales
    blocks[:, 208:210] = np.frombuffer(np.float16(0.0005).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, cols // 256 * 210)


def write_model(
    path: Path,
    shape: ModelShape = TINY,
    *,
    seed: int = 0,
    words: tuple[str, ...] = TINY_WORDS,
    chat_template: str = CHATML_TEMPLATE,
    name: str = "persona-video random test model",
    merge_words: bool = False,
    word_filler: bool = False,
) -> Path:
    """Write a random-weight Qwen2 GGUF at ``path`` and return it.

    The vocabulary is byte-level BPE (``byte_level_vocab``), padded to
    ``shape.vocab`` when that is set (with made-up words when ``word_filler``).
    Weights are drawn from ``seed``.
    """
    import gguf

    rng = np.random.default_rng(seed)
    tokens, merges = byte_level_vocab(words, shape.vocab, merge_words=merge_words, word_filler=word_filler)
    vocab = len(tokens)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M if shape.quantized else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    token_types = [gguf.TokenType.NORMAL] * vocab
    for special in SPECIAL_TOKENS:
        token_types[tokens.index(special)] = gguf.TokenType.CONTROL
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)

    head_dim = shape.embedding // shape.heads
    kv_dim = head_dim * shape.kv_heads

    def matrix(name: str, rows: int, cols: int, kind: str = "q4") -> None:
        if not shape.quantized:
            writer.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32))
        elif kind == "q6":
            writer.add_tensor(name, _q6_k(rows, cols, rng), raw_dtype=gguf.GGMLQuantizationType.Q6_K)
        else:
            writer.add_tensor(name, _q4_k(rows, cols, rng), raw_dtype=gguf.GGMLQuantizationType.Q4_K)

    def vector(name: str, size: int, value: float | None = None) -> None:
        data = np.full(size, value, np.float32) if value is not None else rng.standard_normal(size).astype(np.float32)
        writer.add_tensor(name, data * (1.0 if value is not None else 0.02))

    matrix("token_embd.weight", vocab, shape.embedding, "q6")
    vector("output_norm.weight", shape.embedding, 1.0)
    for layer in range(shape.layers):
        block = f"blk.{layer}"
        vector(f"{block}.attn_norm.weight", shape.embedding, 1.0)
        matrix(f"{block}.attn_q.weight", shape.embedding, shape.embedding)
        vector(f"{block}.attn_q.bias", shape.embedding)
        matrix(f"{block}.attn_k.weight", kv_dim, shape.embedding)
        vector(f"{block}.attn_k.bias", kv_dim)
        matrix(f"{block}.attn_v.weight", kv_dim, shape.embedding, "q6")
        vector(f"{block}.attn_v.bias", kv_dim)
        matrix(f"{block}.attn_output.weight", shape.embedding, shape.embedding)
        vector(f"{block}.ffn_norm.weight", shape.embedding, 1.0)
        matrix(f"{block}.ffn_gate.weight", shape.feed_forward, shape.embedding)
        matrix(f"{block}.ffn_up.weight", shape.feed_forward, shape.embedding)
        matrix(f"{block}.ffn_down.weight", shape.embedding, shape.feed_forward, "q6")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_model(path: Path, *, seed: int = 0, words: tuple[str, ...] = TINY_WORDS) -> Path:
    """The tests' model: TINY shapes, float32, the given words in its vocabulary."""
    return write_model(path, TINY, seed=seed, words=words)
