"""The test transfers against a raw socket client: the Go one (Go's net/rpc/jsonrpc) and PyTransfer.

Every check runs against both, so the Python stand-in the fast sink tests
use provably answers as the real codec does; one test sends the same
requests to both and compares the answers and what each recorded.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any, Union

import falcon_transfers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgstats.sinks.falcon_metrics import MAX_TIMESTAMP, format_tags, item_problem

TIMEOUT_S = 10.0  # generous: only reached when something is broken
QUIET_S = 0.5  # how long a transfer that must not answer is watched


def item(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "endpoint": "host-01",
        "metric": "container.cpu.usage.cores",
        "value": 0.42,
        "step": 60,
        "counterType": "GAUGE",
        "tags": "app=web,container=4f1b2c3d5e6f",
        "timestamp": 1_700_000_000,
    }
    base.update(changes)
    return base


class Client:
    """One TCP connection speaking newline-delimited JSON-RPC 1.0."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self.buffer = b""

    def send(self, request: Union[dict[str, Any], bytes]) -> None:
        data = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
        self.sock.sendall(data)

    def update(self, items: list[Any], call_id: Any = 1) -> None:
        self.send({"method": "Transfer.Update", "params": [items], "id": call_id})

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the transfer")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        response: dict[str, Any] = json.loads(line)
        return response

    def call(self, method: str, params: Any, call_id: Any = 1) -> dict[str, Any]:
        self.send({"method": method, "params": params, "id": call_id})
        response = self.read()
        assert response["id"] == call_id
        return response

    def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives (and the connection stays open) for ``seconds``."""
        ready, _, _ = select.select([self.sock], [], [], seconds)
        return not ready

    def closed_by_peer(self) -> bool:
        """True once the transfer closed or reset the connection (waits up to TIMEOUT_S)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["go", "py"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def node(kind: str, tmp_path: Any) -> Iterator[falcon_transfers._Transfer]:
    with falcon_transfers.transfer(kind, tmp_path / "items.jsonl") as started:
        yield started


@pytest.fixture
def client(node: falcon_transfers._Transfer) -> Iterator[Client]:
    connection = Client(node.address)
    yield connection
    connection.close()


INVALID = [
    item(endpoint=""),
    item(metric=""),
    item(metric="kernel.hostname"),
    item(counterType="gauge"),
    item(counterType="RATE"),
    item(step=0),
    item(step=-60),
    item(value=""),
    item(value="abc"),
    item(value=True),
    item(value=None),
    item(value={"v": 1}),
    item(value=[1]),
    item(metric="m" * 300, tags="k=" + "v" * 209),  # 511 bytes
    None,
    {},  # every field missing: zero values
]


def test_update_counts_invalid_items_and_records_only_valid_ones(
    node: falcon_transfers._Transfer, client: Client
) -> None:
    valid = [
        item(metric="a", value=1),
        item(metric="b", value=-2.5e10, counterType="COUNTER"),
        item(metric="c", value="3.25", counterType="DERIVE"),  # a numeric string is a number
        item(metric="d", tags=""),
        item(metric="e", tags="z=1, a=2,no-equals,a=3"),  # normalised as the transfer does
        {**item(metric="f"), "Step": 30, "extra": "ignored"},  # keys match case-insensitively
        item(metric="m" * 300, tags="k=" + "v" * 208),  # 510 bytes
    ]
    batch = valid[:3] + INVALID + valid[3:]
    response = client.call("Transfer.Update", [batch])
    assert response["error"] is None
    result = response["result"]
    assert (result["Message"], result["Total"], result["Invalid"]) == (
        "ok",
        len(batch),
        len(INVALID),
    )
    assert node.accepted() == {
        ("host-01", "a", "app=web,container=4f1b2c3d5e6f", 1_700_000_000),
        ("host-01", "b", "app=web,container=4f1b2c3d5e6f", 1_700_000_000),
        ("host-01", "c", "app=web,container=4f1b2c3d5e6f", 1_700_000_000),
        ("host-01", "d", "", 1_700_000_000),
        ("host-01", "e", "a=3,z=1", 1_700_000_000),
        ("host-01", "f", "app=web,container=4f1b2c3d5e6f", 1_700_000_000),
        ("host-01", "m" * 300, "k=" + "v" * 208, 1_700_000_000),
    }
    recorded = {i["metric"]: i for i in node.accepted_items()}
    assert [recorded[m]["value"] for m in "abc"] == [1, -2.5e10, 3.25]
    assert recorded["b"]["counterType"] == "COUNTER"
    assert recorded["f"]["step"] == 30


def test_an_out_of_range_timestamp_becomes_the_transfers_clock(
    node: falcon_transfers._Transfer, client: Client
) -> None:
    before = int(time.time())
    response = client.call(
        "Transfer.Update",
        [[item(metric="zero", timestamp=0), item(metric="far", timestamp=4 * before)]],
    )
    after = int(time.time())
    assert response["result"]["Invalid"] == 0
    stamps = {i["metric"]: i["timestamp"] for i in node.accepted_items()}
    assert before <= stamps["zero"] <= after and before <= stamps["far"] <= after


@pytest.mark.parametrize(
    "bad",
    [
        {"step": 60.5},
        {"step": 60.0},
        {"step": "60"},
        {"step": 1 << 63},
        {"timestamp": "1700000000"},
        {"timestamp": True},
        {"endpoint": 5},
        {"tags": ["a=b"]},
        {"value": 10**400},
    ],
    ids=lambda bad: json.dumps(bad)[:40],
)
def test_a_type_error_rejects_the_whole_call_and_the_connection_stays(
    node: falcon_transfers._Transfer, client: Client, bad: dict[str, Any]
) -> None:
    response = client.call("Transfer.Update", [[item(metric="fine"), item(**bad)]], call_id=7)
    assert response["result"] is None
    assert isinstance(response["error"], str) and response["error"]
    assert node.accepted() == set()
    response = client.call("Transfer.Update", [[item(metric="after")]], call_id=8)
    assert response["error"] is None and response["result"]["Total"] == 1
    assert {k[1] for k in node.accepted()} == {"after"}


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_is_not_json_the_transfer_closes(
    node: falcon_transfers._Transfer, client: Client, constant: bytes
) -> None:
    fine = json.dumps(item(metric="fine")).encode()
    client.send(
        b'{"method":"Transfer.Update","params":[[' + fine + b',{"endpoint":"h","metric":"m",'
        b'"value":' + constant + b',"step":60,"counterType":"GAUGE","tags":"","timestamp":1}]],'
        b'"id":1}\n'
    )
    assert client.closed_by_peer()
    assert node.accepted() == set()
    again = Client(node.address)
    try:
        assert again.call("Transfer.Ping", [{}])["error"] is None
    finally:
        again.close()


def test_pipelined_calls_are_all_answered_matched_by_id(
    node: falcon_transfers._Transfer, client: Client
) -> None:
    requests = b""
    for n in range(30):
        batch = [item(metric=f"m{n}", timestamp=1_700_000_000 + k) for k in range(n + 1)]
        requests += json.dumps({"method": "Transfer.Update", "params": [batch], "id": n}).encode()
        requests += b"\n"
    requests += b'{"method":"Transfer.Ping","params":[{}],"id":"ping"}\n'
    client.send(requests)  # all at once, before reading any answer
    responses = {}
    for _ in range(31):
        response = client.read()
        responses[response["id"]] = response
    assert responses.pop("ping") == {"id": "ping", "result": {"code": 0}, "error": None}
    assert sorted(responses) == list(range(30))
    for n, response in responses.items():
        assert response["error"] is None
        assert (response["result"]["Total"], response["result"]["Invalid"]) == (n + 1, 0)
    assert len(node.accepted()) == sum(range(1, 31))


def test_ping_and_bad_requests(client: Client) -> None:
    assert client.call("Transfer.Ping", [{}]) == {"id": 1, "result": {"code": 0}, "error": None}
    assert client.call("Transfer.Ping", []) == {"id": 1, "result": {"code": 0}, "error": None}
    for method, params in (
        ("Transfer.Nope", [{}]),
        ("Nope.Update", [[]]),
        ("Update", [[]]),
        ("Transfer.Update", {"items": []}),
        ("Transfer.Update", [{"not": "a list"}]),
        ("Transfer.Ping", [5]),
    ):
        response = client.call(method, params, call_id="x")
        assert response["result"] is None and isinstance(response["error"], str), method
    client.send(b'{"method":"Transfer.Update","id":2}\n')
    assert "missing params" in client.read()["error"]
    empty = client.call("Transfer.Update", [[]], call_id=3)["result"]
    assert (empty["Message"], empty["Total"], empty["Invalid"]) == ("ok", 0, 0)


def test_a_garbage_header_closes_the_connection(client: Client) -> None:
    client.send(b"[1, 2]\n")
    assert client.closed_by_peer()


def test_both_transfers_answer_alike(tmp_path: Any) -> None:
    """The same requests to the Go transfer and to PyTransfer: same answers, same records."""
    requests: list[Union[dict[str, Any], bytes]] = [
        {"method": "Transfer.Update", "params": [[item(metric="a"), *INVALID]], "id": 1},
        {"method": "Transfer.Update", "params": [[item(step=1.5)]], "id": 2},
        {
            "method": "Transfer.Update",
            "params": [[item(value="1e400"), item(value="NaN")]],
            "id": 3,
        },
        {"method": "Transfer.Update", "params": [[item(tags=" b=1 ,a=2,,=x,c=")]], "id": 4},
        {"method": "Transfer.Update", "params": [None], "id": 5},
        {"method": "Transfer.Update", "params": [[item(metric="bad\udc80x")]], "id": 6},
        {"method": "Transfer.Ping", "params": [None], "id": 7},
        {"method": None, "params": [], "id": None},
        {
            "method": "Transfer.Update",
            "params": [
                [
                    {
                        "ENDPOINT": "h",
                        "Metric": "M",
                        "value": 2,
                        "STEP": 1,
                        "countertype": "GAUGE",
                        "timestamp": 5,
                    }
                ]
            ],
            "id": 8,
        },
    ]
    answers = {}
    records = {}
    for kind in ("go", "py"):
        with falcon_transfers.transfer(kind, tmp_path / f"{kind}.jsonl") as node:
            client = Client(node.address)
            try:
                got = []
                for request in requests:
                    client.send(request)
                    response = client.read()
                    result = response["result"]
                    if isinstance(result, dict):
                        result.pop("Latency", None)
                    got.append((response["id"], result, response["error"] is None))
            finally:
                client.close()
            answers[kind] = got
            records[kind] = node.accepted_items()
    assert answers["go"] == answers["py"]
    assert records["go"] == records["py"]
    assert [(r["metric"], r["value"], r["tags"]) for r in records["go"]] == [
        ("a", 0.42, "app=web,container=4f1b2c3d5e6f"),
        ("container.cpu.usage.cores", "NaN", "app=web,container=4f1b2c3d5e6f"),
        ("container.cpu.usage.cores", 0.42, "=x,a=2,b=1,c="),
        ("bad\ufffdx", 0.42, "app=web,container=4f1b2c3d5e6f"),  # Go replaces a lone surrogate
        ("M", 2, ""),
    ]


# --- modes and restarts -----------------------------------------------------------


def test_silent_reads_and_never_answers(kind: str, tmp_path: Any) -> None:
    with falcon_transfers.transfer(kind, tmp_path / "items.jsonl", mode="silent") as node:
        client = Client(node.address)
        try:
            client.update([item()])
            client.send({"method": "Transfer.Ping", "params": [{}], "id": 2})
            assert client.silent_for(QUIET_S)  # neither an answer nor a close
        finally:
            client.close()
        assert node.accepted() == set()


def test_error_mode_refuses_updates_but_answers_ping(kind: str, tmp_path: Any) -> None:
    with falcon_transfers.transfer(kind, tmp_path / "items.jsonl", mode="error") as node:
        client = Client(node.address)
        try:
            response = client.call("Transfer.Update", [[item()]])
            assert response["result"] is None and "error" in response["error"]
            assert client.call("Transfer.Ping", [{}], call_id=2)["error"] is None
        finally:
            client.close()
        assert node.accepted() == set()


@pytest.mark.parametrize("method", ["Transfer.Update", "Transfer.Ping"])
def test_close_mode_closes_after_reading_a_request(kind: str, tmp_path: Any, method: str) -> None:
    with falcon_transfers.transfer(kind, tmp_path / "items.jsonl", mode="close") as node:
        client = Client(node.address)
        try:
            client.send({"method": method, "params": [[item()]], "id": 1})
            assert client.closed_by_peer()  # without an answer first
        finally:
            client.close()
        assert node.accepted() == set()


def test_kill_and_restart_on_the_same_address(kind: str, tmp_path: Any) -> None:
    with falcon_transfers.transfer(kind, tmp_path / "items.jsonl") as node:
        address = node.address
        client = Client(address)
        assert client.call("Transfer.Update", [[item(metric="before")]])["error"] is None
        node.kill()
        assert not node.running
        assert client.closed_by_peer()
        client.close()
        with pytest.raises(ConnectionRefusedError):
            Client(address)
        node.restart(mode="error")
        assert node.address == address
        client = Client(address)
        assert client.call("Transfer.Update", [[item(metric="refused")]])["error"] is not None
        client.close()
        node.restart(mode="ok")
        client = Client(address)
        assert client.call("Transfer.Update", [[item(metric="after")]])["error"] is None
        client.close()
        assert {k[1] for k in node.accepted()} == {"before", "after"}


def test_a_restarted_go_transfer_ends_a_line_torn_by_a_kill(tmp_path: Any) -> None:
    # What a SIGKILL in the middle of the transfer's write leaves: a record cut short.
    out = tmp_path / "items.jsonl"
    whole = json.dumps(item(metric="whole"), separators=(",", ":"))
    out.write_text(whole + "\n" + whole[: len(whole) // 2], encoding="utf-8")
    with falcon_transfers.transfer("go", out) as node:
        client = Client(node.address)
        assert client.call("Transfer.Update", [[item(metric="after")]])["error"] is None
        client.close()
        lines = out.read_text(encoding="utf-8").split("\n")
        assert lines[1] == whole[: len(whole) // 2] and lines[-1] == ""
        assert {k[1] for k in node.accepted()} == {"whole", "after"}


def test_a_pool_of_three_and_its_union(kind: str, tmp_path: Any) -> None:
    with falcon_transfers.pool(kind, tmp_path, 3) as nodes:
        assert len({n.address for n in nodes}) == 3
        for n, node in enumerate(nodes):
            client = Client(node.address)
            client.call("Transfer.Update", [[item(metric=f"m{n}")]])
            client.close()
        assert {k[1] for k in falcon_transfers.accepted_by(nodes)} == {"m0", "m1", "m2"}
    assert not any(node.running for node in nodes)


# --- the library's checks against the transfers' ------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
tag_text = st.text(
    st.characters(blacklist_characters=",=", blacklist_categories=("Cs", "Z", "Cc")),
    min_size=1,
    max_size=10,
)
candidates = st.builds(
    lambda endpoint, metric, value, step, counter_type, tags, timestamp: {
        "endpoint": endpoint,
        "metric": metric,
        "value": value,
        "step": step,
        "counterType": counter_type,
        "tags": format_tags(tags),
        "timestamp": timestamp,
    },
    text,
    text,
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**300), 10**300)),
    st.integers(1, (1 << 63) - 1),
    st.sampled_from(["GAUGE", "COUNTER", "DERIVE"]),
    st.dictionaries(tag_text, tag_text, max_size=5),
    st.integers(1, MAX_TIMESTAMP),
)


def test_what_item_problem_passes_is_stored_unchanged(kind: str, tmp_path: Any) -> None:
    """Every item the sinks' check lets through is accepted, and stored under the key sent."""
    with falcon_transfers.transfer(kind, tmp_path / "items.jsonl") as node:
        client = Client(node.address)

        @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(candidates, min_size=1, max_size=20))
        def check(items: list[dict[str, Any]]) -> None:
            items = [i for i in items if item_problem(i) is None]
            if not items:
                return
            response = client.call("Transfer.Update", [items])
            assert response["error"] is None
            assert (response["result"]["Total"], response["result"]["Invalid"]) == (len(items), 0)
            sent = {(i["endpoint"], i["metric"], i["tags"], i["timestamp"]) for i in items}
            assert sent <= node.accepted()

        try:
            check()
        finally:
            client.close()


def test_what_the_transfers_drop_item_problem_refuses() -> None:
    assert all(item_problem(i) is not None for i in INVALID if i is not None)
