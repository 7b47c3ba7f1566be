"""The 401/403 of the key policy keep the contract's texts (the Node package's setting
names, which the clients show); the server's log line names the Python settings."""

from __future__ import annotations

import logging

import pytest

from navai_core import Forbidden, Navai, NavaiConfig, RequestContext, Unauthorized, resolve_api_key


def refusal_lines(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "navai" and "refused" in r.getMessage()
    ]


def test_a_missing_key_logs_the_setting_to_set(caplog):
    with caplog.at_level(logging.WARNING, logger="navai"), pytest.raises(Unauthorized) as info:
        resolve_api_key(None, None, allow_request=False)
    assert info.value.message == (
        "Missing API key. Configure openaiApiKey or send apiKey in request."
    )
    [line] = refusal_lines(caplog)
    assert "401" in line and "OPENAI_API_KEY" in line


def test_a_refused_request_key_logs_the_setting_that_allows_it(caplog):
    with caplog.at_level(logging.WARNING, logger="navai"), pytest.raises(Forbidden) as info:
        resolve_api_key(None, "sk-from-browser-1234", allow_request=False)
    assert "allowApiKeyFromRequest=true" in info.value.message
    [line] = refusal_lines(caplog)
    assert "403" in line and "NAVAI_ALLOW_FRONTEND_API_KEY=true" in line
    assert "sk-from-browser-1234" not in line


def test_the_route_answers_the_contract_text_and_logs_ours(caplog):
    navai = Navai(NavaiConfig(functions_enabled=False))
    context = RequestContext(
        "POST", "/navai/realtime/client-secret", {"content-type": "application/json"}
    )
    with caplog.at_level(logging.WARNING, logger="navai"):
        reply = navai.handle(context, b"{}")
    assert reply.status == 401
    assert "OPENAI_API_KEY" in refusal_lines(caplog)[0]


def test_the_start_up_lines_name_both_settings():
    [line] = [p for p in NavaiConfig().problems() if "OPENAI_API_KEY" in p]
    assert "NAVAI_ALLOW_FRONTEND_API_KEY" in line
