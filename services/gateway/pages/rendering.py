"""The one-click pages: language choice, texts in French and English, Jinja2 rendering
(autoescaped: every value shown, the user id included, is escaped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"

# Headers for every page: the token is in the URL, so no Referer may carry it away.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def pick_language(accept_language: str | None, override: str | None = None) -> str:
    """`override` (the page's language switch) if supported, else the best of
    Accept-Language by q-value (ties keep the header's order), else English."""
    if override in LANGUAGES:
        return override  # type: ignore[return-value]
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for part in (accept_language or "")[:1000].split(","):
        tag, _, params = part.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if language in LANGUAGES and q > best_q:
            best, best_q = language, q
    return best


TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Keep your posts out of AI training",
        "intro": "This platform uses public posts to train artificial intelligence models. You can object, for free and at any time.",
        "used_heading": "What is used",
        "used": "The text of your public posts, with their language, country and date.",
        "not_used": "Never used: posts shown only to friends, private posts, and posts by minors.",
        "effect_heading": "What your objection does",
        "effect": "Your posts already collected for training are deleted, and none of your posts is added from now on.",
        "withdraw": "You can withdraw your objection later; posts written while it was active stay out.",
        "account": "This link is for the account",
        "expires": "Link valid until",
        "button": "Object to the use of my posts",
        "receipt_title": "Your objection is recorded",
        "receipt_intro": "Your posts are now being removed from the training data. This usually takes a few seconds.",
        "reference": "Reference",
        "received_at": "Received at",
        "status_link": "Follow the status of your objection",
        "status_title": "Status of your objection",
        "status_none": "No objection is recorded for this account.",
        "status_received": "Your objection is received; it is being applied.",
        "status_enforced": "Your posts are kept out of training; the deletion of stored posts is under way.",
        "status_purged": "Done: your posts are kept out of training and stored posts were deleted.",
        "status_withdrawn": "Your objection was withdrawn.",
        "history": "History",
        "kind": "Request",
        "kind_object": "Objection",
        "kind_withdraw": "Withdrawal",
        "channel": "Channel",
        "enforced_at": "Applied at",
        "purged_at": "Deleted at",
        "rows_purged": "Posts deleted",
        "refresh": "Refresh",
        "pending": "in progress",
        "other_language": "Français",
        "invalid_title": "This link is not valid",
        "invalid_body": "The link may be incomplete or altered. Open it again from the notice, or object from your account settings.",
        "expired_title": "This link has expired",
        "expired_body": "Links in notices are valid for a limited time. You can still object from your account settings.",
        "csrf_title": "This form could not be sent",
        "csrf_body": "For your safety, the form must be sent from the objection page itself. Open your link again and press the button.",
        "unavailable_title": "Your objection could not be recorded right now",
        "unavailable_body": "We could not confirm it. Please try again in a moment: trying again never files it twice.",
        "status_unavailable_body": "The status cannot be shown right now. Please try again in a moment.",
        "limited_title": "Too many attempts",
        "limited_body": "Please wait a few seconds and try again.",
        "try_again": "Try again",
    },
    "fr": {
        "title": "Exclure vos publications de l’entraînement de l’IA",
        "intro": "Cette plateforme utilise les publications publiques pour entraîner des modèles d’intelligence artificielle. Vous pouvez vous y opposer, gratuitement et à tout moment.",
        "used_heading": "Ce qui est utilisé",
        "used": "Le texte de vos publications publiques, avec leur langue, leur pays et leur date.",
        "not_used": "Jamais utilisées : les publications réservées aux amis, les publications privées et celles des mineurs.",
        "effect_heading": "Ce que fait votre opposition",
        "effect": "Vos publications déjà collectées pour l’entraînement sont supprimées, et aucune de vos publications n’est plus ajoutée.",
        "withdraw": "Vous pourrez retirer votre opposition plus tard ; les publications écrites pendant qu’elle était active restent exclues.",
        "account": "Ce lien concerne le compte",
        "expires": "Lien valable jusqu’au",
        "button": "Je m’oppose à l’utilisation de mes publications",
        "receipt_title": "Votre opposition est enregistrée",
        "receipt_intro": "Vos publications sont en cours de retrait des données d’entraînement. Cela prend en général quelques secondes.",
        "reference": "Référence",
        "received_at": "Reçue le",
        "status_link": "Suivre l’état de votre opposition",
        "status_title": "État de votre opposition",
        "status_none": "Aucune opposition n’est enregistrée pour ce compte.",
        "status_received": "Votre opposition est reçue ; elle est en cours d’application.",
        "status_enforced": "Vos publications sont exclues de l’entraînement ; la suppression des publications stockées est en cours.",
        "status_purged": "C’est fait : vos publications sont exclues de l’entraînement et les publications stockées ont été supprimées.",
        "status_withdrawn": "Votre opposition a été retirée.",
        "history": "Historique",
        "kind": "Demande",
        "kind_object": "Opposition",
        "kind_withdraw": "Retrait",
        "channel": "Canal",
        "enforced_at": "Appliquée le",
        "purged_at": "Supprimées le",
        "rows_purged": "Publications supprimées",
        "refresh": "Actualiser",
        "pending": "en cours",
        "other_language": "English",
        "invalid_title": "Ce lien n’est pas valide",
        "invalid_body": "Le lien est peut-être incomplet ou modifié. Ouvrez-le à nouveau depuis la notification, ou opposez-vous depuis les paramètres de votre compte.",
        "expired_title": "Ce lien a expiré",
        "expired_body": "Les liens des notifications sont valables pour une durée limitée. Vous pouvez toujours vous opposer depuis les paramètres de votre compte.",
        "csrf_title": "Ce formulaire n’a pas pu être envoyé",
        "csrf_body": "Pour votre sécurité, le formulaire doit être envoyé depuis la page d’opposition elle-même. Ouvrez à nouveau votre lien et appuyez sur le bouton.",
        "unavailable_title": "Votre opposition n’a pas pu être enregistrée pour le moment",
        "unavailable_body": "Nous n’avons pas pu la confirmer. Merci de réessayer dans un instant : un nouvel essai ne la compte jamais deux fois.",
        "status_unavailable_body": "L’état ne peut pas être affiché pour le moment. Merci de réessayer dans un instant.",
        "limited_title": "Trop de tentatives",
        "limited_body": "Merci de patienter quelques secondes avant de réessayer.",
        "try_again": "Réessayer",
    },
}

_environment = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, language: str, **values: Any) -> str:
    other = "fr" if language == "en" else "en"
    return _environment.get_template(template).render(t=TEXTS[language], lang=language, other_lang=other, **values)


def display_time(value: str | None) -> str | None:
    """`2025-05-27T10:00:01.123456Z` -> `2025-05-27 10:00:01 UTC` (None stays None)."""
    if not value:
        return None
    date, _, time = value.partition("T")
    return f"{date} {time[:8]} UTC" if time else value
