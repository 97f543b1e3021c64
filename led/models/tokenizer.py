"""The LED/BART byte-level BPE tokenizer, on the `tokenizers` library (no `transformers`).

LED reuses BART's tokenizer unchanged: GPT-2 style byte-level BPE, no prefix space, special tokens
``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3 and ``<mask>``, and every sequence wrapped as
``<s> … </s>``. The LED checkpoints on the Hub ship only ``vocab.json`` + ``merges.txt``; this module
builds the same pipeline that ``transformers``' ``BartTokenizerFast``/``LEDTokenizerFast`` builds from
those files, so ids are identical (held by tests/test_tokenizer.py).

    tok = LEDTokenizer.from_pretrained("allenai/led-base-16384")   # or a local directory
    ids = tok.encode(article, max_length=4096)                       # [0, ..., 2], </s> kept on truncation
    text = tok.decode(generated_ids)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.models import BPE

from led.errors import CheckpointError, first_line
from led.files import write_text_atomically
from led.models.hub import resolve_model_dir
from led.models.tokenizer_base import TOKENIZER_ADVICE, TokenizerBase, json_problem, read_tokenizer_file

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
# Order fixes the ids of a freshly trained vocabulary: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4.
# (In the released BART/LED vocabulary <mask> is the last id, 50264; the first four match.)
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK, MASK)

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"


class LEDTokenizer(TokenizerBase):
    """Byte-level BPE tokenizer of LED/BART, wrapping a `tokenizers.Tokenizer`.

    Build it with `from_pretrained` (a directory or Hub id), `from_files` (vocab.json + merges.txt) or
    `train` (a new vocabulary for models trained from scratch). The wrapped tokenizer is `.backend`.
    """

    specials_around_text = "<s> and </s>"
    num_specials_around_text = 2
    eos_token = EOS

    def __init__(self, backend: Tokenizer) -> None:
        missing = [t for t in SPECIAL_TOKENS[:4] if backend.token_to_id(t) is None]
        if missing:
            raise ValueError(
                f"tokenizer has no id for the special token(s) {missing}; an LED/BART tokenizer needs "
                f"{list(SPECIAL_TOKENS[:4])} (build one with LEDTokenizer.from_files or LEDTokenizer.train)"
            )
        super().__init__(backend)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_files(cls, vocab_file: str | os.PathLike, merges_file: str | os.PathLike) -> LEDTokenizer:
        """Build the BART pipeline from a GPT-2 style `vocab.json` and `merges.txt`; files that cannot be read are a
        CheckpointError naming the file and what is wrong with it."""
        try:
            model = BPE.from_file(str(vocab_file), str(merges_file))
        except Exception as error:  # noqa: BLE001 - the Rust library raises a plain Exception for every bad file
            words = re.sub(r"^Error while (reading BPE files|initializing BPE): ", "", first_line(error))
            problem = json_problem(vocab_file, words)
            if problem is None:  # the vocabulary reads: the merges are what does not fit
                raise CheckpointError(f"tokenizer {merges_file} cannot be read with {vocab_file}: {words}; "
                                      f"{TOKENIZER_ADVICE}") from None
            raise CheckpointError(f"tokenizer {vocab_file} cannot be read: {problem}; {TOKENIZER_ADVICE}") from None
        return cls(_add_special_tokens(_assemble(model)))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike) -> LEDTokenizer:
        """Load from a local directory or a Hugging Face Hub model id.

        A directory needs `tokenizer.json`, or `vocab.json` + `merges.txt`. A Hub id is fetched with
        `huggingface_hub` (cached in the usual HF cache); without network, point at a local directory.
        """
        return cls._from_dir(resolve_model_dir(path_or_hub_id, [TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE],
                                               what="tokenizer",
                                               contents=f"{TOKENIZER_FILE} or {VOCAB_FILE} + {MERGES_FILE}"))

    @classmethod
    def _from_dir(cls, directory: Path) -> LEDTokenizer:
        if (directory / TOKENIZER_FILE).is_file():
            return cls(read_tokenizer_file(directory / TOKENIZER_FILE))
        if (directory / VOCAB_FILE).is_file() and (directory / MERGES_FILE).is_file():
            return cls.from_files(directory / VOCAB_FILE, directory / MERGES_FILE)
        present = sorted(p.name for p in directory.iterdir())
        raise ValueError(
            f"no tokenizer in {str(directory)!r}: expected {TOKENIZER_FILE} or {VOCAB_FILE} + {MERGES_FILE}, "
            f"found {present}"
        )

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2, show_progress: bool = False
    ) -> LEDTokenizer:
        """Train a new byte-level BPE with BART's special tokens at ids 0-4 (for models trained from scratch).

        `vocab_size` counts the 5 special tokens and the 256 byte symbols, so it must exceed 261.
        """
        floor = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
        if vocab_size <= floor:
            raise ValueError(f"vocab_size={vocab_size} is too small: it must exceed {floor} (5 special + 256 bytes)")
        if min_frequency < 1:
            raise ValueError(f"min_frequency={min_frequency} must be >= 1")
        backend = _assemble(BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            # every byte is in the vocabulary, so no text ever needs <unk>
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        backend.train_from_iterator(iter(texts), trainer=trainer)
        return cls(_add_special_tokens(backend))

    # ------------------------------------------------------------------ special tokens
    @property
    def bos_token_id(self) -> int:
        return self._id(BOS)

    @property
    def pad_token_id(self) -> int:
        return self._id(PAD)

    @property
    def unk_token_id(self) -> int:
        return self._id(UNK)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, vocab.json + merges.txt and the config files `transformers` reads."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(out / TOKENIZER_FILE))
        self.backend.model.save(str(out))  # BPE model -> vocab.json + merges.txt
        self._save_missing_special_tokens(out / VOCAB_FILE)
        special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "sep_token": EOS,
                   "pad_token": PAD, "cls_token": BOS, "mask_token": MASK}
        write_text_atomically(out / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
        config = {
            "tokenizer_class": "BartTokenizer",
            "add_prefix_space": False,
            "errors": "replace",
            "trim_offsets": True,
            "clean_up_tokenization_spaces": False,
            **special,
        }
        write_text_atomically(out / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")

    def _save_missing_special_tokens(self, vocab_file: Path) -> None:
        # Special tokens that were added on top of the BPE model (e.g. <mask> when the source vocab.json
        # lacked it) are not in the model's vocab.json; write them there with their ids so that loading
        # vocab.json + merges.txt alone gives the same ids.
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        for token in SPECIAL_TOKENS:
            token_id = self.backend.token_to_id(token)
            if token_id is not None and token not in vocab:
                vocab[token] = token_id
        write_text_atomically(vocab_file, json.dumps(vocab, ensure_ascii=False))


def _assemble(model: BPE) -> Tokenizer:
    """The BART pipeline around a BPE model: byte-level pre-tokenizer and decoder, no prefix space."""
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _add_special_tokens(backend: Tokenizer) -> Tokenizer:
    """Register the special tokens (existing vocabulary ids are kept) and the `<s> … </s>` wrapping."""
    # <mask> swallows the space before it, as in BART's tokenizer; the others match exactly.
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=(t == MASK)) for t in SPECIAL_TOKENS]
    )
    eos_id, bos_id = backend.token_to_id(EOS), backend.token_to_id(BOS)
    assert eos_id is not None and bos_id is not None  # just added
    backend.post_processor = processors.RobertaProcessing(
        (EOS, eos_id),  # sep
        (BOS, bos_id),  # cls
        trim_offsets=True,
        add_prefix_space=False,
    )
    return backend

