"""The live server and the OpenAI-speaking vendor every gateway test module shares."""

from __future__ import annotations

import pytest

from tests.gateway.helpers import live_server
from tests.llm.vendors import OpenAIHandler, serve


@pytest.fixture(scope="module")
def url(settings, endpoints):
    with live_server(settings, endpoints) as found:
        yield found


@pytest.fixture(scope="module")
def vendor():
    with serve(OpenAIHandler) as server:
        yield server
