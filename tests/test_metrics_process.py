"""A running trader's metrics, scraped over HTTP as Prometheus does, against its /v3/status."""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import http_get, project_env, start_runtrader, wait_until_healthy
from tests.support import eventually_blocking, metric_one_hot, metric_samples, metric_value

KEY_ID = "key-id-that-must-never-be-shown"
SECRET_KEY = "secret-key-that-must-never-be-shown"


def test_runtrader_serves_metrics_that_agree_with_its_status(tmp_path: Path) -> None:
    env = project_env(tmp_path, KALSHI_API_KEY_ID=KEY_ID, SECRET_KEY=SECRET_KEY, SIM_MESSAGE_RATE="200")
    trader = start_runtrader(env, "--port", "0", "--metrics-port", "0")
    base = trader.base_url
    texts: list[str] = []
    try:
        assert trader.metrics_url.startswith("http://127.0.0.1:")
        wait_until_healthy(base)

        def web_agrees_with_status() -> bool:
            # Both read the trader's rows; a heartbeat landing between the reads moves the counts: read again.
            before = json.loads(http_get(f"{base}/v3/status")[1])
            code, text = http_get(f"{base}/metrics")
            after = json.loads(http_get(f"{base}/v3/status")[1])
            assert code == 200
            if before["session"]["counters"] != after["session"]["counters"] or before["state"] != after["state"]:
                return False
            texts.append(text)
            found, shard = metric_samples(text), str(after["session"]["id"])
            counters = after["session"]["counters"]
            assert metric_value(found, "trader_feed_messages_total", shard=shard) == counters["messages_received"]
            assert metric_value(found, "trader_feed_deltas_total", shard=shard) == counters["deltas_received"]
            assert metric_one_hot(found, "trader_state", "state") == [after["state"]] == ["ready"]
            assert metric_value(found, "trader_markets", shard=shard) == after["market_counts"]["total"] == 3
            assert metric_value(found, "trader_markets_live", shard=shard) == after["market_counts"]["connected"]
            return bool(counters["deltas_received"] > 0)

        eventually_blocking(web_agrees_with_status, seconds=20, what="/metrics and /v3/status to agree")

        status = json.loads(http_get(f"{base}/v3/status")[1])
        code, text = http_get(trader.metrics_url)
        assert code == 200
        texts.append(text)
        live = metric_samples(text)
        # The trader's own port reads its memory: never behind the heartbeat /v3/status was built from.
        counters = status["session"]["counters"]
        assert metric_value(live, "trader_feed_messages_total") >= counters["messages_received"]
        assert metric_one_hot(live, "trader_state", "state") == ["ready"]
        assert metric_value(live, "trader_markets") == 3
        assert metric_value(live, "trader_consoles_connected") == 0
        assert metric_value(live, "process_resident_memory_bytes") > 0
    finally:
        code, stderr = trader.stop()
    assert code == 0, stderr[-3000:]
    for text in texts:
        assert KEY_ID not in text
        assert SECRET_KEY not in text
        assert "ws://" not in text  # no exchange URL either
