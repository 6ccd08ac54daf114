"""The admin API as mounted in the real ingress app: its Redis, its middleware, its error handling."""

from __future__ import annotations

from tests.ingress.conftest import IngressFactory

ADMIN_TOKEN = "mounted-admin-token-0123456789abcdef"


async def test_admin_works_inside_the_ingress_app(ingress_factory: IngressFactory) -> None:
    """Through the ingress app an operator creates an account, a key and credit; the ingress' request id
    header is added; an API key is not an admin token; an unknown method is a 405 in the envelope."""
    async with ingress_factory(admin_token=ADMIN_TOKEN) as ingress:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        created = await ingress.client.post("/admin/accounts", json={"name": "ops"}, headers=admin)
        assert created.status_code == 201 and "x-request-id" in created.headers
        account_id = created.json()["id"]
        key = await ingress.client.post(f"/admin/accounts/{account_id}/keys", json={}, headers=admin)
        assert key.status_code == 201 and key.json()["secret"].startswith("ak-")
        credit = await ingress.client.post(
            f"/admin/accounts/{account_id}/credits", json={"amount_usd": "1.5"}, headers=admin
        )
        assert credit.json()["credit"]["balance_micros"] == 1_500_000

        with_api_key = await ingress.client.get("/admin/accounts", headers=ingress.headers())
        assert with_api_key.status_code == 401
        assert with_api_key.json()["error"]["code"] == "invalid_admin_token"
        wrong_method = await ingress.client.put("/admin/accounts", headers=admin)
        assert wrong_method.status_code == 405 and set(wrong_method.json()["error"]) >= {"message", "code"}


async def test_admin_is_disabled_in_the_ingress_app_without_a_token(ingress_factory: IngressFactory) -> None:
    """With no admin token configured, the mounted admin API answers 404 admin_disabled."""
    async with ingress_factory() as ingress:
        response = await ingress.client.get("/admin/accounts", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "admin_disabled"
