"""LEDTokenizer: parity with transformers' BartTokenizerFast on the same files, training, saving, errors."""

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import AddedToken

from led.models.tokenizer import LEDTokenizer

transformers = pytest.importorskip("transformers")

CORPUS = [
    "Long documents need long attention windows.",
    "the patients were treated with 5 mg of drug a ( n = 120 ) , p < 0.05 .",
    "Résumé: naïve café, Straße, Ångström, 日本語のテキスト, emoji 🤖🧬.",
    "we prove that the operator is bounded in $ l^2 ( \\mathbb{r}^n ) $ .\n\nsection 2 : results",
    "Tabs\tand  double  spaces, trailing space ",
] * 20

TEXTS = [
    "Hello world",
    " Hello world",  # leading space changes the first token
    "",
    "a\nb\n\n c\n",
    "naïve café 🤖 日本語 Ω≈ç√",
    "  two  spaces  and\ttabs\t",
    "the results ( table 1 ) show p < 0.05 .",
    "x <mask> y",  # <mask> takes the space before it, as BART's tokenizer does
    "text with </s> and <s> inside",
    "unseen words: zyxwvut qqqq",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LEDTokenizer, Path]:
    tokenizer = LEDTokenizer.train(CORPUS, vocab_size=400, min_frequency=2)
    directory = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(directory)
    return tokenizer, directory


@pytest.fixture(scope="module")
def vocab_merges_dir(trained: tuple[LEDTokenizer, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only vocab.json + merges.txt, the way the LED checkpoints ship."""
    directory = tmp_path_factory.mktemp("vm")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(trained[1] / name, directory / name)
    return directory


def bart_fast(directory: Path):
    # BartTokenizerFast (transformers v4) makes <mask> strip the space to its left; pass it explicitly so
    # the reference behaves the same across transformers versions.
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    return transformers.BartTokenizerFast.from_pretrained(str(directory), mask_token=mask)


def test_trained_special_ids(trained: tuple[LEDTokenizer, Path]) -> None:
    tokenizer, _ = trained
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0, 1, 2, 3)
    assert tokenizer.backend.token_to_id("<mask>") == 4
    assert 261 < tokenizer.vocab_size <= 400
    assert tokenizer.encode("") == [0, 2]


def test_ids_match_bart_tokenizer_from_vocab_and_merges(vocab_merges_dir: Path) -> None:
    ours = LEDTokenizer.from_pretrained(vocab_merges_dir)
    reference = bart_fast(vocab_merges_dir)
    for text in TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text
    assert ours.encode_batch(TEXTS) == reference(TEXTS)["input_ids"]
    assert ours.vocab_size == len(reference)
    assert (ours.pad_token_id, ours.bos_token_id, ours.eos_token_id) == (
        reference.pad_token_id, reference.bos_token_id, reference.eos_token_id)


def test_truncation_matches_and_keeps_eos(vocab_merges_dir: Path) -> None:
    ours = LEDTokenizer.from_pretrained(vocab_merges_dir)
    reference = bart_fast(vocab_merges_dir)
    text = " ".join(CORPUS[:5])
    for max_length in (2, 3, 10, 57):
        ids = ours.encode(text, max_length=max_length)
        assert ids == reference(text, max_length=max_length, truncation=True)["input_ids"]
        assert len(ids) == max_length and ids[0] == 0 and ids[-1] == 2
    assert ours.encode("short", max_length=100) == reference("short")["input_ids"]
    assert ours.encode_batch([text, "short"], max_length=10)[0] == ours.encode(text, max_length=10)
    with pytest.raises(ValueError, match="max_length=1"):
        ours.encode(text, max_length=1)


def test_decode_matches_bart_tokenizer(vocab_merges_dir: Path) -> None:
    ours = LEDTokenizer.from_pretrained(vocab_merges_dir)
    reference = bart_fast(vocab_merges_dir)
    for text in TEXTS:
        ids = ours.encode(text)
        for skip in (True, False):
            expected = reference.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
            assert ours.decode(ids, skip_special_tokens=skip) == expected
    assert ours.decode(ours.encode(TEXTS[4])) == TEXTS[4]
    # label padding (-100) is dropped; rows of a batch decode independently
    assert ours.decode(ours.encode("Hello world") + [-100, -100]) == "Hello world"
    assert ours.decode_batch([ours.encode("a b"), ours.encode(" c")]) == ["a b", " c"]


def test_saved_directory_loads_in_transformers_and_back(trained: tuple[LEDTokenizer, Path]) -> None:
    tokenizer, directory = trained
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        assert (directory / name).is_file(), name
    auto = transformers.AutoTokenizer.from_pretrained(str(directory))
    reloaded = LEDTokenizer.from_pretrained(directory)
    for text in TEXTS:
        assert reloaded.encode(text) == tokenizer.encode(text) == auto(text)["input_ids"], text
    assert json.loads((directory / "vocab.json").read_text())["<mask>"] == 4


def test_vocab_without_mask_gets_it_appended(vocab_merges_dir: Path, tmp_path: Path) -> None:
    vocab = json.loads((vocab_merges_dir / "vocab.json").read_text())
    del vocab["<mask>"]
    vocab = {token: i for i, token in enumerate(vocab)}  # keep ids contiguous
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    shutil.copy(vocab_merges_dir / "merges.txt", tmp_path / "merges.txt")
    ours = LEDTokenizer.from_pretrained(tmp_path)
    reference = bart_fast(tmp_path)
    assert ours.backend.token_to_id("<mask>") == reference.mask_token_id == len(vocab)
    for text in TEXTS:
        assert ours.encode(text) == reference(text)["input_ids"], text


def test_training_rejects_tiny_vocab() -> None:
    with pytest.raises(ValueError, match="vocab_size=100"):
        LEDTokenizer.train(CORPUS, vocab_size=100)


def test_missing_local_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        LEDTokenizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "README.md").write_text("not a tokenizer")
    with pytest.raises(ValueError, match="README.md"):
        LEDTokenizer.from_pretrained(tmp_path)


def test_hub_failure_says_how_to_use_a_local_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match="local directory"):
        LEDTokenizer.from_pretrained("allenai/led-base-16384")
