"""Security headers on every answer: a Content-Security-Policy that runs only the page's own scripts and styles
(each inline one carries the request's nonce), no framing, no referrer, no sniffing, and HSTS behind HTTPS."""

from __future__ import annotations

import secrets

from flask import Flask, Response, g

#: One year, as browsers' preload lists expect; sent only when the session cookie is Secure (so HTTPS is in use).
HSTS = "max-age=31536000; includeSubDomains"


def csp_nonce() -> str:
    """This request's nonce for inline ``<script>`` and ``<style>`` (templates: ``nonce="{{ csp_nonce() }}"``)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return str(g.csp_nonce)


def _policy(nonce: str) -> str:
    return "; ".join((
        "default-src 'none'",
        f"script-src 'nonce-{nonce}'",
        f"style-src 'nonce-{nonce}'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ))


#: The policy of an answer that is no page.
_NOTHING = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    secure = app.config["SESSION_COOKIE_SECURE"]

    @app.after_request
    def protect(response: Response) -> Response:
        # A page gets its nonce; any other answer (JSON, a redirect) may run and embed nothing.
        html = response.mimetype == "text/html"
        response.headers["Content-Security-Policy"] = _policy(csp_nonce()) if html else _NOTHING
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if secure:
            response.headers["Strict-Transport-Security"] = HSTS
        return response
