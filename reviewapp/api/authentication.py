"""Token authentication that counts wrong tokens per client address: past
API_TOKEN_FAILURE_LIMIT in a window every token from that address, a valid one too, is a 429
until the window passes. DRF's rate throttles run only after authentication, so a request
with a wrong token (a 401) would never reach them."""
from rest_framework.authentication import SessionAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled

from ..signin_throttle import client_address, token_failure_count, token_wait_seconds


class ThrottledTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # no token offered: another authentication (the session) decides
        address = client_address(request._request)
        wait = token_wait_seconds(address=address)
        if wait:
            raise Throttled(wait=wait)
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            token_failure_count(address=address)
            raise


# Token first: DRF answers a request without credentials with the first class's
# WWW-Authenticate challenge, and only a class that has one (the token, not the session)
# makes that a 401 rather than a 403. The token class stands aside (None) when no token is
# offered, so a browser's session still signs it in, CSRF-checked as before.
API_AUTHENTICATION = [ThrottledTokenAuthentication, SessionAuthentication]
