"""PegasusTokenizer: parity with transformers' PegasusTokenizerFast on the same tokenizer.json (one trained
here, one converted by transformers from a SentencePiece model), special ids, truncation, saving, errors."""

import json
from pathlib import Path

import pytest

from led.errors import CheckpointError
from led.models.pegasus_x import PegasusTokenizer

transformers = pytest.importorskip("transformers")

CORPUS = [
    "Long documents need long attention windows.",
    "the patients were treated with 5 mg of drug a ( n = 120 ) , p < 0.05 .",
    "Résumé: naïve café, Straße, Ångström, 日本語のテキスト, emoji 🤖🧬.",
    "we prove that the operator is bounded in $ l^2 ( \\mathbb{r}^n ) $ .\n\nsection 2 : results",
    "Tabs\tand  double  spaces, trailing space ",
    "PEGASUS-X summarizes 16384 tokens; ROUGE-1 = 45.2 % on arXiv !",
] * 20

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello world ",
    "",
    " ",
    "a\nb\n\n c\n",
    "naïve café 🤖 日本語 Ω≈ç√",  # Ω≈ç√ never seen in training: <unk>
    "  two  spaces  and\ttabs\t",
    "the results ( table 1 ) show p < 0.05 .",
    "x <mask_1> y <mask_2> z",
    "text with </s> and <pad> inside",
    "unseen words: zyxwvut qqqq",
    "ＦＵＬＬＷＩＤＴＨ ﬁ ① ",  # what an NFKC char map would rewrite
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[PegasusTokenizer, Path]:
    tokenizer = PegasusTokenizer.train(CORPUS, vocab_size=300)
    directory = tmp_path_factory.mktemp("pegasus_tok")
    tokenizer.save_pretrained(directory)
    return tokenizer, directory


def assert_same_as_transformers(ours: PegasusTokenizer, reference) -> None:
    for text in TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
    assert ours.encode_batch(TEXTS) == reference(TEXTS)["input_ids"]
    for text in TEXTS:
        ids = ours.encode(text)
        for skip in (True, False):
            expected = reference.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
            assert ours.decode(ids, skip_special_tokens=skip) == expected, (text, skip)
    assert ours.vocab_size == len(reference)
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (
        reference.pad_token_id, reference.eos_token_id, reference.unk_token_id)


def test_trained_special_ids(trained: tuple[PegasusTokenizer, Path]) -> None:
    tokenizer, _ = trained
    backend = tokenizer.backend
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 105)
    assert (backend.token_to_id("<mask_1>"), backend.token_to_id("<mask_2>")) == (2, 3)
    assert [backend.token_to_id(f"<unk_{i}>") for i in range(2, 103)] == list(range(4, 105))
    assert 106 < tokenizer.vocab_size <= 300
    assert tokenizer.encode("") == [1]
    assert 2 in tokenizer.encode("x <mask_1> y")  # special tokens are matched in text
    assert tokenizer.decode(tokenizer.encode(CORPUS[0])) == CORPUS[0]


def test_trained_matches_pegasus_tokenizer_fast(trained: tuple[PegasusTokenizer, Path]) -> None:
    tokenizer, directory = trained
    for name in ("tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
        assert (directory / name).is_file(), name
    reference = transformers.PegasusTokenizerFast.from_pretrained(str(directory))
    assert reference.mask_token_id == 3 and reference.convert_tokens_to_ids("<mask_1>") == 2
    assert_same_as_transformers(tokenizer, reference)
    assert_same_as_transformers(PegasusTokenizer.from_pretrained(directory), reference)
    auto = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert type(auto).__name__.startswith("PegasusTokenizer")
    assert [auto(t)["input_ids"] for t in TEXTS] == tokenizer.encode_batch(TEXTS)


def test_truncation_matches_and_keeps_eos(trained: tuple[PegasusTokenizer, Path]) -> None:
    tokenizer, directory = trained
    reference = transformers.PegasusTokenizerFast.from_pretrained(str(directory))
    text = " ".join(CORPUS[:6])
    for max_length in (1, 2, 10, 57):
        ids = tokenizer.encode(text, max_length=max_length)
        assert ids == reference(text, max_length=max_length, truncation=True)["input_ids"]
        assert len(ids) == max_length and ids[-1] == 1
    assert tokenizer.encode("short", max_length=100) == tokenizer.encode("short")
    assert tokenizer.encode_batch([text, "short"], max_length=10)[0] == tokenizer.encode(text, max_length=10)
    with pytest.raises(ValueError, match="max_length=0"):
        tokenizer.encode(text, max_length=0)


def test_decode_drops_label_padding(trained: tuple[PegasusTokenizer, Path]) -> None:
    tokenizer, _ = trained
    ids = tokenizer.encode("Hello world")
    assert tokenizer.decode(ids + [-100, -100]) == tokenizer.decode(ids)
    assert tokenizer.decode_batch([tokenizer.encode("a b"), ids]) == ["a b", tokenizer.decode(ids)]


def test_tokenizer_json_converted_by_transformers(tmp_path: Path) -> None:
    """A SentencePiece model → transformers' PEGASUS conversion (with the nmt_nfkc char map) → read by ours."""
    spm = pytest.importorskip("sentencepiece")
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS), encoding="utf-8")
    spm_dir = tmp_path / "spm"
    spm_dir.mkdir()
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"), model_prefix=str(spm_dir / "spiece"), vocab_size=150,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
        minloglevel=2, num_threads=1,
    )
    (spm_dir / "spiece.vocab").unlink()
    converted = transformers.PegasusTokenizerFast.from_pretrained(str(spm_dir))
    out = tmp_path / "converted"
    converted.save_pretrained(str(out))
    assert json.loads((out / "tokenizer.json").read_text())["normalizer"]["normalizers"][0]["type"] == "Precompiled"

    ours = PegasusTokenizer.from_pretrained(out)
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (0, 1, 105)
    assert_same_as_transformers(ours, converted)
    assert_same_as_transformers(ours, transformers.PegasusTokenizerFast.from_pretrained(str(out)))
    # PEGASUS shifts the SentencePiece ids by 103; on text without stray spaces the two agree
    processor = spm.SentencePieceProcessor(model_file=str(spm_dir / "spiece.model"))
    for text in ("Hello world", "the results ( table 1 ) show p < 0.05 .", "naïve café 日本語"):
        assert ours.encode(text) == [i + 103 for i in processor.encode(text)] + [1], text


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size=50 is too small"):
        PegasusTokenizer.train(CORPUS, vocab_size=50)
    (tmp_path / "spiece.model").write_bytes(b"")
    with pytest.raises(ValueError, match="expected tokenizer.json.*convert spiece.model"):
        PegasusTokenizer.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        PegasusTokenizer.from_pretrained(tmp_path / "missing")
