//! The dashboard's pages, rendered on the server with maud. Each page
//! that changes by itself keeps what changes in `#live`, which `ui.js`
//! fetches again every few seconds.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use backstop_core::HumanDuration;
use maud::{DOCTYPE, Markup, html};

use crate::dependencies::Report;
use crate::model::{Attempt, Delivery, DeliveryState, Node, NodeStatus, Op};
use crate::store::{Activity, Counts, OpSummary};

use super::session::{Flash, SignedIn};

/// Which page of the navigation is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Operations,
    Dead,
    Nodes,
}

const TABS: [(Tab, &str, &str); 4] = [
    (Tab::Overview, "/ui", "Overview"),
    (Tab::Operations, "/ui/ops", "Operations"),
    (Tab::Dead, "/ui/dead", "Dead letters"),
    (Tab::Nodes, "/ui/nodes", "Nodes"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · backstop" }
            link rel="icon" type="image/svg+xml" href="/ui/assets/icon.svg";
            link rel="stylesheet" href="/ui/assets/ui.css";
            script src="/ui/assets/ui.js" defer {}
        }
    }
}

/// A page of a signed-in session: navigation, the flash, `body`.
pub fn page(tab: Tab, title: &str, session: &SignedIn, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    a.brand href="/ui" { "backstop" }
                    nav {
                        @for (t, href, name) in TABS {
                            @if t == tab {
                                a href=(href) aria-current="page" { (name) }
                            } @else {
                                a href=(href) { (name) }
                            }
                        }
                    }
                    form.sign-out method="post" action="/ui/sign-out" {
                        (csrf(session))
                        button type="submit" { "Sign out" }
                    }
                }
                main {
                    @if let Some(flash) = &session.flash { (flash_box(flash)) }
                    (body)
                }
            }
        }
    }
}

fn flash_box(flash: &Flash) -> Markup {
    html! {
        p.flash.error[flash.error] role="status" { (flash.message) }
    }
}

/// The hidden field every form of a session sends back.
pub fn csrf(session: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// The sign-in page: all that is shown without a session.
pub fn sign_in(refused: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.sign-in {
                main {
                    form #sign-in method="post" action="/ui/sign-in" {
                        h1 { "backstop" }
                        p { "Sign in with this coordinator's API token (its " code { "BACKSTOP_TOKEN" } ")." }
                        @if let Some(why) = refused { p.flash.error role="alert" { (why) } }
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

/// A page that says what went wrong.
pub fn failure(session: &SignedIn, message: &str) -> Markup {
    page(
        Tab::Overview,
        "Error",
        session,
        html! { p.flash.error role="alert" { (message) } },
    )
}

/// "3 min ago", "in 20 s", with the exact time to hover.
fn when(now: SystemTime, at: SystemTime) -> Markup {
    let exact = humantime::format_rfc3339_millis(at).to_string();
    let text = match now.duration_since(at) {
        Ok(ago) if ago < Duration::from_secs(1) => "just now".to_owned(),
        Ok(ago) => format!("{} ago", HumanDuration(round(ago))),
        Err(e) if e.duration() < Duration::from_secs(1) => "now".to_owned(),
        Err(e) => format!("in {}", HumanDuration(round(e.duration()))),
    };
    html! { time datetime=(exact) title=(exact) { (text) } }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn opt_when(now: SystemTime, at: Option<SystemTime>) -> Markup {
    match at {
        Some(at) => when(now, at),
        None => html! { span.muted { "—" } },
    }
}

fn state_badge(state: DeliveryState) -> Markup {
    html! { span.state.(state.as_str()) { (state.as_str().replace('_', " ")) } }
}

fn health_badge(node: &Node) -> Markup {
    let class = match node.status {
        NodeStatus::Healthy => "healthy",
        NodeStatus::Unhealthy | NodeStatus::Unreachable => "unhealthy",
    };
    html! {
        span.health.(class) { (node.status.as_str()) }
        @if node.drained { " " span.health.drained { "drained" } }
    }
}

fn counts_cells(c: &Counts) -> Markup {
    html! {
        td.num { (c.pending) } td.num { (c.in_flight) } td.num { (c.done) }
        td.num.dead[c.dead > 0] { (c.dead) } td.num { (c.superseded) } td.num { (c.cancelled) }
    }
}

const COUNT_HEADS: [&str; 6] = [
    "pending",
    "in flight",
    "done",
    "dead",
    "superseded",
    "cancelled",
];

fn as_of(now: SystemTime) -> Markup {
    let exact = humantime::format_rfc3339_seconds(now).to_string();
    html! { p.as-of { "As of " time datetime=(exact) { (exact) } } }
}

/// What the overview shows.
pub struct Overview {
    pub activity: Activity,
    pub nodes: Vec<Node>,
    pub health: Report,
    pub now: SystemTime,
}

/// The overview: deliveries by state and by node, the last hour, the
/// oldest pending delivery, the store's and NATS's health.
pub fn overview(session: &SignedIn, o: &Overview) -> Markup {
    let c = &o.activity.deliveries;
    let body = html! {
        h1 { "Overview" }
        div #live data-live {
            (as_of(o.now))
            section.cards {
                div.card { h2 { "Store" } p.big.(if o.health.store == "ok" { "good" } else { "bad" }) { (o.health.store) } }
                div.card {
                    h2 { "NATS" }
                    @match o.health.nats {
                        Some(nats) => p.big.(if nats == "connected" { "good" } else { "bad" }) { (nats) },
                        None => p.big.muted { "not used" },
                    }
                }
                div.card { h2 { "Housekeeping" } p.big { (o.health.housekeeping) } }
                div.card #oldest-pending {
                    h2 { "Oldest pending" }
                    @match o.activity.oldest_pending {
                        Some(at) => p.big { (HumanDuration(round(o.now.duration_since(at).unwrap_or_default()))) },
                        None => p.big.muted { "none" },
                    }
                }
            }
            section {
                h2 { "Deliveries by state" }
                table #by-state {
                    thead { tr { @for h in COUNT_HEADS { th.num { (h) } } } }
                    tbody { tr { (counts_cells(c)) } }
                }
            }
            section {
                h2 { "Done and failed per minute, last hour" }
                (chart(&o.activity, o.now))
            }
            section {
                h2 { "Deliveries by node" }
                @if o.nodes.is_empty() {
                    p.muted { "No node is registered." }
                } @else {
                    table #by-node {
                        thead { tr { th { "node" } th { "health" } th.num { "pending" } th.num { "in flight" } th.num { "dead" } } }
                        tbody {
                            @for n in &o.nodes {
                                tr {
                                    td { (n.name) } td { (health_badge(n)) }
                                    td.num { (n.pending) } td.num { (n.in_flight) }
                                    td.num.dead[n.dead > 0] { a href={ "/ui/dead#node-" (n.name) } { (n.dead) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(Tab::Overview, "Overview", session, body)
}

/// Done and failed per minute over the hour before `now`, as inline SVG.
fn chart(activity: &Activity, now: SystemTime) -> Markup {
    const SLOTS: i64 = 60;
    const SLOT_W: i64 = 12;
    const H: i64 = 100;
    let now_min = backstop_core::time::to_millis(now) / 60_000;
    let first = now_min - SLOTS + 1;
    let mut slots = vec![(0u64, 0u64); SLOTS as usize];
    for m in &activity.minutes {
        let minute = backstop_core::time::to_millis(m.start) / 60_000;
        if (first..=now_min).contains(&minute) {
            slots[(minute - first) as usize] = (m.done, m.failed);
        }
    }
    let max = slots
        .iter()
        .map(|(d, f)| (*d).max(*f))
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = |n: u64| (n as i64 * H / max as i64).max(i64::from(n > 0));
    let (done, failed): (u64, u64) = slots.iter().fold((0, 0), |(d, f), (a, b)| (d + a, f + b));
    let width = SLOTS * SLOT_W;
    html! {
        figure.chart {
            svg #minutes viewBox={ "0 0 " (width + 40) " " (H + 20) } role="img"
                aria-label={ (done) " done and " (failed) " failed in the last hour" } {
                line.axis x1="0" y1=(H) x2=(width) y2=(H) {}
                @for (i, (d, f)) in slots.iter().enumerate() {
                    @let x = i as i64 * SLOT_W;
                    @let minutes_ago = SLOTS - 1 - i as i64;
                    g {
                        title { (minutes_ago) " min ago: " (d) " done, " (f) " failed" }
                        rect.done x=(x + 1) y=(H - bar(*d)) width="5" height=(bar(*d)) {}
                        rect.failed x=(x + 6) y=(H - bar(*f)) width="5" height=(bar(*f)) {}
                    }
                }
                text x=(width + 4) y="10" { (max) }
                text x="0" y=(H + 16) { "60 min ago" }
                text x=(width) y=(H + 16) text-anchor="end" { "now" }
            }
            figcaption {
                span.key.done {} " done (" (done) ")  "
                span.key.failed {} " failed attempts (" (failed) ")"
            }
        }
    }
}

/// What the operations page was asked for.
#[derive(Default)]
pub struct OpsFilter {
    pub kind: String,
    pub key: String,
    pub state: String,
}

fn target(op: &Op) -> String {
    match &op.node_type {
        Some(t) if op.present_only => format!("type {t} (present)"),
        Some(t) => format!("type {t}"),
        None => op.nodes.join(", "),
    }
}

/// Operations, newest first, filtered.
pub fn ops(
    session: &SignedIn,
    filter: &OpsFilter,
    ops: &[OpSummary],
    refused: Option<&str>,
    now: SystemTime,
) -> Markup {
    let body = html! {
        h1 { "Operations" }
        form.filter method="get" action="/ui/ops" {
            label { "kind " input name="kind" value=(filter.kind); }
            label { "key " input name="key" value=(filter.key); }
            label { "state "
                select name="state" {
                    option value="" selected[filter.state.is_empty()] { "any" }
                    @for s in DeliveryState::ALL {
                        option value=(s.as_str()) selected[filter.state == s.as_str()] { (s.as_str().replace('_', " ")) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if let Some(why) = refused { p.flash.error role="alert" { (why) } }
        div #live data-live {
            (as_of(now))
            @if ops.is_empty() {
                p.muted { "No operation matches." }
            } @else {
                table #ops {
                    thead { tr {
                        th { "op" } th { "kind" } th { "key" } th { "for" } th { "created" }
                        @for h in COUNT_HEADS { th.num { (h) } }
                    } }
                    tbody {
                        @for s in ops {
                            tr data-op=(s.op.id) {
                                td { a href={ "/ui/ops/" (s.op.id) } { (s.op.id) } }
                                td { (s.op.kind) }
                                td { (s.op.key.as_deref().unwrap_or("")) }
                                td { (target(&s.op)) }
                                td { (when(now, s.op.created)) }
                                (counts_cells(&s.deliveries))
                            }
                        }
                    }
                }
            }
        }
    };
    page(Tab::Operations, "Operations", session, body)
}

fn output_tail(attempt: &Attempt) -> Markup {
    html! {
        details.output {
            summary { "attempt " (attempt.attempt) ": " (attempt.outcome) }
            @if !attempt.output.stdout.is_empty() { h4 { "stdout" } pre { (attempt.output.stdout) } }
            @if !attempt.output.stderr.is_empty() { h4 { "stderr" } pre { (attempt.output.stderr) } }
            @if attempt.output.stdout.is_empty() && attempt.output.stderr.is_empty() { p.muted { "It printed nothing." } }
        }
    }
}

/// One operation and its deliveries, node by node.
pub fn op(
    session: &SignedIn,
    op: &Op,
    deliveries: &[Delivery],
    attempts: &[Attempt],
    now: SystemTime,
) -> Markup {
    let latest: BTreeMap<i64, &Attempt> = attempts.iter().map(|a| (a.delivery, a)).collect();
    let body = html! {
        h1 { "Operation " (op.id) }
        dl.facts {
            dt { "kind" } dd { (op.kind) }
            dt { "for" } dd { (target(op)) }
            dt { "key" } dd { (op.key.as_deref().unwrap_or("—")) }
            dt { "created" } dd { (when(now, op.created)) }
            dt { "payload" } dd { code { (op.payload) } }
            @if let Some(c) = &op.cancelled { dt { "cancelled" } dd { "by " (c.by) ", " (when(now, c.at)) } }
        }
        div #live data-live {
            (as_of(now))
            table #deliveries {
                thead { tr {
                    th { "node" } th { "state" } th.num { "attempt" } th.num { "failures" }
                    th { "next attempt" } th { "last error" } th { "output" } th {}
                } }
                tbody {
                    @for d in deliveries {
                        tr data-delivery=(d.id) data-node=(d.node) data-state=(d.state.as_str()) {
                            td { (d.node) }
                            td {
                                (state_badge(d.state))
                                @if let Some(hold) = d.held { br; span.muted { (hold.describe()) } }
                            }
                            td.num { (d.attempts) @if d.attempt != d.attempts { span.muted { " (" (d.attempt) " in all)" } } }
                            td.num { (d.failures) }
                            td { @if d.state == DeliveryState::Pending { (when(now, d.next_at)) } @else { span.muted { "—" } } }
                            td.error { (d.last_error.as_deref().unwrap_or("")) }
                            td { @if let Some(a) = latest.get(&d.id) { (output_tail(a)) } }
                            td { @if d.state == DeliveryState::Dead {
                                a.button href={ "/ui/requeue?delivery=" (d.id) "&back=/ui/ops/" (op.id) } { "Requeue" }
                            } }
                        }
                    }
                }
            }
        }
    };
    page(
        Tab::Operations,
        &format!("Operation {}", op.id),
        session,
        body,
    )
}

/// Dead letters, grouped by node and by operation, each requeued after a
/// confirmation.
pub fn dead(session: &SignedIn, dead: &[Delivery], now: SystemTime) -> Markup {
    let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_op: BTreeMap<i64, (&str, usize)> = BTreeMap::new();
    for d in dead {
        *by_node.entry(&d.node).or_default() += 1;
        by_op.entry(d.op).or_insert((&d.kind, 0)).1 += 1;
    }
    let body = html! {
        h1 { "Dead letters" }
        div #live data-live {
            (as_of(now))
            @if dead.is_empty() {
                p.muted #no-dead { "No dead delivery." }
            } @else {
                p { a.button href="/ui/requeue?all=true" { "Requeue all " (dead.len()) } }
                div.groups {
                    section {
                        h2 { "By node" }
                        table #dead-by-node {
                            thead { tr { th { "node" } th.num { "dead" } th {} } }
                            tbody { @for (node, n) in &by_node {
                                tr #{ "node-" (node) } {
                                    td { (node) } td.num { (n) }
                                    td { a.button href={ "/ui/requeue?node=" (node) } { "Requeue" } }
                                }
                            } }
                        }
                    }
                    section {
                        h2 { "By operation" }
                        table #dead-by-op {
                            thead { tr { th { "op" } th { "kind" } th.num { "dead" } th {} } }
                            tbody { @for (op, (kind, n)) in by_op.iter().rev() {
                                tr {
                                    td { a href={ "/ui/ops/" (op) } { (op) } } td { (kind) } td.num { (n) }
                                    td { a.button href={ "/ui/requeue?op=" (op) } { "Requeue" } }
                                }
                            } }
                        }
                    }
                }
                h2 { "Each" }
                table #dead {
                    thead { tr {
                        th { "delivery" } th { "op" } th { "node" } th { "kind" } th.num { "failures" }
                        th { "died" } th { "last error" } th {}
                    } }
                    tbody { @for d in dead {
                        tr data-delivery=(d.id) data-node=(d.node) {
                            td { (d.id) }
                            td { a href={ "/ui/ops/" (d.op) } { (d.op) } }
                            td { (d.node) } td { (d.kind) } td.num { (d.failures) }
                            td { (opt_when(now, d.finished)) }
                            td.error { (d.last_error.as_deref().unwrap_or("")) }
                            td { a.button href={ "/ui/requeue?delivery=" (d.id) } { "Requeue" } }
                        }
                    } }
                }
            }
        }
    };
    page(Tab::Dead, "Dead letters", session, body)
}

/// A question before a change: `fields` go with the form to `action`.
pub struct Confirm<'a> {
    pub title: &'a str,
    pub question: String,
    pub detail: String,
    pub action: String,
    pub fields: Vec<(&'a str, String)>,
    pub button: &'a str,
    pub back: &'a str,
    pub tab: Tab,
}

/// Asks before a change; nothing changes until its form is sent.
pub fn confirm(session: &SignedIn, c: &Confirm<'_>) -> Markup {
    let body = html! {
        h1 { (c.title) }
        form.confirm method="post" action=(c.action) {
            p.question { (c.question) }
            p.muted { (c.detail) }
            (csrf(session))
            @for (name, value) in &c.fields { input type="hidden" name=(name) value=(value); }
            button.danger #confirm type="submit" { (c.button) }
            " "
            a.button.secondary href=(c.back) { "Cancel" }
        }
    };
    page(c.tab, c.title, session, body)
}

/// Nodes with their health and load, drained, undrained or removed here.
pub fn nodes(session: &SignedIn, nodes: &[Node], now: SystemTime) -> Markup {
    let body = html! {
        h1 { "Nodes" }
        div #live data-live {
            (as_of(now))
            @if nodes.is_empty() {
                p.muted { "No node is registered." }
            } @else {
                table #nodes {
                    thead { tr {
                        th { "node" } th { "type" } th { "kinds" } th { "health" } th { "last heartbeat" }
                        th.num { "in flight / concurrency" } th.num { "pending" } th.num { "dead" } th {}
                    } }
                    tbody { @for n in nodes {
                        tr data-node=(n.name) {
                            td { (n.name) br; span.muted { (n.transport) } }
                            td { (n.node_type) }
                            td { (n.kinds.join(", ")) }
                            td { (health_badge(n)) }
                            td { @if n.transport == "local" && n.last_heartbeat.is_none() { span.muted { "inside the coordinator" } } @else { (opt_when(now, n.last_heartbeat)) } }
                            td.num { (n.in_flight) " / " (n.capacity) }
                            td.num { (n.pending) }
                            td.num.dead[n.dead > 0] { (n.dead) }
                            td.actions {
                                form method="post" action={ "/ui/nodes/" (n.name) (if n.drained { "/undrain" } else { "/drain" }) } {
                                    (csrf(session))
                                    button type="submit" { (if n.drained { "Undrain" } else { "Drain" }) }
                                }
                                a.button.danger href={ "/ui/nodes/" (n.name) "/remove" } { "Remove" }
                            }
                        }
                    } }
                }
            }
        }
    };
    page(Tab::Nodes, "Nodes", session, body)
}
