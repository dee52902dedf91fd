// The README's walkthrough through a TypeScript client generated from leadscore's OpenAPI document
// (openapi-typescript types + openapi-fetch). Run by scripts/clients against a live `leadscore serve` with the fake
// model: node dist/walkthrough.js BASE_URL API_KEY REPO_DIR. Each step asserts what it got, so a document the
// generator misreads fails here (or fails to compile). The blocks between `// docs:` markers are quoted in
// docs/clients.md (scripts/clients checks that they match).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import { createWriteStream, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebStream } from "node:stream/web";

// docs: setup
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/schema.js";

type Run = components["schemas"]["RunResponse"];
type Result = components["schemas"]["ResultResponse"];
type Problem = components["schemas"]["Problem"];
type RunWithResults = components["schemas"]["RunWithResults"];

// Creating a run answers 202 with the run, or 200 with the run and its results under `Prefer: wait`.
const runOf = (answer: Run | RunWithResults): Run => ("results" in answer ? answer.run : answer);

// An upload answers 201 with what was stored, or 200 with a preview when asked for a dry run (`dry_run=true`).
type Stored = components["schemas"]["UploadResponse"];
const stored = (answer: Stored | components["schemas"]["UploadPreview"]): Stored => {
  if ("upload_id" in answer) return answer;
  throw new Error("the upload was only previewed");
};
// docs: end

const [baseUrl, apiKey, repo] = process.argv.slice(2);
assert.ok(baseUrl && apiKey && repo, "usage: node dist/walkthrough.js BASE_URL API_KEY REPO_DIR");

// docs: retry
// Waits as `Retry-After` says (at most 5 tries) after a 429 (refused before anything was done: safe to repeat) or
// a 503 with `Retry-After` on a read or a request with an `Idempotency-Key` (a 503 may come after the work was
// done). Only bodiless and JSON requests are repeated: keeping a copy of an upload's body to send it again would
// hold the whole file in memory, so an upload's 429 or 503 is returned to the caller, who opens the file again.
const retrying = async (request: Request): Promise<Response> => {
  const json = (request.headers.get("Content-Type") ?? "").includes("json");
  const replayable = request.body === null || json;
  const repeatable = request.method === "GET" || request.headers.has("Idempotency-Key");
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(replayable ? request.clone() : request);
    const retryAfter = response.headers.get("Retry-After");
    const retry = response.status === 429 || (response.status === 503 && retryAfter !== null && repeatable);
    if (!retry || !replayable || attempt === 4) return response;
    await new Promise((resolve) => setTimeout(resolve, Number(retryAfter ?? 2 ** attempt) * 1000));
  }
};
// docs: end

// docs: client
const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` }, fetch: retrying });
// docs: end

async function main(): Promise<void> {
  // docs: offer
  const { data: offer, error: offerError } = await client.POST("/v1/offers", {
    body: JSON.parse(readFileSync(join(repo, "examples/offer.json"), "utf8")),
  });
  if (offerError) throw new Error(offerError.detail);
  // docs: end
  assert.equal(offer.name, "AI Outreach Automation");
  // An offer of this walkthrough's own, so that no verdict is cached from another run: the run waits on the model.
  const own = await client.POST("/v1/offers", {
    body: { name: `Walkthrough ${randomUUID()}`, value_props: offer.value_props, ideal_use_cases: offer.ideal_use_cases },
  });
  if (own.error) throw new Error(own.error.detail);

  // docs: upload
  // On Node.js 20+, openAsBlob reads the file from disk as the request is sent: it is never held whole in memory
  // (Node.js 18, Debian 12's, lacks it: there the file is read first).
  const file = join(repo, "examples/messy-leads.csv");
  const csv = fs.openAsBlob ? await fs.openAsBlob(file, { type: "text/csv" }) : new Blob([readFileSync(file)]);
  const { data: answer, error: uploadError } = await client.POST("/v1/leads/upload", {
    body: { file: csv },
    bodySerializer: (body) => {
      const form = new FormData();
      form.append("file", "file" in body ? body.file : body, "messy-leads.csv");
      return form;
    },
  });
  if (uploadError) throw new Error(uploadError.detail);
  const upload = stored(answer);
  console.log(`${upload.rows_accepted} rows accepted, ${upload.rows_rejected} rejected`);
  for (const e of upload.errors) console.log(`  line ${e.line}, ${e.column ?? "row"}: ${e.message}`);
  // docs: end
  assert.deepEqual([upload.rows_total, upload.rows_accepted, upload.rows_rejected], [7, 2, 5]);
  const { data: rejected } = await client.GET("/v1/uploads/{id}/errors", {
    params: { path: { id: upload.upload_id } },
  });
  assert.equal(rejected?.items.length, 5);

  // docs: score
  const body = { offer_id: own.data.id, upload_id: upload.upload_id };
  const key = randomUUID(); // keep it with the request: a retry with it returns the same run
  const created = await client.POST("/v1/leads/score", { body, params: { header: { "Idempotency-Key": key } } });
  const retried = await client.POST("/v1/leads/score", { body, params: { header: { "Idempotency-Key": key } } });
  if (created.error || retried.error) throw new Error("scoring was refused");
  const runId = runOf(created.data).id;
  assert.equal(runOf(retried.data).id, runId);
  // docs: end

  // docs: events
  // One `status` event per change, the last one when the run finishes; then the stream ends.
  const statuses: string[] = [];
  const events = await client.GET("/v1/runs/{id}/events", {
    params: { path: { id: runId } },
    parseAs: "stream",
    signal: AbortSignal.timeout(120_000), // give up after two minutes
  });
  let run: Run | undefined;
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of events.data as WebStream<Uint8Array>) {
    buffer += decoder.decode(bytes, { stream: true });
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (lines.includes("event: status")) {
        run = JSON.parse(data) as Run;
        statuses.push(run.status);
        console.log(`${run.status}: ${run.job_counts.succeeded}/${run.job_counts.total}`);
      }
    }
  }
  // docs: end
  assert.equal(run?.status, "completed");
  assert.ok(statuses.length > 1, `the stream showed no progress: ${statuses}`);

  // docs: wait
  // Or wait in the request: `Prefer: wait=N` answers 200 with the results once the run is finished (within N s).
  const waited = await client.POST("/v1/leads/score", {
    body,
    params: { header: { "Idempotency-Key": key, Prefer: "wait=30" } },
  });
  if (waited.response.status === 200 && waited.data && "results" in waited.data) {
    console.log(`finished with ${waited.data.results.length} results`);
  }
  // docs: end
  assert.equal(waited.response.status, 200);

  // docs: results
  const results: Result[] = [];
  let cursor: string | undefined;
  do {
    const { data: page, error } = await client.GET("/v1/runs/{id}/results", {
      params: { path: { id: runId }, query: { limit: 1, cursor } },
    });
    if (error) throw new Error(error.detail);
    results.push(...page.items);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  for (const r of results) console.log(`${r.name}: ${r.score} ${r.intent} (${r.score_basis}) - ${r.reasoning}`);
  // docs: end
  assert.deepEqual(results.map((r) => r.name).sort(), ["Ada Park", "Eli Stone"]);
  assert.ok(results.every((r) => r.score_basis === "hybrid" && r.ai_intent && r.rule_reasons.every((x) => x.points > 0)));

  const dir = await mkdtemp(join(tmpdir(), "leadscore-ts-"));
  const path = join(dir, "scored.csv");
  // docs: export
  // Streamed to disk as it arrives.
  const csvExport = await client.GET("/v1/runs/{id}/results.csv", { params: { path: { id: runId } }, parseAs: "stream" });
  if (!csvExport.response.ok || !csvExport.data) throw new Error(`export failed: ${csvExport.response.status}`);
  await pipeline(Readable.fromWeb(csvExport.data as WebStream<Uint8Array>), createWriteStream(path));
  // docs: end
  const lines = (await readFile(path, "utf8")).trim().split("\n");
  await rm(dir, { recursive: true });
  assert.equal(lines.length, 3);
  assert.ok(lines[0].startsWith("lead_id,"));

  // A second upload as a text/csv body, scored by a second run that is cancelled while its jobs wait on the model.
  // docs: cancel
  const again = await client.POST("/v1/leads/upload", {
    body: csv,
    headers: { "Content-Type": "text/csv" },
    bodySerializer: (file) => file,
  });
  if (again.error) throw new Error(again.error.detail);
  const againId = stored(again.data).upload_id;
  // A new offer, so no verdict is in the cache yet and the jobs wait on the model.
  const other = await client.POST("/v1/offers", {
    body: { name: `Cancelled ${randomUUID()}`, value_props: offer.value_props, ideal_use_cases: offer.ideal_use_cases },
  });
  if (other.error) throw new Error(other.error.detail);
  const second = await client.POST("/v1/leads/score", { body: { offer_id: other.data.id, upload_id: againId } });
  if (second.error) throw new Error(second.error.detail);
  const secondId = runOf(second.data).id;
  const cancelled = await client.POST("/v1/runs/{id}/cancel", { params: { path: { id: secondId } } });
  if (cancelled.error) throw new Error(cancelled.error.detail);
  console.log(`run ${secondId}: ${cancelled.data.status}`);
  // docs: end
  assert.ok(["cancelling", "cancelled"].includes(cancelled.data.status));
  for (const deadline = Date.now() + 30_000; ; await new Promise((resolve) => setTimeout(resolve, 200))) {
    const { data } = await client.GET("/v1/runs/{id}", { params: { path: { id: secondId } } });
    if (data?.status === "cancelled") {
      // The job with the model finished; the one still queued was cancelled.
      assert.ok(data.job_counts.cancelled >= 1 && data.job_counts.total === 2, JSON.stringify(data.job_counts));
      break;
    }
    assert.ok(Date.now() < deadline, `run ${secondId} is still ${data?.status}`);
  }

  // docs: errors
  const missing = await client.GET("/v1/runs/{id}", { params: { path: { id: "no-such-run" } } });
  const problem: Problem | undefined = missing.error;
  assert.equal(problem?.status, 404);
  const invalid = await client.POST("/v1/offers", { body: { name: "", ideal_use_cases: [] } });
  for (const e of invalid.error?.errors ?? []) console.log(`${e.field}: ${e.message}`);
  // docs: end
  assert.equal(invalid.response.status, 422);
  assert.ok(["name", "ideal_use_cases"].every((f) => invalid.error?.errors?.some((e) => e.field === f)));
  console.log("typescript walkthrough: ok");
}

await main();
