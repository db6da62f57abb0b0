"""The JSON API (DRF) and its OpenAPI schema, mounted at /api/.

Reads go through queries.py, which limits every list to the datasets the user is a member
of; single objects go through reviewapp.access (404 when not allowed); writes call one
service. Authentication is DRF's (session or token): the API's views are exempt from
LoginRequiredMiddleware, which knows only sessions, and require an authenticated user
themselves (401/403 otherwise)."""
