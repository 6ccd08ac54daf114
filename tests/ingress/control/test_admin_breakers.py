"""GET /admin/breakers in the ingress app: every catalog deployment's breaker, behind the admin token."""

from __future__ import annotations

from shared.breaker import CircuitBreaker
from tests.ingress.conftest import IngressFactory
from tests.store_calls import record_failure

ADMIN_TOKEN = "breakers-admin-token-0123456789abcdef"


async def test_breakers_lists_every_deployment_with_its_state(ingress_factory: IngressFactory) -> None:
    """Closed deployments of the catalog are listed, and one whose breaker tripped shows open, its
    cooldown's end and a trip; an API key is refused."""
    async with ingress_factory(admin_token=ADMIN_TOKEN, breaker={"failure_threshold": 1}) as ingress:
        await record_failure(
            ingress.redis, CircuitBreaker(ingress.redis, ingress.settings.breaker), "simulated/lorem"
        )
        response = await ingress.client.get(
            "/admin/breakers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 200
        rows = {row["deployment"]: row for row in response.json()["data"]}
        assert set(rows) == {"simulated/echo", "simulated/lorem"}
        assert rows["simulated/echo"]["status"] == "closed" and rows["simulated/echo"]["opens_until"] is None
        lorem = rows["simulated/lorem"]
        assert lorem["status"] == "open" and lorem["trips"] == 1 and lorem["opens_until"] > 0
        refused = await ingress.client.get("/admin/breakers", headers=ingress.headers())
        assert refused.status_code == 401
