"""The PEGASUS / PEGASUS-X SentencePiece Unigram tokenizer, on the `tokenizers` library.

PEGASUS reserves the first 105 ids before the SentencePiece pieces (`offset` 103 in `transformers`):
``<pad>``=0 ``</s>``=1 ``<mask_1>``=2 (gap sentence) ``<mask_2>``=3 (masked word) and ``<unk_2>`` …
``<unk_102>``=4…104 (reserved for pre-training), then ``<unk>``=105 and the pieces. Every sequence is
``text </s>`` (no BOS). The pipeline is the one `transformers`' ``PegasusTokenizer``/``PegasusTokenizerFast``
builds: the SentencePiece normalizer (its precompiled char map when the file has one, else newlines to
spaces) followed by collapsing runs of spaces, a Metaspace pre-tokenizer/decoder that prepends ``▁`` to every
word, and the ``$A </s>`` template. A checkpoint's ``tokenizer.json`` is read directly, pipeline included;
on files with the pipeline above (what `train` and `transformers` 5 write) ids equal ``PegasusTokenizerFast``
(held by tests/test_pegasus_x_tokenizer.py). `transformers` 5 rebuilds the pre-tokenizer instead of reading
it, so on older files (v4's ``WhitespaceSplit`` + ``Metaspace``) the two differ on stray whitespace.

    tok = PegasusTokenizer.from_pretrained("google/pegasus-x-base")   # or a local directory
    ids = tok.encode(article, max_length=16384)                         # [..., 1], </s> kept on truncation
    text = tok.decode(generated_ids)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import Unigram

from led.files import write_text_atomically
from led.models.hub import resolve_model_dir
from led.models.tokenizer_base import TokenizerBase, read_tokenizer_file, train_unigram

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
MASK_SENT, MASK = "<mask_1>", "<mask_2>"  # gap-sentence mask, masked-word mask
OFFSET = 103  # `transformers`' name for the shift of the SentencePiece ids: pieces start at 2 + OFFSET
RESERVED = tuple(f"<unk_{i}>" for i in range(2, OFFSET))
# Order fixes the ids: <pad>=0 </s>=1 <mask_1>=2 <mask_2>=3 <unk_2..102>=4..104 <unk>=105, as in PEGASUS.
SPECIAL_TOKENS = (PAD, EOS, MASK_SENT, MASK, *RESERVED, UNK)

TOKENIZER_FILE = "tokenizer.json"
SPM_FILE = "spiece.model"
METASPACE = "▁"


class PegasusTokenizer(TokenizerBase):
    """SentencePiece Unigram tokenizer of PEGASUS / PEGASUS-X, wrapping a `tokenizers.Tokenizer`.

    Build it with `from_pretrained` (a directory or Hub id holding `tokenizer.json`) or `train` (a new
    vocabulary for models trained from scratch). The wrapped tokenizer is `.backend`.
    """

    specials_around_text = "</s>"
    num_specials_around_text = 1
    eos_token = EOS

    def __init__(self, backend: Tokenizer) -> None:
        missing = [t for t in (PAD, EOS) if backend.token_to_id(t) is None]
        if missing:
            raise ValueError(
                f"tokenizer has no id for the special token(s) {missing}; a PEGASUS tokenizer needs {PAD!r} and "
                f"{EOS!r} (load a PEGASUS tokenizer.json or build one with PegasusTokenizer.train)"
            )
        super().__init__(backend)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike) -> PegasusTokenizer:
        """Load `tokenizer.json` from a local directory or a Hugging Face Hub model id."""
        directory = resolve_model_dir(path_or_hub_id, [TOKENIZER_FILE], what="tokenizer", contents=TOKENIZER_FILE)
        if (directory / TOKENIZER_FILE).is_file():
            return cls(read_tokenizer_file(directory / TOKENIZER_FILE))
        present = sorted(p.name for p in directory.iterdir())
        hint = (f"; convert {SPM_FILE} once with transformers: "
                f"PegasusTokenizerFast.from_pretrained(DIR).save_pretrained(DIR)") if SPM_FILE in present else ""
        raise ValueError(f"no tokenizer in {str(directory)!r}: expected {TOKENIZER_FILE}, found {present}{hint}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, show_progress: bool = False) -> PegasusTokenizer:
        """Train a new Unigram with PEGASUS' special tokens at ids 0-105 (for models trained from scratch), with
        SentencePiece's trainer as PEGASUS' own was (`led.models.tokenizer_base.train_unigram`): the same texts and
        `vocab_size` give the same file on every run and machine.

        `vocab_size` counts the 106 special tokens, so it must exceed 106; a small corpus may fill fewer ids.
        Characters never seen in `texts` encode as `<unk>` (there is no byte fallback, as in PEGASUS).
        """
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size={vocab_size} is too small: it must exceed {len(SPECIAL_TOKENS)} "
                             f"(PEGASUS reserves ids 0-{len(SPECIAL_TOKENS) - 1} for special tokens)")
        pipeline = _assemble(Unigram())  # its normalizer: the texts as encoding will see them
        normalized = (pipeline.normalizer.normalize_str(text) for text in texts)
        pieces = train_unigram(normalized, vocab_size - len(SPECIAL_TOKENS) + 1)  # its <unk> is ours
        specials = [(token, 0.0) for token in SPECIAL_TOKENS]
        pieces = [(piece, score) for piece, score in pieces[1:] if piece not in SPECIAL_TOKENS]
        backend = _assemble(Unigram([*specials, *pieces], unk_id=SPECIAL_TOKENS.index(UNK), byte_fallback=False))
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
        eos_id = backend.token_to_id(EOS)
        assert eos_id == 1  # special tokens take the first ids in order
        backend.post_processor = _eos_template(eos_id)
        return cls(backend)

    # ------------------------------------------------------------------ special tokens
    @property
    def pad_token_id(self) -> int:
        return self._id(PAD)

    @property
    def unk_token_id(self) -> int | None:
        return self.backend.token_to_id(UNK)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json and the config files `transformers`' PegasusTokenizer(Fast) reads."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(out / TOKENIZER_FILE))
        special = {"eos_token": EOS, "unk_token": UNK, "pad_token": PAD, "mask_token": MASK,
                   "additional_special_tokens": [MASK_SENT, *RESERVED]}
        write_text_atomically(out / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
        config = {
            "tokenizer_class": "PegasusTokenizer",
            "mask_token_sent": MASK_SENT,
            "offset": OFFSET,
            "clean_up_tokenization_spaces": False,
            **special,
        }
        write_text_atomically(out / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def _assemble(model: Unigram) -> Tokenizer:
    """PEGASUS' pipeline around a Unigram model, as `transformers` builds it when there is no SentencePiece
    char map (a vocabulary trained here has none): newlines become spaces, runs of spaces collapse to one,
    and every word gets a leading `▁`."""
    backend = Tokenizer(model)
    backend.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\n"), " "), normalizers.Replace(Regex(r" {2,}"), " ")]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    return backend


def _eos_template(eos_id: int) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, eos_id)])

