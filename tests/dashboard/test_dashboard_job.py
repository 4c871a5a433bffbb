"""A real ``parainfer run --dashboard`` job watched in a real headless Chromium."""

from __future__ import annotations

from live_helpers import POISON, JobProcess, card_value, chromium, console_errors, save_doc_screenshot, wait_for


def test_job_dashboard_updates_live_and_ends_on_the_report_totals(tmp_path):
    with chromium() as driver:  # the browser first: it takes seconds to start on a busy machine
        job = JobProcess(tmp_path, records=1600, ms_per_token=0.4)
        try:
            driver.get(job.url)
            seen: list[str] = []

            def progressed() -> bool:
                value = card_value(driver, "done")
                if value and (not seen or seen[-1] != value):
                    seen.append(value)
                return len(seen) >= 3  # the number changed at least twice while the job ran

            wait_for(progressed, 60, "the records-done number to change twice")
            assert driver.find_element("tag name", "body").get_attribute("data-finished") == "0", \
                "the job ended before the page saw it run: make it longer"
            wait_for(lambda: driver.find_element("tag name", "body").get_attribute("data-finished") == "1", 120,
                     "the job's final event")
            report = job.finish()
            assert int(card_value(driver, "done")) == report["records"] == 1600
            assert int(card_value(driver, "failed")) == report["failed_records"] == len(POISON)
            assert int(card_value(driver, "computed")) == report["records"]
            assert float(card_value(driver, "records_per_s")) == round(report["parallel_throughput_records_per_s"], 2)
            assert float(card_value(driver, "wall_s")) == round(report["wall_s"], 3)
            bars = int(driver.find_element("id", "gantt").get_attribute("data-bars"))
            assert bars == min(len(report["timeline"]), 2000) == report["tasks"]
            workers = driver.find_elements("css selector", "#workers tr")
            assert len(workers) == 1 + report["workers"]
            assert int(seen[1]) < int(seen[2]) <= report["records"]
            errors = driver.find_elements("css selector", "#errors tr")[1:]
            assert [int(row.find_elements("tag name", "td")[2].text) for row in errors] == list(POISON)
            assert all("poison record" in row.find_elements("tag name", "td")[3].text for row in errors)
            link = errors[1].find_element("tag name", "a").get_attribute("href")
            assert link.endswith("/dashboard/api/errors?row=2")
            assert console_errors(driver) == []
            driver.save_screenshot(str(tmp_path / "dashboard-job.png"))
            save_doc_screenshot(driver, "dashboard-job.png")
        finally:
            job.kill()
