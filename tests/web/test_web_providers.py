"""The providers page's forms (owners and admins, as the API): a provider, a model with
its price, an alias; each invalid form shows its field's problem and saves nothing."""

from __future__ import annotations

import httpx

from agentplane.gateway import aliases
from agentplane.llm import service as llm
from tests.conftest import make_tenant
from tests.web.helpers import browser, person, sign_in


async def _state(db, tenant_id) -> tuple[set[str], set[str], set[str]]:
    async with db.tenant_connection(tenant_id) as conn:
        return ({p.name for p in await llm.list_providers(conn)},
                {f"{m.provider}/{m.name}" for m in await llm.list_models(conn)},
                {a.name for a in await aliases.list_(conn)})


async def test_add_a_provider_a_priced_model_and_an_alias(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        r = await c.get("/providers")
        assert r.status_code == 200
        assert all(f'id="{f}"' in r.text for f in ("add-provider", "add-model", "add-alias"))
        before = await _state(db, owner.tenant_id)

        async def post(path: str, **data: str) -> httpx.Response:
            return await c.post(path, data={"csrf": token, **data})

        for url, problem in (("ftp://example.com/v1", "must be an http(s) URL"),
                             ("http://", "http(s) URL with a host"),
                             ("https://example.com/v1?x=1", "no query")):
            bad = await post("/providers", name="web-prov", type="openai_compatible",
                             base_url=url, api_key="sk-not-kept")
            assert bad.status_code == 422 and problem in bad.text, url
            assert 'class="field invalid"><label for="provider-base_url"' in bad.text
            assert 'value="web-prov"' in bad.text and "sk-not-kept" not in bad.text
        bad = await post("/providers", name="no spaces please", type="psychic")
        assert bad.status_code == 422
        assert 'for="provider-name"' in bad.text.split('field invalid')[1]
        assert "Input should be" in bad.text  # the type
        assert await _state(db, owner.tenant_id) == before

        made = await post("/providers", name="web-prov", type="openai_compatible",
                          base_url="http://127.0.0.1:9/v1", api_key="sk-secret-web")
        assert made.status_code == 303, made.text
        page = await c.get(made.headers["location"])
        assert "The provider is added." in page.text and "<strong>web-prov</strong>" in page.text
        assert "sk-secret-web" not in page.text
        again = await post("/providers", name="web-prov", type="offline")
        assert again.status_code == 422 and "already exists" in again.text

        for prices, field in (
                ({"input_per_mtok": "-1", "output_per_mtok": "2"}, "input_per_mtok"),
                ({"input_per_mtok": "1", "output_per_mtok": "lots"}, "output_per_mtok")):
            bad = await post("/providers/models", provider="web-prov", name="wm-1", **prices)
            assert bad.status_code == 422
            assert f'field invalid"><label for="model-{field}"' in bad.text, field
        bad = await post("/providers/models", provider="web-prov", name="wm-1",
                         context_window="0", input_per_mtok="1", output_per_mtok="2")
        assert bad.status_code == 422 and 'invalid"><label for="model-context_window"' in bad.text
        state = await _state(db, owner.tenant_id)
        assert "web-prov/wm-1" not in state[1]

        made = await post("/providers/models", provider="web-prov", name="wm-1",
                          context_window="128000", input_per_mtok="1.5", output_per_mtok="3")
        assert made.status_code == 303, made.text
        async with db.tenant_connection(owner.tenant_id) as conn:
            model = next(m for m in await llm.list_models(conn) if m.name == "wm-1")
        assert float(model.prices[0].input_per_mtok) == 1.5 and model.context_window == 128000

        bad = await post("/providers/aliases", name="fast", deployments="nowhere/xyz 1")
        assert bad.status_code == 422 and "no model nowhere/xyz" in bad.text
        bad = await post("/providers/aliases", name="fast", deployments="web-prov/wm-1 -3")
        assert bad.status_code == 422 and 'invalid"><label for="alias-deployments"' in bad.text
        bad = await post("/providers/aliases", name="has space", deployments="web-prov/wm-1")
        assert bad.status_code == 422 and 'invalid"><label for="alias-name"' in bad.text
        assert not (await _state(db, owner.tenant_id))[2]
        made = await post("/providers/aliases", name="fast", strategy="priority",
                          deployments="web-prov/wm-1 2\nweb-prov")
        assert made.status_code == 303, made.text
        page = await c.get("/providers")
        assert 'data-alias="fast"' in page.text and "web-prov/wm-1 (2.0)" in page.text
        gone = await post("/providers/aliases/fast/delete")
        assert gone.status_code == 303 and not (await _state(db, owner.tenant_id))[2]


async def test_providers_are_managed_by_owners_and_admins_only(app, db) -> None:
    owner = await person(db)
    developer = await person(db, "developer", tenant=owner)
    before = await _state(db, owner.tenant_id)
    async with browser(app) as c:
        token = await sign_in(c, developer)
        r = await c.get("/providers")
        assert r.status_code == 200 and 'id="add-provider"' not in r.text
        for path, data in (("/providers", {"name": "dev-prov", "type": "offline"}),
                           ("/providers/models", {"provider": "offline", "name": "x"}),
                           ("/providers/aliases", {"name": "a", "deployments": "offline"})):
            assert (await c.post(path, data={"csrf": token, **data})).status_code == 403, path
    assert await _state(db, owner.tenant_id) == before
    dev = await make_tenant(db, role="developer")  # the API says the same
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as api:
        r = await api.post("/v1/llm/providers", headers=dev.headers,
                           json={"name": "dev-prov", "type": "offline"})
        assert r.status_code == 403
        r = await api.post("/v1/gateway/aliases", headers=dev.headers,
                           json={"name": "a", "deployments": [{"name": "offline"}]})
        assert r.status_code == 403
