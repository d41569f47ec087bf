"""Scoped tokens through the daemon's API (`bcd run` as a subprocess): a token limited to dorset-cc's services
is refused (403, with the reason) on hampshire-cc's and acts on its own."""

from __future__ import annotations

from typing import Any

from tests.integration.runbooks.daemon_kit import Estate, sha256

DORSET_TOKEN = "dorset-cc-token-0123456789"


def two_councils(estate: Estate) -> dict[str, Any]:
    """payroll (hampshire-cc's) and library (dorset-cc's) on the same two sites; a token for dorset-cc."""
    payroll = {**estate.service(mode="manual"), "labels": {"owner": "hampshire-cc"}}
    library = {**estate.service(mode="manual"), "labels": {"owner": "dorset-cc"}}
    config = estate.config(services={"payroll": payroll, "library": library})
    config["auth"]["tokens"].append({"name": "dana", "role": "operator", "sha256": sha256(DORSET_TOKEN),
                                     "scope": {"labels": {"owner": "dorset-cc"}}})
    return config


async def test_a_dorset_token_is_refused_on_a_hampshire_service_and_allowed_on_its_own(estate: Estate) -> None:
    daemon = await estate.start(two_councils(estate), ok=("payroll", "library"))
    for path in ("/api/v1/services/payroll/failover", "/api/v1/services/payroll/ack"):
        refused = await daemon.call("POST", path, token=DORSET_TOKEN, json_body={"reason": "x"})
        assert (refused.status, refused.content_type) == (403, "application/problem+json"), path
        assert refused.body["detail"] == "dana may act only on services labelled owner=dorset-cc; payroll is not"
    assert await daemon.runs("payroll") == []

    own = await daemon.call("POST", "/api/v1/services/library/failover", token=DORSET_TOKEN,
                            json_body={"reason": "drill"})
    assert (own.status, own.body["trigger"]) == (202, "dana")
    other = await daemon.transfer("failover", "payroll")  # olive's token has no scope
    assert other.status == 202, other
    aborted = await daemon.call("POST", f"/api/v1/runs/{other.body['id']}/abort", token=DORSET_TOKEN, json_body={})
    assert (aborted.status, aborted.body["detail"]) == (
        403, "dana may act only on services labelled owner=dorset-cc; payroll is not")
    assert (await daemon.wait_run(own.body["id"]))["result"] == "succeeded"
