"""The one-click form's CSRF token: the cookie and the form must agree, for this link."""

from services.gateway.pages import csrf

KEY = csrf.csrf_key("a-test-secret-that-is-long-enough-for-hs256")


def test_a_form_token_from_the_page_passes_with_its_cookie() -> None:
    nonce = csrf.new_nonce()
    assert csrf.check(KEY, "link-1", "alice", csrf.form_token(KEY, "link-1", "alice", nonce), nonce) == nonce


def test_without_the_cookie_or_with_another_cookie_it_fails() -> None:
    nonce = csrf.new_nonce()
    form = csrf.form_token(KEY, "link-1", "alice", nonce)
    assert csrf.check(KEY, "link-1", "alice", form, None) is None
    assert csrf.check(KEY, "link-1", "alice", form, csrf.new_nonce()) is None


def test_a_form_token_is_bound_to_its_link_and_user() -> None:
    nonce = csrf.new_nonce()
    form = csrf.form_token(KEY, "link-1", "alice", nonce)
    assert csrf.check(KEY, "link-2", "alice", form, nonce) is None
    assert csrf.check(KEY, "link-1", "bob", form, nonce) is None


def test_a_forged_or_malformed_form_token_fails() -> None:
    nonce = csrf.new_nonce()
    assert csrf.check(KEY, "link-1", "alice", f"{nonce}.forged", nonce) is None
    assert csrf.check(KEY, "link-1", "alice", nonce, nonce) is None
    assert csrf.check(KEY, "link-1", "alice", "", nonce) is None
    other_key = csrf.csrf_key("another-secret-that-is-also-long-enough")
    assert csrf.check(KEY, "link-1", "alice", csrf.form_token(other_key, "link-1", "alice", nonce), nonce) is None
