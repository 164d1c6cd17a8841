//! The API's description, OpenAPI 3.1, served at `/api/openapi.json`.
//!
//! Each route of the router has an entry in [`OPERATIONS`] (method, path, who may call it, its
//! query parameters, what it answers); the document is built from that table, and a test
//! checks the table against the router's own list of routes ([`super::routes`]), so a route
//! cannot be added without its description.

use serde_json::{json, Map, Value};

use super::auth::SESSION_COOKIE;

/// A query or path parameter.
pub(super) struct Param {
    pub name: &'static str,
    pub place: &'static str,
    pub description: &'static str,
}

/// One route's description.
pub(super) struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Roles that may call it; empty: no token needed.
    pub roles: &'static [&'static str],
    pub params: &'static [Param],
    /// The JSON request body, described, if it takes one.
    pub body: Option<&'static str>,
    /// The media type of a successful answer.
    pub answers: &'static str,
}

const fn query(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        place: "query",
        description,
    }
}

const LIMIT: Param = query("limit", "documents per page, 1 to 10000 (default 1000)");
const CURSOR: Param = query(
    "cursor",
    "where the page starts: the value the previous page's Link header gave",
);

const ALL: &[&str] = &["clinician", "bed_manager", "admin"];
const CLINICAL: &[&str] = &["clinician", "admin"];

/// Every route, in the router's order.
pub(super) const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/",
        summary: "The occupancy dashboard (HTML); `?token=` signs in once and is exchanged for a session cookie",
        roles: ALL,
        params: &[
            query("token", "a bearer token, exchanged for an HttpOnly session cookie"),
            query("live", "0: one snapshot instead of the live stream"),
        ],
        body: None,
        answers: "text/html",
    },
    Operation {
        method: "get",
        path: "/api/kpis",
        summary: "KPI documents in the caller's scope (bed managers: no per-patient documents), in id order, one page at a time: a `Link` header with `rel=\"next\"` names the next page",
        roles: ALL,
        params: &[
            query("hospital", "a hospital id"),
            query("department", "a department name"),
            query("kind", "a department kind of the departments file, e.g. icu"),
            query("type", "a KPI document type, e.g. occupancy"),
            query("since", "RFC 3339 time: documents as of it or later"),
            LIMIT,
            CURSOR,
        ],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/api/kpis/trend",
        summary: "Each department's occupancy per hour over the last 24 hours of event time (as far as this process has seen it), for the dashboard's sparklines",
        roles: ALL,
        params: &[],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/api/hospitals",
        summary: "The hospitals the token may see, with their names and the departments (name, kind, beds) it may see, in the departments file's order",
        roles: ALL,
        params: &[],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/api/alerts",
        summary: "Alert documents in the caller's scope, each with its latest acknowledgement under `ack`, in id order, one page at a time: a `Link` header with `rel=\"next\"` names the next page",
        roles: CLINICAL,
        params: &[
            query("hospital", "a hospital id"),
            query("department", "a department name"),
            query("kind", "a department kind of the departments file, e.g. icu"),
            query("since", "RFC 3339 time: alerts at or after it"),
            LIMIT,
            CURSOR,
            query("mlmname", "a rule's name"),
            query("min_severity", "info, warning or critical"),
        ],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: super::STREAM_ROUTE,
        summary: "Server-sent events `kpi` and `alert`, numbered; `Last-Event-ID` replays what was missed",
        roles: ALL,
        params: &[
            query("token", "a bearer token (an EventSource cannot set headers)"),
            query("last_event_id", "resume after this event number"),
        ],
        body: None,
        answers: "text/event-stream",
    },
    Operation {
        method: "post",
        path: "/api/alerts/{id}/ack",
        summary: "Accept, override or snooze an alert",
        roles: &["clinician"],
        params: &[Param {
            name: "id",
            place: "path",
            description: "the alert's id",
        }],
        body: Some(
            r#"{"action": "accepted" | "overridden" | "snoozed", "reason": CODE, "minutes": N (snooze only, 1-1440)}"#,
        ),
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/api/rules/stats",
        summary: "Per rule: alerts in scope, acknowledgements, accept and override rates, evaluations, fires, errors",
        roles: CLINICAL,
        params: &[],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/api/openapi.json",
        summary: "This description",
        roles: ALL,
        params: &[],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/cds-services",
        summary: "CDS Hooks 2.0 discovery",
        roles: CLINICAL,
        params: &[],
        body: None,
        answers: "application/json",
    },
    Operation {
        method: "post",
        path: super::hooks::SERVICE_PATH,
        summary: "CDS Hooks patient-view: the patient's active alerts as cards, most severe first",
        roles: CLINICAL,
        params: &[],
        body: Some("a CDS Hooks request; `context.patientId` names the patient"),
        answers: "application/json",
    },
    Operation {
        method: "post",
        path: super::hooks::FEEDBACK_PATH,
        summary: "CDS Hooks feedback: a card accepted or overridden, recorded as the clinician's acknowledgement of its alert (the card's uuid is the alert's id as a UUID)",
        roles: &["clinician"],
        params: &[],
        body: Some(
            r#"{"feedback": [{"card": UUID, "outcome": "accepted" | "overridden", "overrideReason": {"reason": {"code": CODE}}}]}"#,
        ),
        answers: "application/json",
    },
    Operation {
        method: "get",
        path: "/reports/dq",
        summary: "The data-quality report (as `cds report dq`): per day and hospital, events in, duplicates, late arrivals, flags and quarantine reasons; dead letters by reason and format; unknown fields",
        roles: &["admin"],
        params: &[
            query("since", "leave out days before this one (YYYY-MM-DD)"),
            query("format", "html (default) or json"),
        ],
        body: None,
        answers: "text/html",
    },
    Operation {
        method: "post",
        path: "/signin",
        summary: "The dashboard's sign-in form (`token=…`, form-encoded): a valid token opens a session (an HttpOnly cookie) and answers 303 to the dashboard; `/` without a session shows the form",
        roles: &[],
        params: &[],
        body: Some("application/x-www-form-urlencoded: token=TOKEN"),
        answers: "text/html",
    },
    Operation {
        method: "get",
        path: "/healthz",
        summary: "Liveness: `ok` while the process runs",
        roles: &[],
        params: &[],
        body: None,
        answers: "text/plain",
    },
    Operation {
        method: "get",
        path: "/readyz",
        summary: "Readiness: 503 until the engine consumes, or when a stage stalls",
        roles: &[],
        params: &[],
        body: None,
        answers: "text/plain",
    },
    Operation {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        roles: &[],
        params: &[],
        body: None,
        answers: "text/plain",
    },
];

/// The OpenAPI document of [`OPERATIONS`].
pub(super) fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let params: Vec<Value> = op
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "in": p.place,
                    "required": p.place == "path",
                    "description": p.description,
                    "schema": {"type": "string"},
                })
            })
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "parameters": params,
            "x-roles": op.roles,
            "responses": {
                "200": {"description": "OK", "content": {op.answers: {}}},
            },
        });
        if let Some(fields) = operation.as_object_mut() {
            if op.roles.is_empty() {
                fields.insert("security".into(), json!([]));
            } else {
                fields.insert(
                    "description".into(),
                    Value::String(format!("Roles: {}.", op.roles.join(", "))),
                );
                if let Some(responses) = fields.get_mut("responses").and_then(Value::as_object_mut)
                {
                    responses.insert("401".into(), json!({"description": "no valid token"}));
                    responses.insert(
                        "403".into(),
                        json!({"description": "the token's role or scope does not allow it"}),
                    );
                }
            }
            if let Some(body) = op.body {
                fields.insert(
                    "requestBody".into(),
                    json!({
                        "required": true,
                        "description": body,
                        "content": {"application/json": {}},
                    }),
                );
            }
        }
        if let Some(entry) = paths
            .entry(op.path)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
        {
            entry.insert(op.method.into(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cds",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "KPIs, alerts, the live feed and CDS Hooks of the cds engine. Every route but /healthz, /readyz and /metrics needs a bearer token with a role (or the dashboard's session cookie); answers are filtered by the token's hospitals and departments.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router is described, with its method, and nothing else is.
    #[test]
    fn every_route_is_in_the_description() {
        let doc = document();
        let mut routed: Vec<(String, &str)> = super::super::routes()
            .into_iter()
            .map(|r| (r.path, r.method))
            .collect();
        routed.sort();
        let mut described: Vec<(String, &str)> = OPERATIONS
            .iter()
            .map(|op| (op.path.to_owned(), op.method))
            .collect();
        described.sort();
        assert_eq!(routed, described);
        for (path, method) in &routed {
            assert!(
                doc["paths"][path.as_str()][*method]["responses"]["200"].is_object(),
                "{method} {path}"
            );
        }
        assert_eq!(doc["paths"]["/metrics"]["get"]["security"], json!([]));
        assert_eq!(
            super::super::hooks::SERVICE_PATH,
            format!("/cds-services/{}", super::super::hooks::SERVICE_ID)
        );
        assert_eq!(
            doc["paths"]["/api/alerts/{id}/ack"]["post"]["parameters"][0]["in"],
            "path"
        );
    }
}
