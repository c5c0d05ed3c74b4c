"""The one-click objection pages a notice links to: the form, its receipt and a status page
(plain HTML in French and English, CSRF-protected, no JavaScript)."""
