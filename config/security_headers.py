"""A Content-Security-Policy on every response.

The pages load only their own scripts (htmx and faceclean.js from /static/), images and charts
from their own origin, and post forms to themselves; a policy saying so turns an injected
<script> or an off-site form action into something the browser refuses, behind the escaping
the templates already do. Inline styles stay allowed: htmx adds its indicator style that way.
Django 5.2 has no CSP setting of its own (6.0 brings one)."""
from django.conf import settings

DEFAULT_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                  "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
                  "frame-ancestors 'none'")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_POLICY)

    def __call__(self, request):
        response = self.get_response(request)
        if self.policy:
            response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
