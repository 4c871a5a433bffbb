"""``serve``'s /dashboard in a real headless Chromium, against a real server and the openai client."""

from __future__ import annotations

import httpx
import openai

from live_helpers import (card_value, chromium, console_errors, metric_value, running_server, save_doc_screenshot,
                          wait_for)

KEY = "dashboard-test-key"


def test_serve_dashboard_matches_metrics_and_takes_the_key_once(tmp_path):
    with chromium() as driver, running_server(task="embed", workers=1, api_key=KEY, data_dir=str(tmp_path / "data")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        for i in range(6):
            client.embeddings.create(model="all-MiniLM-L6-v2", input=[f"text number {i}", "another one"])
        driver.get(url + "/dashboard?token=" + KEY)
        assert "token" not in driver.current_url  # taken once into sessionStorage, gone from the address bar
        wait_for(lambda: card_value(driver, "requests") == "6", 30, "the page to show the 6 requests")
        events = int(driver.find_element("tag name", "body").get_attribute("data-events"))
        for i in range(3):  # more requests while the page is open: it follows
            client.embeddings.create(model="all-MiniLM-L6-v2", input=f"later text {i}")
        wait_for(lambda: card_value(driver, "requests") == "9", 30, "the page to show 9 requests")
        assert int(driver.find_element("tag name", "body").get_attribute("data-events")) > events
        metrics = httpx.get(url + "/metrics").text
        assert float(card_value(driver, "requests")) == metric_value(
            metrics, "parainfer_http_requests_total", route="/v1/embeddings") == 9
        assert float(card_value(driver, "replicas_ready")) == metric_value(metrics, "parainfer_replicas_ready") == 1
        batches = metric_value(metrics, "parainfer_batch_size_count")
        mean = metric_value(metrics, "parainfer_batch_size_sum") / batches
        assert float(card_value(driver, "mean_batch")) == round(mean, 2)
        share = metric_value(metrics, "parainfer_batch_tokens_total", kind="real") / metric_value(
            metrics, "parainfer_batch_tokens_total", kind="padded")
        assert float(card_value(driver, "real_token_share")) == round(share, 4)
        assert float(card_value(driver, "p50_ms")) > 0
        assert driver.find_element("id", "auth").is_displayed() is False
        assert console_errors(driver) == []
        driver.save_screenshot(str(tmp_path / "dashboard-serve.png"))
        save_doc_screenshot(driver, "dashboard-serve.png")
