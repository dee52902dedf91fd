"""The README's walkthrough through the Python client generated from leadscore's OpenAPI document.

Run by scripts/clients against a live `leadscore serve` (with the fake model): python walkthrough.py BASE_URL
API_KEY REPO_DIR. The generated package `leadscore_client` must be importable. Each step asserts what it got,
so a document the generator misreads fails here. The blocks between `# docs:` markers are quoted in
docs/clients.md (scripts/clients checks that they match).
"""

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

# docs: setup
import httpx
from leadscore_client import AuthenticatedClient
from leadscore_client.api.leads import upload_leads
from leadscore_client.api.offers import create_offer
from leadscore_client.api.runs import cancel_run, get_run, list_run_results, score_leads
from leadscore_client.api.uploads import list_upload_errors
from leadscore_client.models import Intent, OfferBody, Problem, RunResponse, RunStatus, ScoreRequest, UploadForm
from leadscore_client.types import UNSET, File

# docs: end


# docs: retry
def call(endpoint, **kwargs):
    """Calls a generated endpoint, waiting as `Retry-After` says (at most 5 tries) after a 429 (refused before
    anything was done: always safe to repeat) or a 503 with `Retry-After` on a read or on a request with an
    `Idempotency-Key` (a 503 may come after the work was done: repeating another write could do it twice)."""
    repeatable = endpoint.__name__.rsplit(".", 1)[-1].startswith(("get_", "list_")) or "idempotency_key" in kwargs
    for attempt in range(5):
        response = endpoint.sync_detailed(**kwargs)
        retry_after = response.headers.get("Retry-After")
        retry = response.status_code == 429 or (response.status_code == 503 and retry_after and repeatable)
        if not retry or attempt == 4:
            return response.parsed
        time.sleep(float(retry_after or 2**attempt))
        # A file body was read by the first try: send it again from its start.
        body = kwargs.get("body")
        payload = getattr(getattr(body, "file", body), "payload", None)
        if hasattr(payload, "seek"):
            payload.seek(0)


# docs: end


def main(base_url: str, api_key: str, repo: Path) -> None:
    # docs: offer
    client = AuthenticatedClient(base_url=base_url, token=api_key, raise_on_unexpected_status=True)
    offer = call(create_offer, client=client, body=OfferBody.from_dict(json.loads((repo / "examples/offer.json").read_text())))
    # docs: end
    assert offer.name == "AI Outreach Automation", offer
    # An offer of this walkthrough's own, so that no verdict is cached from another run: the run waits on the model.
    offer = call(create_offer, client=client, body=OfferBody(name=f"Walkthrough {uuid.uuid4()}", value_props=offer.value_props, ideal_use_cases=offer.ideal_use_cases))

    # docs: upload
    # The file is streamed from disk as the multipart field `file`, never read whole.
    with open(repo / "examples/messy-leads.csv", "rb") as csv:
        form = UploadForm(file=File(payload=csv, file_name="messy-leads.csv", mime_type="text/csv"))
        upload = call(upload_leads, client=client, body=form)
    print(f"{upload.rows_accepted} rows accepted, {upload.rows_rejected} rejected")
    for error in upload.errors:  # the first 100; every one is in list_upload_errors
        print(f"  line {error.line}, {error.column or 'row'}: {error.message}")
    # docs: end
    assert (upload.rows_total, upload.rows_accepted, upload.rows_rejected) == (7, 2, 5), upload
    assert any(e.column == "Full Name" and "name" in e.message for e in upload.errors), upload.errors
    all_errors = call(list_upload_errors, client=client, id=upload.upload_id)
    assert len(all_errors.items) == 5, all_errors

    # The same file as a text/csv body (a file object is sent in chunks).
    with open(repo / "examples/messy-leads.csv", "rb") as csv:
        again = call(upload_leads, client=client, body=File(payload=csv, mime_type="text/csv"))
    assert (again.rows_accepted, again.rows_rejected) == (2, 5), again

    # docs: score
    request = ScoreRequest(offer_id=offer.id, upload_id=upload.upload_id)
    key = str(uuid.uuid4())  # keep it with the request: a retry with it returns the same run
    run = call(score_leads, client=client, body=request, idempotency_key=key)
    retried = call(score_leads, client=client, body=request, idempotency_key=key)
    assert retried.id == run.id
    # docs: end
    assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING), run

    # docs: wait
    # Poll with the ETag: an unchanged run answers 304 with no body.
    etag, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline:
        response = get_run.sync_detailed(client=client, id=run.id, if_none_match=etag or UNSET)
        if response.status_code == 200:
            run, etag = response.parsed, response.headers["ETag"]
            print(f"{run.status.value}: {run.job_counts.succeeded}/{run.job_counts.total}")
            if run.finished_at:
                break
        time.sleep(0.5)
    # docs: end
    assert run.status == RunStatus.COMPLETED, run
    assert run.job_counts.succeeded == 2, run.job_counts

    # docs: events
    # The first event is the run as it is now; the stream ends after the one that shows it finished. A comment
    # line every 15 s keeps a quiet stream alive, so a read timeout of a minute is safe.
    statuses = []
    timeout = httpx.Timeout(10, read=60)
    with client.get_httpx_client().stream("GET", f"/v1/runs/{run.id}/events", timeout=timeout) as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "status":
                status = RunResponse.from_dict(json.loads(line[5:]))
                print(f"{status.status.value}: {status.job_counts.succeeded}/{status.job_counts.total}")
                statuses.append(status)
    # docs: end
    assert [s.status for s in statuses] == [RunStatus.COMPLETED], statuses

    # docs: results
    results, cursor = [], UNSET
    while True:
        page = call(list_run_results, client=client, id=run.id, limit=1, cursor=cursor)
        results.extend(page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    for r in results:
        print(f"{r.name}: {r.score} {r.intent.value} ({r.score_basis.value}) - {r.reasoning}")
    # docs: end
    assert sorted(r.name for r in results) == ["Ada Park", "Eli Stone"], results
    assert all(isinstance(r.intent, Intent) and 0 <= r.score <= 100 for r in results), results
    assert all(r.score_basis.value == "hybrid" and r.ai_intent is not None for r in results), results
    assert all(reason.code.value and reason.points > 0 for r in results for reason in r.rule_reasons), results

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scored.csv"
        # docs: export
        # Streamed to disk chunk by chunk, with the generated client's own connection settings and key.
        with client.get_httpx_client().stream("GET", f"/v1/runs/{run.id}/results.csv") as response:
            response.raise_for_status()
            with open(path, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        # docs: end
        lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and lines[0].startswith("lead_id,"), lines

    # A second run, cancelled while its jobs wait on the model.
    # docs: cancel
    # A new offer, so no verdict is in the cache yet and the jobs wait on the model.
    other = OfferBody(name=f"Cancelled {uuid.uuid4()}", value_props=offer.value_props, ideal_use_cases=offer.ideal_use_cases)
    other = call(create_offer, client=client, body=other)
    second = call(score_leads, client=client, body=ScoreRequest(offer_id=other.id, upload_id=again.upload_id))
    cancelled = call(cancel_run, client=client, id=second.id)
    print(f"run {second.id}: {cancelled.status.value}")
    # docs: end
    assert cancelled.status in (RunStatus.CANCELLING, RunStatus.CANCELLED), cancelled
    deadline = time.monotonic() + 30
    while (second := call(get_run, client=client, id=second.id)).status != RunStatus.CANCELLED:
        assert time.monotonic() < deadline, second
        time.sleep(0.2)
    # The job with the model finished; the one still queued was cancelled.
    assert second.job_counts.cancelled >= 1 and second.job_counts.total == 2, second.job_counts

    # docs: errors
    missing = call(get_run, client=client, id="no-such-run")
    assert isinstance(missing, Problem) and missing.status == 404
    invalid = call(create_offer, client=client, body=OfferBody(name="", ideal_use_cases=[]))
    assert isinstance(invalid, Problem) and invalid.status == 422
    for error in invalid.errors:
        print(f"{error.field}: {error.message}")
    # docs: end
    assert {e.field for e in invalid.errors} >= {"name", "ideal_use_cases"}, invalid.errors
    print("python walkthrough: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
