"""The OpenAPI schema: generated without warnings, valid OpenAPI 3, listing every API route,
and served at /api/schema/ to signed-in users only."""
import re

import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient


def _param(match) -> str:
    name = match[1] or match[2]
    return "{id}" if name == "pk" else "{%s}" % name  # the schema calls primary keys "id"


def _api_routes() -> set[str]:
    """Every /api/ route of the URL map as an OpenAPI path ({id} for converters and groups)."""
    routes = set()

    def walk(patterns, prefix):
        for pattern in patterns:
            text = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            elif isinstance(pattern, URLPattern) and text.startswith("api/"):
                routes.add("/" + re.sub(r"\(\?P<(\w+)>[^)]*\)|<(?:\w+:)?(\w+)>", _param, text))

    walk(get_resolver().url_patterns, "")
    return routes


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "schema.yaml"
    # --fail-on-warn: an unannotated view or serializer field fails here, not in a client generator.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    return yaml.safe_load(out.read_text())


def test_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "FaceClean API"


def test_schema_lists_every_api_endpoint(schema):
    routes = _api_routes() - {"/api/", "/api/schema/"}  # the router's index and the schema itself
    assert routes, "no API routes found"
    assert routes == set(schema["paths"])


def test_schema_names_the_writes_and_their_conflicts(schema):
    paths = schema["paths"]
    decide = paths["/api/flags/{id}/decide/"]["post"]
    assert {"201", "400", "404", "409"} <= set(decide["responses"])
    assert "409" in paths["/api/rounds/"]["post"]["responses"]
    assert "409" in paths["/api/rounds/{id}/cancel/"]["post"]["responses"]
    assert "202" in paths["/api/jobs/export/"]["post"]["responses"]
    flag_params = {p["name"] for p in paths["/api/flags/"]["get"]["parameters"]}
    assert {"cursor", "dataset", "round", "kind", "state", "identity"} <= flag_params
    decision_params = {p["name"] for p in paths["/api/decisions/"]["get"]["parameters"]}
    assert {"cursor", "dataset", "round", "user", "action"} <= decision_params
    assert set(schema["components"]["securitySchemes"]) == {"cookieAuth", "tokenAuth"}


@pytest.mark.django_db
def test_schema_is_served_to_signed_in_users_only(user):
    assert APIClient().get("/api/schema/").status_code in (401, 403)
    client = APIClient()
    client.force_authenticate(user)
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert "/api/flags/" in response.json()["paths"]
