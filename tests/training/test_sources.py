"""Source addresses: the held-out list's normalisation, and outlets grouped into newsrooms."""

import hashlib

import pytest

from training.sources import load_heldout, normalise_url, outlet_family, url_hash


@pytest.mark.parametrize("url, normal", [
    ("https://www.Example.kz/news/1/?x=2", "example.kz/news/1"),  # the list header's own example
    ("  http://kaz.zakon.kz/a/b.html#top ", "kaz.zakon.kz/a/b.html"),
    ("https://hantv.kz/?p=35187", "hantv.kz"),
    ("tengrinews.kz/news/", "tengrinews.kz/news"),
])
def test_urls_normalise_as_the_heldout_list_says(url, normal):
    assert normalise_url(url) == normal
    assert url_hash(url) == hashlib.sha256(normal.encode()).hexdigest()


def test_heldout_lists_are_merged_and_comments_skipped(tmp_path):
    a = tmp_path / "a.sha256"
    a.write_text("# header\n" + url_hash("https://a.kz/1") + "\n\n")
    b = tmp_path / "b.sha256"
    b.write_text(url_hash("https://b.kz/2").upper() + "\n")
    assert load_heldout([a, b, tmp_path / "missing"]) == {url_hash("https://a.kz/1"), url_hash("https://b.kz/2")}


def test_the_shipped_list_is_loaded():
    assert len(load_heldout()) >= 200


@pytest.mark.parametrize("outlet, family", [
    ("kaz.zakon.kz", "zakon.kz"), ("zakon.kz", "zakon.kz"), ("https://m.tengrinews.kz/x", "tengrinews.kz"),
    ("www.gov.kz", "gov.kz"), ("astana.gov.kz", "astana.gov.kz"), ("bbc.co.uk", "bbc.co.uk"),
])
def test_outlets_group_into_newsrooms(outlet, family):
    assert outlet_family(outlet) == family
