//! Department metadata: the departments file (bed capacity, staff), watched while the engine
//! runs. A change reaches the KPI documents at once (occupancy percentages are rendered with
//! the new capacity) and lands as SCD type 2 history in the store's `dim_department` table
//! ([`super::store`]) and, through the caller, in the lake's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use super::store::DimDepartmentStore;
use super::topic::DepartmentsTopic;
use crate::model::Network;

/// How often the file is read for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long one wait for messages of a departments topic lasts (the run's end waits for it).
const TOPIC_WAIT: Duration = Duration::from_millis(100);

/// Records `initial` in `dim_department` (in the SQLite store at `store`), then, while `stop`
/// is not set, reads `file` every [`WATCH_INTERVAL`] and calls `on_change` with each new
/// network that parses. A file that does not parse leaves the previous network in force.
/// `file` may also be a departments topic (`kafka://HOST:PORT/TOPIC`, [`super::topic`]): its
/// new messages are read as they come.
pub fn spawn(
    file: Option<PathBuf>,
    initial: Network,
    store: PathBuf,
    mut on_change: impl FnMut(Network) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cds-departments".into())
        .spawn(move || {
            let now = || Utc::now().timestamp_micros();
            let mut dim = match DimDepartmentStore::open(&store) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "dim_department is not kept: the store does not open");
                    None
                }
            };
            let record = |dim: &mut Option<DimDepartmentStore>, network: &Network| {
                if let Some(d) = dim.as_mut() {
                    if let Err(e) = d.apply(network, now()) {
                        tracing::warn!(error = %e, "dim_department not updated");
                    }
                }
            };
            record(&mut dim, &initial);
            let Some(file) = file else { return };
            let location = file.to_string_lossy().into_owned();
            if DepartmentsTopic::is_topic(&location) {
                // This consumer starts from the topic's beginning again: it takes over from the
                // network of the start only once it has read as far (a partial read would look
                // like departments removed). A broker that is away is tried again, with backoff.
                let mut backoff = WATCH_INTERVAL;
                let (mut topic, mut last) = loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let opened = DepartmentsTopic::open(&location).and_then(|mut t| {
                        let network = t.read_to_end(Duration::from_secs(30))?;
                        Ok((t, network))
                    });
                    match opened {
                        Ok(ready) => break ready,
                        Err(e) => {
                            tracing::warn!(error = %e, "the departments topic is not followed yet; trying again");
                            std::thread::park_timeout(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                };
                if last != initial {
                    record(&mut dim, &last);
                    on_change(last.clone());
                }
                while !stop.load(Ordering::Relaxed) {
                    if let Some(network) = topic.changed(TOPIC_WAIT) {
                        if network != last {
                            tracing::info!("departments topic changed: departments updated");
                            record(&mut dim, &network);
                            last = network.clone();
                            on_change(network);
                        }
                    }
                }
                return;
            }
            let mut last = std::fs::read_to_string(&file).ok();
            while !stop.load(Ordering::Relaxed) {
                // Parked, not asleep: the run's end unparks the thread, so that joining it does
                // not wait out the interval (half a second added to every run).
                std::thread::park_timeout(WATCH_INTERVAL);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(text) = std::fs::read_to_string(&file) else {
                    continue;
                };
                if last.as_deref() == Some(text.as_str()) {
                    continue;
                }
                last = Some(text.clone());
                match Network::parse(&text) {
                    Ok(network) => {
                        tracing::info!("departments file changed: capacities updated");
                        record(&mut dim, &network);
                        on_change(network);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "departments file changed but does not parse; keeping the previous one")
                    }
                }
            }
        })
}
