//! `/reports/dq`: the data-quality report of `cds report dq`, for admins, computed when asked
//! from the lake and the dead-letter store (on a blocking thread: it reads whole tables), one
//! at a time.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

use axum::Extension;
use serde::Deserialize;

use super::auth::{Role, Token};
use super::HttpState;
use crate::lake::dq_report::{render_html, report, ReportInput};

/// Clears the flag when the report is done, however it ends.
struct Running(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug, Deserialize)]
pub struct DqQuery {
    #[serde(default)]
    since: Option<chrono::NaiveDate>,
    #[serde(default)]
    format: Option<String>,
}

pub async fn dq(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    Query(query): Query<DqQuery>,
) -> Response {
    if token.role != Role::Admin {
        return (
            StatusCode::FORBIDDEN,
            "the data-quality report is for admins\n",
        )
            .into_response();
    }
    let Some(source) = state.reports.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "this run writes no lake, so there is no data-quality report\n",
        )
            .into_response();
    };
    let json = match query.format.as_deref() {
        None | Some("html") => false,
        Some("json") => true,
        Some(_) => return (StatusCode::BAD_REQUEST, "format: html or json\n").into_response(),
    };
    // One report at a time: each reads whole tables, and one goes on even when its request
    // has timed out.
    let running = state.reports_running.clone();
    if running.swap(true, Ordering::SeqCst) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "10")],
            "a data-quality report is being made; try again when it is done\n",
        )
            .into_response();
    }
    let made = tokio::task::spawn_blocking(move || {
        let _done = Running(running);
        report(&ReportInput {
            lake: &source.lake,
            data_dir: &source.data_dir,
            format: source.format,
            since: query.since,
            progress: None,
        })
    })
    .await;
    match made {
        Ok(Ok(dq)) if json => axum::Json(dq).into_response(),
        Ok(Ok(dq)) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render_html(&dq),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the data-quality report failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the data-quality report could not be made; see the engine's log\n",
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
