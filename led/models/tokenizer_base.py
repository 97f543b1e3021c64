"""What the families' tokenizers share: a `tokenizers.Tokenizer` backend whose post-processor adds the special
tokens, truncation that keeps `</s>` last (as `transformers`' `truncation=True`), and decoding that drops the -100
label padding. A family's tokenizer (`led.models.tokenizer.LEDTokenizer`, `led.models.pegasus_x.tokenizer.
PegasusTokenizer`) adds loading, training and saving in its own format."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import ClassVar

from tokenizers import Tokenizer

from led.errors import CheckpointError, first_line

TOKENIZER_ADVICE = "give a tokenizer directory written by train.py or transformers' save_pretrained"


class TokenizerBase:
    # The special tokens `encode` puts around a text (e.g. "<s> and </s>"), for the truncation message, and how
    # many there are: `max_length` must leave room for them.
    specials_around_text: ClassVar[str]
    num_specials_around_text: ClassVar[int]
    eos_token: ClassVar[str]

    def __init__(self, backend: Tokenizer) -> None:
        # Truncation and padding are done in `encode`, so the backend must not do either on its own
        # (a tokenizer.json saved elsewhere may carry such settings).
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend

    @property
    def eos_token_id(self) -> int:
        return self._id(self.eos_token)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (what the embedding table must hold)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def _id(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        assert token_id is not None  # a family's __init__ checks its special tokens
        return token_id

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """The text with its special tokens as ids; with `max_length`, the text is cut so the result ends in
        `</s>`."""
        return self._truncate(self.backend.encode(text).ids, max_length)

    def encode_batch(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """`encode` for many texts at once (parallel in the Rust backend)."""
        encodings = self.backend.encode_batch(list(texts))
        return [self._truncate(e.ids, max_length) for e in encodings]

    def _truncate(self, ids: list[int], max_length: int | None) -> list[int]:
        if max_length is None or len(ids) <= max_length:
            return ids
        if max_length < self.num_specials_around_text:
            raise ValueError(f"max_length={max_length} must be >= {self.num_specials_around_text} to hold "
                             f"{self.specials_around_text} (or None for no limit)")
        # same result as transformers' truncation=True: the first max_length-1 ids (any start token among them)
        # and </s>
        return ids[: max_length - 1] + [self.eos_token_id]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Ids back to text. Negative ids (the -100 label padding) are dropped.

        No "clean-up" of spaces before punctuation is applied: arXiv/PubMed text is tokenised with
        spaces around punctuation, and ROUGE must see the text as the model produced it.
        """
        return self.backend.decode(_valid_ids(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> list[str]:
        """`decode` for each sequence of ids (e.g. a (B, T) tensor's rows)."""
        rows = [_valid_ids(ids) for ids in batch]
        return self.backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)


def _valid_ids(ids: Iterable[int]) -> list[int]:
    return [int(i) for i in ids if int(i) >= 0]


def read_tokenizer_file(path: str | os.PathLike) -> Tokenizer:
    """The `tokenizers` pipeline of a tokenizer.json; one that cannot be read is a CheckpointError naming the file
    and what is wrong with it."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the Rust library raises a plain Exception for every unreadable file
        words = first_line(error)
        problem = json_problem(path, words) or f"it is not in the format the tokenizers library reads ({words})"
        raise CheckpointError(f"tokenizer {path} cannot be read: {problem}; {TOKENIZER_ADVICE}") from None


def json_problem(path: str | os.PathLike, words: str) -> str | None:
    """Why the JSON file at `path`, which a reader refused saying `words` (with the line and column), cannot be read
    at all: not UTF-8, not valid JSON; None when it is valid JSON (of another shape than the reader's)."""
    try:
        with open(path, encoding="utf-8") as file:
            json.load(file)
    except UnicodeDecodeError as decode_error:
        return f"it is not UTF-8 text (byte {decode_error.object[decode_error.start:decode_error.start + 1]!r} at " \
               f"offset {decode_error.start})"
    except OSError as os_error:
        return f"it cannot be opened ({os_error.strerror or os_error})"
    except json.JSONDecodeError:
        return f"it is not valid JSON ({words})"
    return None


def train_unigram(texts: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    """The pieces and scores (log probabilities) of a SentencePiece Unigram trained on `texts` by the `sentencepiece`
    library, its `<unk>` first: at most `vocab_size` entries, fewer when the texts hold fewer useful pieces.

    `texts` are given as the tokenizer's normalizer leaves them. Every character they contain gets a piece (no text
    seen in training encodes as `<unk>`), and pieces never cross a space, as the Metaspace pre-tokenizer splits.
    The result depends on the texts and `vocab_size` alone: sentencepiece trains on one thread here, because its EM
    sums expected counts per thread (another thread count gives other scores), and the `tokenizers` Unigram trainer
    is not used because it is not repeatable even on one thread (its hash maps' order reaches the scores and ids).
    """
    import sentencepiece  # only where a Unigram is trained, not where one is loaded

    lines = [text for text in texts if text.strip()]
    if not lines:
        raise ValueError("no text to train a Unigram tokenizer on")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="unigram", vocab_size=vocab_size,
            hard_vocab_limit=False, character_coverage=1.0, normalization_rule_name="identity",
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=1, minloglevel=2,
            max_sentence_length=max(len(line.encode()) for line in lines) + 1)  # whole documents, none skipped
    except RuntimeError as error:  # e.g. more distinct characters than vocab_size
        raise ValueError(f"a {vocab_size}-piece Unigram cannot be trained on these texts: {error}") from None
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
