//! What the dashboard needs beside the KPI documents: the hospitals' names
//! (`/api/hospitals`, the departments in force) and each department's occupancy over the last
//! 24 hours of event time (`/api/kpis/trend`), kept in memory from the documents the sink
//! announces: one point per hour (the last occupancy written in that hour), so that a page
//! opened at any time draws the day's curve at once.
//!
//! The trend starts with the process: after a restart it begins from the current occupancy (the
//! documents read back from the sink) and fills as documents are written (the lake's
//! `gold/kpi_snapshots` keeps the whole history).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::auth::Token;
use super::read::visible;
use super::HttpState;
use crate::sink::{Container, Feed};

/// Hours of event time a trend covers.
const HOURS: i64 = 24;

/// One department's occupancy, hour by hour.
#[derive(Debug, Clone)]
struct Trend {
    hospital_id: i64,
    department: String,
    /// (hour since the epoch, occupied), oldest first.
    points: VecDeque<(i64, i64)>,
}

/// Occupancy trends by document id.
#[derive(Debug, Clone, Default)]
pub struct Trends {
    inner: Arc<Mutex<HashMap<String, Trend>>>,
}

impl Trends {
    /// Follows the documents announced on `feed` until it closes.
    pub fn spawn(feed: &Feed) -> Self {
        let trends = Trends::default();
        let mut rx = feed.subscribe();
        let me = trends.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(written) if written.container == Container::Kpis => {
                        me.record(&written.document.body)
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        trends
    }

    /// Starts from the occupancy documents already served (read back from the sink at start):
    /// after a restart the curve begins with the current occupancy instead of nothing.
    pub fn seed(&self, index: &crate::sink::ServingIndex) {
        for doc in index.all(Container::Kpis, |d| d["type"] == "occupancy") {
            self.record(&doc);
        }
    }

    /// Takes one KPI document in (occupancy documents only).
    fn record(&self, doc: &Value) {
        if doc["type"] != "occupancy" {
            return;
        }
        let (Some(id), Some(occupied), Some(hospital_id)) = (
            doc["id"].as_str(),
            doc["occupied"].as_i64(),
            doc["hospital_id"].as_i64(),
        ) else {
            return;
        };
        let Some(hour) = doc["as_of"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp().div_euclid(3600))
        else {
            return;
        };
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let trend = all.entry(id.to_owned()).or_insert_with(|| Trend {
            hospital_id,
            department: doc["department"].as_str().unwrap_or_default().to_owned(),
            points: VecDeque::new(),
        });
        match trend.points.back_mut() {
            Some((last, value)) if *last == hour => *value = occupied,
            // An older hour than the newest: the curve keeps what it drew.
            Some((last, _)) if *last > hour => return,
            _ => trend.points.push_back((hour, occupied)),
        }
        while trend
            .points
            .front()
            .is_some_and(|(h, _)| *h <= hour - HOURS)
        {
            trend.points.pop_front();
        }
    }

    /// The trends a token may see.
    fn visible_to(&self, token: &Token) -> Vec<Value> {
        let all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, Value)> = all
            .iter()
            .map(|(id, t)| {
                let points: Vec<Value> = t
                    .points
                    .iter()
                    .map(|(hour, occupied)| {
                        let at = chrono::DateTime::from_timestamp(hour * 3600, 0)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        json!({ "hour": at, "occupied": occupied })
                    })
                    .collect();
                (
                    id.clone(),
                    json!({
                        "id": id,
                        "type": "occupancy_trend",
                        "hospital_id": t.hospital_id,
                        "department": t.department,
                        "points": points,
                    }),
                )
            })
            .filter(|(_, doc)| visible(token, doc))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, d)| d).collect()
    }
}

/// `GET /api/kpis/trend`: each department's occupancy per hour over the last 24 hours of event
/// time, as far as this process has seen it.
pub async fn trend(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
) -> Json<Value> {
    Json(Value::Array(state.trends.visible_to(&token)))
}

/// `GET /api/hospitals`: the hospitals the token may see, with their names and the departments
/// it may see (name, kind, beds), in the order of the departments file.
pub async fn hospitals(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
) -> Json<Value> {
    let network = state.network.current();
    Json(Value::Array(
        network
            .hospitals()
            .filter(|h| token.sees(i64::from(h.id), None))
            .map(|h| {
                let departments: Vec<Value> = h
                    .departments
                    .iter()
                    .filter(|d| token.sees(i64::from(h.id), Some(&d.name)))
                    .map(|d| {
                        json!({
                            "department": d.name,
                            "kind": d.kind,
                            "bed_capacity": d.capacity.bed_capacity,
                        })
                    })
                    .collect();
                json!({ "hospital_id": h.id, "name": h.name, "departments": departments })
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::Role;

    fn occupancy(as_of: &str, occupied: i64) -> Value {
        json!({"id": "occupancy:1:ICU", "type": "occupancy", "hospital_id": 1,
            "department": "ICU", "occupied": occupied, "as_of": as_of})
    }

    #[test]
    fn one_point_per_hour_over_a_day() {
        let trends = Trends::default();
        trends.record(&occupancy("2026-03-02T10:05:00Z", 3));
        trends.record(&occupancy("2026-03-02T10:55:00Z", 4));
        trends.record(&occupancy("2026-03-02T11:10:00Z", 6));
        trends.record(&occupancy("2026-03-02T09:00:00Z", 1));
        trends.record(&json!({"type": "los", "id": "los:1:ICU"}));
        let admin = Token {
            name: "a".into(),
            sha256: String::new(),
            role: Role::Admin,
            hospitals: Vec::new(),
            departments: Vec::new(),
        };
        let seen = trends.visible_to(&admin);
        let points: Vec<i64> = seen[0]["points"]
            .as_array()
            .map(|p| p.iter().filter_map(|x| x["occupied"].as_i64()).collect())
            .unwrap_or_default();
        assert_eq!(
            points,
            [4, 6],
            "the last value of each hour; an older hour ignored"
        );
        trends.record(&occupancy("2026-03-03T11:00:00Z", 8));
        let seen = trends.visible_to(&admin);
        assert_eq!(
            seen[0]["points"].as_array().map(Vec::len),
            Some(1),
            "24 hours kept"
        );
        let other = Token {
            hospitals: vec![2],
            role: Role::BedManager,
            ..admin
        };
        assert!(trends.visible_to(&other).is_empty());
    }
}
