//! What a coordinator says at `GET /metrics`, in the OpenMetrics text
//! format that Prometheus scrapes.
//!
//! Two kinds of numbers:
//!
//! - **Counted here** as this coordinator's dispatcher stores outcomes:
//!   `backstop_deliveries_finished_total{kind, node, outcome}` (a delivery
//!   that an attempt it ran ended `done`, `dead`, `superseded` or
//!   `cancelled`) and `backstop_attempt_duration_seconds{kind, outcome}`
//!   (each attempt, from its claim to its reply; its `_count` counts
//!   attempts by outcome). They start at zero with the process, as
//!   Prometheus counters do, and each coordinator of a fleet counts its
//!   own: sum them across coordinators.
//! - **Read from the store** at each scrape ([`Store::gauges`], a few
//!   indexed queries): `backstop_deliveries{state, kind}` for the states
//!   not finished (`pending`, `in_flight`, `dead`),
//!   `backstop_nodes{status, drained}`, and
//!   `backstop_oldest_due_delivery_age_seconds`. Every coordinator of a
//!   fleet reads the same store: take one of them (`max`), never the sum.
//!
//! Beside them, what the coordinator knows of itself: `backstop_store_up`
//! (the store answers its calls and the scrape's own queries; while it
//! does not, the store's gauges are left out), `backstop_nats_up` (with
//! NATS only) and `backstop_housekeeping_leader`.
//!
//! [`Store::gauges`]: crate::store::Store::gauges

use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::dependencies::Dependencies;
use crate::model::{DeliveryState, NodeStatus, Outcome};
use crate::store::{Gauges, Settled};

/// How a scrape wants the metrics written, from its `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, what a Prometheus server asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everything else (`curl`,
    /// `promtool check metrics`): the same samples, a counter's family
    /// named with its `_total`, no `# UNIT` and no `# EOF`.
    Text,
}

impl Format {
    /// OpenMetrics when `accept` lists it, else the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut params = part.split(';');
                let media = params.next().unwrap_or_default().trim();
                let refused = params.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f64>() == Ok(0.0))
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The upper bounds, in seconds, of the attempt duration histogram's
/// buckets: from a handler that answers at once to one that installs for
/// an hour.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    kind: String,
    node: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    state: &'static str,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    status: &'static str,
    drained: &'static str,
}

type Durations = Family<AttemptLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The counters a dispatcher keeps; shared by its clones and the API.
#[derive(Debug)]
pub struct Metrics {
    finished: Family<FinishedLabels, Counter>,
    durations: Durations,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            finished: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
        }
    }
}

/// What one scrape found besides the counters.
pub struct Scrape<'a> {
    /// The store's gauges, or `None` when the store did not answer.
    pub gauges: Option<&'a Gauges>,
    /// What the coordinator knows of its NATS and housekeeping.
    pub status: &'a Dependencies,
    /// Now, for the age of the oldest due delivery.
    pub now: SystemTime,
}

impl Metrics {
    /// An attempt of `kind` ended with `outcome` after `took`.
    pub fn attempt(&self, kind: &str, outcome: &Outcome, took: Duration) {
        self.durations
            .get_or_create(&AttemptLabels {
                kind: kind.to_owned(),
                outcome: outcome.name(),
            })
            .observe(took.as_secs_f64());
    }

    /// The outcome of an attempt of `kind` on `node` was stored as
    /// `settled`: counted when it finished the delivery.
    pub fn settled(&self, kind: &str, node: &str, settled: Settled) {
        if let Settled::Applied(state) = settled
            && state.is_final()
        {
            self.finished
                .get_or_create(&FinishedLabels {
                    kind: kind.to_owned(),
                    node: node.to_owned(),
                    outcome: state.as_str(),
                })
                .inc();
        }
    }

    /// The whole exposition, in `format`.
    pub fn render(&self, scrape: &Scrape<'_>, format: Format) -> String {
        let mut registry = Registry::with_prefix("backstop");
        registry.register(
            "deliveries_finished",
            "Deliveries that an attempt this coordinator ran ended, by kind, node and outcome \
             (done, dead, superseded, cancelled)",
            self.finished.clone(),
        );
        registry.register_with_unit(
            "attempt_duration",
            "How long attempts this coordinator ran took, from claim to reply, by kind and \
             outcome",
            Unit::Seconds,
            self.durations.clone(),
        );
        let up = |yes: bool| {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::from(yes));
            gauge
        };
        registry.register(
            "store_up",
            "1 when the queue's store answers this coordinator (this scrape's queries too), else 0",
            up(scrape.gauges.is_some()),
        );
        if scrape.status.report().nats.is_some() {
            registry.register(
                "nats_up",
                "1 while this coordinator is connected to NATS, else 0",
                up(scrape.status.nats_connected()),
            );
        }
        registry.register(
            "housekeeping_leader",
            "1 when this coordinator runs the fleet's housekeeping, else 0",
            up(scrape.status.is_leader()),
        );
        if let Some(gauges) = scrape.gauges {
            register_gauges(&mut registry, gauges, scrape.now);
        }
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        match format {
            Format::OpenMetrics => text,
            Format::Text => prometheus_text(&text),
        }
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4 has it: the
/// metadata of a counter family names its samples (`x_total`), and the
/// lines 0.0.4 does not know (`# UNIT`, `# EOF`) go.
fn prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn register_gauges(registry: &mut Registry, gauges: &Gauges, now: SystemTime) {
    let deliveries = Family::<DeliveryLabels, Gauge>::default();
    // Each open state of every kind that has any, so that a state that
    // empties reads 0 rather than vanishing.
    let mut kinds: Vec<&str> = gauges
        .deliveries
        .iter()
        .map(|(_, k, _)| k.as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        for state in [
            DeliveryState::Pending,
            DeliveryState::InFlight,
            DeliveryState::Dead,
        ] {
            deliveries
                .get_or_create(&DeliveryLabels {
                    state: state.as_str(),
                    kind: kind.to_owned(),
                })
                .set(0);
        }
    }
    for (state, kind, n) in &gauges.deliveries {
        deliveries
            .get_or_create(&DeliveryLabels {
                state: state.as_str(),
                kind: kind.clone(),
            })
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    registry.register(
        "deliveries",
        "Deliveries not finished, by state (pending, in_flight, dead) and kind",
        deliveries,
    );
    let nodes = Family::<NodeLabels, Gauge>::default();
    for status in [
        NodeStatus::Healthy,
        NodeStatus::Unhealthy,
        NodeStatus::Unreachable,
    ] {
        for drained in ["false", "true"] {
            nodes
                .get_or_create(&NodeLabels {
                    status: status.as_str(),
                    drained,
                })
                .set(0);
        }
    }
    for (status, drained, n) in &gauges.nodes {
        nodes
            .get_or_create(&NodeLabels {
                status: status.as_str(),
                drained: if *drained { "true" } else { "false" },
            })
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    registry.register(
        "nodes",
        "Nodes by health (healthy, unhealthy, unreachable) and whether an operator drained them",
        nodes,
    );
    let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    age.set(
        gauges
            .oldest_due
            .and_then(|due| now.duration_since(due).ok())
            .map_or(0.0, |late| late.as_secs_f64()),
    );
    registry.register_with_unit(
        "oldest_due_delivery_age",
        "How long the oldest pending delivery to a node that can take it has been due (0 when \
         none is)",
        Unit::Seconds,
        age,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_for_a_client_that_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (Some(prometheus), Format::OpenMetrics),
            (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("*/*"), Format::Text),
            (None, Format::Text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    /// The names, units and values a scrape shows, as Prometheus reads
    /// them.
    #[test]
    fn a_scrape_shows_the_counters_and_the_store_s_gauges() {
        let metrics = Metrics::default();
        metrics.attempt("install", &Outcome::Done, Duration::from_millis(1500));
        metrics.attempt(
            "install",
            &Outcome::Failed("x".into()),
            Duration::from_millis(20),
        );
        metrics.settled("install", "gpu-1", Settled::Applied(DeliveryState::Done));
        metrics.settled("install", "gpu-1", Settled::Applied(DeliveryState::Pending));
        metrics.settled("install", "gpu-2", Settled::Stale);
        metrics.settled("install", "gpu-2", Settled::Applied(DeliveryState::Dead));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let gauges = Gauges {
            deliveries: vec![(DeliveryState::Dead, "install".into(), 1)],
            nodes: vec![(NodeStatus::Healthy, false, 2)],
            oldest_due: Some(now - Duration::from_millis(2500)),
        };
        let status = Dependencies::default();
        status.set_leader(true);
        let scrape = Scrape {
            gauges: Some(&gauges),
            status: &status,
            now,
        };
        let text = metrics.render(&scrape, Format::OpenMetrics);
        for line in [
            "# TYPE backstop_deliveries_finished counter",
            r#"backstop_deliveries_finished_total{kind="install",node="gpu-1",outcome="done"} 1"#,
            r#"backstop_deliveries_finished_total{kind="install",node="gpu-2",outcome="dead"} 1"#,
            "# TYPE backstop_attempt_duration_seconds histogram",
            "# UNIT backstop_attempt_duration_seconds seconds",
            r#"backstop_attempt_duration_seconds_count{kind="install",outcome="done"} 1"#,
            r#"backstop_attempt_duration_seconds_bucket{le="2.5",kind="install",outcome="done"} 1"#,
            r#"backstop_attempt_duration_seconds_bucket{le="1.0",kind="install",outcome="done"} 0"#,
            r#"backstop_deliveries{state="dead",kind="install"} 1"#,
            r#"backstop_deliveries{state="pending",kind="install"} 0"#,
            r#"backstop_nodes{status="healthy",drained="false"} 2"#,
            r#"backstop_nodes{status="unreachable",drained="true"} 0"#,
            "backstop_oldest_due_delivery_age_seconds 2.5",
            "backstop_store_up 1",
            "backstop_housekeeping_leader 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(
            text.matches("backstop_deliveries_finished_total{").count(),
            2,
            "a retry finishes nothing, a stale reply is not counted:\n{text}"
        );
        assert!(!text.contains("nats_up"), "no NATS, no NATS gauge");
        let plain = metrics.render(&scrape, Format::Text);
        for line in [
            "# TYPE backstop_deliveries_finished_total counter",
            r#"backstop_deliveries_finished_total{kind="install",node="gpu-1",outcome="done"} 1"#,
            "# TYPE backstop_attempt_duration_seconds histogram",
        ] {
            assert!(plain.lines().any(|l| l == line), "no {line:?} in\n{plain}");
        }
        assert!(
            !plain.contains("# EOF") && !plain.contains("# UNIT"),
            "{plain}"
        );
        let down = metrics.render(
            &Scrape {
                gauges: None,
                status: &status,
                now,
            },
            Format::Text,
        );
        assert!(down.lines().any(|l| l == "backstop_store_up 0"), "{down}");
        assert!(!down.contains("backstop_nodes"), "{down}");
    }
}
