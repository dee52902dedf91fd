//! `GET /v1/runs/{id}/events`: Server-Sent Events with the run's status whenever it changes, woken by the
//! run's progress events (the store's [`RunWatch`](leadscore_store::RunWatch)).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::load_run;
use crate::AppState;
use crate::extract::Workspace;
use crate::problem::{ApiError, Problem};

/// One event of the stream: OpenAPI 3.1 describes an event stream by the fields of one event.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only: the handler writes its events with axum's `Event`.
pub struct RunEvent {
    event: RunEventKind,
    /// `status`: the run as JSON, as `GET /v1/runs/{id}` answers it; `error`: why the stream stopped early.
    data: String,
}

/// `status` carries the run; `error` ends the stream when the run cannot be read any more.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RunEventKind {
    Status,
    Error,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", operation_id = "stream_run_events", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "Server-Sent Events: `status` events carrying the run (as `GET /v1/runs/{id}`) \
            whenever it changes, the last one when it finishes; then the stream ends", content_type = "text/event-stream", body = RunEvent),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn run_events(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let first = load_run(&state, &ws, &id).await?;
    let watch = state.store.watch_run(&ws, &id);
    let stream = futures_util::stream::unfold(Some((Some(first), watch, None::<Vec<u8>>)), move |step| {
        let (state, ws, id) = (state.clone(), ws.clone(), id.clone());
        async move {
            let (mut next, mut watch, last) = step?;
            while next.is_none() {
                watch.changed(None).await;
                match load_run(&state, &ws, &id).await {
                    Ok(run) if last.as_ref() != Some(&serde_json::to_vec(&run).unwrap_or_default()) => {
                        next = Some(run)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let event = Event::default().event("error").data(e.to_string());
                        return Some((Ok::<_, std::convert::Infallible>(event), None));
                    }
                }
            }
            let run = next?;
            let body = serde_json::to_vec(&run).unwrap_or_default();
            let finished = run.finished_at.is_some();
            let event = Event::default().event("status").data(String::from_utf8_lossy(&body));
            // The stream ends after the event that shows the run finished.
            Some((Ok(event), (!finished).then_some((None, watch, Some(body)))))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
