import unicodedata

import companion


def test_corpus_is_large_original_ptbr_text():
    text = companion.load_corpus()
    assert len(text) >= 100_000
    assert unicodedata.normalize("NFC", text) == text, "o corpus deve estar em NFC"
    assert "\r" not in text
    for word in ("ção", "não", "você", "está", "céu"):
        assert word in text


def test_corpus_has_the_chapter_one_examples():
    text = companion.load_corpus().lower()
    assert text.count("o céu está") >= 20
    assert "o rato roeu a roupa do rei de roma" in text
