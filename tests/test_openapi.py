"""docs/openapi.yaml is the document navai serves, and it describes what navai answers."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import openapi_spec_validator
import yaml

from navai_core import Navai, NavaiConfig, RequestContext

DOC = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
REGENERATE = (
    'python -c "import yaml; from navai_core import Navai, NavaiConfig; '
    "d = Navai(NavaiConfig(health_path='/health', openapi_path='/openapi.json')).openapi(); "
    "d['info']['version'] = 'see /openapi.json'; "
    "open('docs/openapi.yaml', 'w').write(yaml.safe_dump(d, sort_keys=False))\""
)


def served():
    return Navai(NavaiConfig(health_path="/health", openapi_path="/openapi.json"))


def test_docs_openapi_yaml_matches_the_served_document():
    shipped = yaml.safe_load(DOC.read_text())
    document = served().openapi()
    shipped["info"]["version"] = document["info"]["version"]
    assert shipped == document, f"docs/openapi.yaml is stale; regenerate with: {REGENERATE}"


def test_the_document_is_valid_openapi_31_and_lists_every_route():
    document = served().openapi()
    assert document["openapi"] == "3.1.0"
    openapi_spec_validator.validate(document)
    assert set(document["paths"]) == {route.path for route in served().routes}


def test_custom_paths_and_switched_off_routes_are_reflected():
    navai = Navai(NavaiConfig(client_secret_path="/voice/token", functions_enabled=False))
    paths = navai.openapi()["paths"]
    assert "/voice/token" in paths
    assert "/navai/functions" not in paths


def test_served_at_openapi_path():
    reply = served().handle(RequestContext("GET", "/openapi.json"), b"")
    assert reply.status == 200
    assert reply.body["paths"]["/navai/realtime/client-secret"]["post"]["operationId"] == (
        "createClientSecret"
    )


def test_error_replies_match_the_documented_error_schema():
    navai = served()
    error_schema = navai.openapi()["paths"]["/navai/realtime/client-secret"]["post"]["responses"][
        "401"
    ]["content"]["application/json"]["schema"]
    context = RequestContext(
        "POST", "/navai/realtime/client-secret", {"Content-Type": "application/json"}
    )
    reply = navai.handle(context, b"{}")
    assert reply.status == 401
    jsonschema.validate(reply.body, error_schema)


def test_the_document_names_the_servers_default_models():
    body = served().openapi()["paths"]["/navai/realtime/client-secret"]["post"]["requestBody"]
    fields = body["content"]["application/json"]["schema"]["properties"]
    assert fields["model"]["default"] == "gpt-realtime-2.1"
    assert fields["voice"]["default"] == "marin"
    custom = Navai(NavaiConfig(model="gpt-realtime-2.1-mini", transcription_model="gpt-transcribe"))
    paths = custom.openapi()["paths"]
    secret = paths["/navai/realtime/client-secret"]["post"]["requestBody"]["content"]
    assert secret["application/json"]["schema"]["properties"]["model"]["default"] == (
        "gpt-realtime-2.1-mini"
    )
    heard = paths["/navai/realtime/transcription-secret"]["post"]["requestBody"]["content"]
    assert heard["application/json"]["schema"]["properties"]["model"]["default"] == (
        "gpt-transcribe"
    )
