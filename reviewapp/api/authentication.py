"""Token authentication that counts wrong tokens per client address: past
API_TOKEN_FAILURE_LIMIT in a window every token from that address, a valid one too, is a 429
until the window passes. DRF's rate throttles run only after authentication, so a request
with a wrong token (a 401) would never reach them."""
from rest_framework.authentication import TokenAuthentication, get_authorization_header
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
