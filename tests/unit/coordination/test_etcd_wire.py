"""The JSON gateway's message forms (`bcd.coordination.etcd_wire`): base64 keys and values, int64 as strings,
default fields left out, and the two error payload forms."""

from __future__ import annotations

import base64

import pytest

from bcd.coordination.etcd_wire import GRPC_UNAVAILABLE, Compare, KeyValue, Op, OpResult, error_of, prefix_end


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("key", "end"), [("/bcd/a/", b"/bcd/a0"), ("a\xff", b"a\xc3\xc0"), ("", b"\0")])
def test_prefix_end_is_the_first_key_after_every_key_under_the_prefix(key: str, end: bytes) -> None:
    assert prefix_end(key) == end


def test_a_key_value_leaves_out_its_default_fields() -> None:
    kv = KeyValue.from_json({"key": b64("/bcd/x"), "create_revision": "7", "mod_revision": "9", "version": "2"})
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == ("/bcd/x", b"", 7, 9, 2, 0)


def test_compares_and_ops_in_the_gateway_form() -> None:
    assert Compare.create_revision("/k", "=", 0).to_json() == {
        "key": b64("/k"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    assert Compare.value("/k", "!=", b"v").to_json()["value"] == b64("v")
    assert Op.put("/k", b"v", lease=5).to_json() == {"request_put": {"key": b64("/k"), "value": b64("v"), "lease": "5"}}
    assert Op.delete("/p/", prefix=True).to_json() == {
        "request_delete_range": {"key": b64("/p/"), "range_end": b64("/p0")}}
    assert OpResult.from_json({"response_delete_range": {"deleted": "3"}}) == OpResult("delete", deleted=3)


def test_a_compare_refuses_an_operand_of_the_wrong_type_or_an_unknown_operator() -> None:
    with pytest.raises(ValueError, match="a VALUE compare needs bytes"):
        Compare("/k", "VALUE", "=", 3)
    with pytest.raises(ValueError, match="compare operator must be one of"):
        Compare("/k", "MOD", ">=", 3)  # type: ignore[arg-type]


def test_error_payloads_in_both_forms() -> None:
    assert error_of({"error": "etcdserver: no leader", "code": 14, "message": "etcdserver: no leader"}) == (
        GRPC_UNAVAILABLE, "etcdserver: no leader")
    assert error_of({"error": {"grpc_code": 14, "http_code": 503, "message": "no leader"}}) == (14, "no leader")
    assert error_of({"result": {}}) is None
