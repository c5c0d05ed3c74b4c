"""The one-click pages: language from Accept-Language, every value escaped."""

from services.gateway.pages.rendering import TEXTS, display_time, pick_language, render


def test_the_language_follows_accept_language_by_quality() -> None:
    assert pick_language("fr-FR,fr;q=0.9,en;q=0.8") == "fr"
    assert pick_language("de-DE,en;q=0.5,fr;q=0.7") == "fr"
    assert pick_language("en-GB,fr;q=0.9") == "en"
    assert pick_language("de, it;q=0.5") == "en"
    assert pick_language(None) == "en"
    assert pick_language("fr;q=zero, en;q=0.1") == "en"


def test_an_explicit_choice_wins_when_supported() -> None:
    assert pick_language("fr-FR", override="en") == "en"
    assert pick_language("en", override="xx") == "en"


def test_both_languages_have_every_text() -> None:
    assert TEXTS["en"].keys() == TEXTS["fr"].keys()


def test_user_ids_and_tokens_are_escaped_in_the_page() -> None:
    html = render(
        "object.html", "en", token='"><script>alert(1)</script>', csrf="c", user_id="<img src=x onerror=alert(1)>",
        expires="2025-01-01 00:00:00 UTC", switch_url="/object?token=a&lang=fr",
    )
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="/object?token=a&amp;lang=fr"' in html
    assert '<html lang="en">' in html


def test_times_are_shown_in_utc() -> None:
    assert display_time("2025-05-27T10:00:01.123456Z") == "2025-05-27 10:00:01 UTC"
    assert display_time(None) is None
