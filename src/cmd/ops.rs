//! `backstop ops` and `backstop nodes`: the coordinator's API from the
//! command line. A table on a terminal, JSON for scripts.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use backstop_queue::api::{
    CancelRequest, MAX_BATCH, OpDetail, RemoveRequest, RequeueRequest, SubmitRequest,
};
use backstop_queue::model::{Attempt, Delivery, DeliveryState, Node, Op, Settings};
use backstop_queue::store::OpSummary;
use serde_json::json;

use crate::cli::{NodesCommand, OpsCommand, ServerArgs, WatchArgs};
use crate::client::Coordinator;
use crate::report::{Report, exit, plural};

pub async fn ops(command: OpsCommand, state: Option<&str>) -> Result<(), Report> {
    match command {
        OpsCommand::Submit {
            kind,
            node_type,
            nodes,
            from,
            key,
            payload,
            present_only,
            idempotency_key,
            settings,
            json,
            server,
        } => {
            if let Some(from) = from {
                return submit_from(&from, idempotency_key, json, &server, state).await;
            }
            let Some(kind) = kind else {
                return Err(Report::new(
                    exit::USAGE,
                    "say what to submit: a KIND with --type or --node, or --from FILE",
                ));
            };
            let api = Coordinator::new(&server, state)?;
            // One key per invocation, reused by its retries.
            let idempotency_key = match idempotency_key {
                Some(key) => key,
                None => crate::state::random_hex(16)
                    .map_err(|e| Report::from_error(exit::FAILURE, &e))?,
            };
            let typed = node_type.is_some();
            let request = SubmitRequest {
                kind,
                nodes: (!typed).then_some(nodes),
                node_type,
                key,
                payload: Some(payload.unwrap_or_else(|| json!({}))),
                present_only: typed && present_only,
                idempotency_key: None,
                timeout: settings.timeout,
                max_failures: settings.max_failures,
                base_delay: settings.base_delay,
                max_delay: settings.max_delay,
            };
            let answer = api
                .submit(&request, &idempotency_key)
                .await
                .map_err(|report| {
                    if report.code == exit::TEMPFAIL {
                        // It may have been made: the same key makes a
                        // rerun answer it rather than make it again.
                        report.detail(format!(
                            "it may have been submitted; to make sure it is made once, run the \
                             same command with --idempotency-key {idempotency_key}"
                        ))
                    } else {
                        report
                    }
                })?;
            if json {
                return print_json(&answer);
            }
            let op = &answer.op;
            let mut line = format!(
                "operation {} ({} for {}{}): {}",
                op.id,
                op.kind,
                target(op),
                key_text(op),
                plural(answer.deliveries, "delivery", "deliveries")
            );
            if answer.superseded > 0 {
                line.push_str(&format!(
                    ", {} older ones with its key superseded",
                    answer.superseded
                ));
            }
            line.push('\n');
            if let Some(settings) = settings_text(&op.settings) {
                line.push_str(&format!("settings: {settings}\n"));
            }
            print(&line)
        }
        OpsCommand::List {
            having,
            dead,
            node,
            limit,
            json,
            server,
        } => {
            let api = Coordinator::new(&server, state)?;
            if dead {
                let list = api.dead(node.as_deref(), limit).await?;
                return print_list(&list, json, dead_table);
            }
            let list = api.ops(having.as_deref(), limit).await?;
            print_list(&list, json, ops_table)
        }
        OpsCommand::Show {
            id,
            json,
            lines,
            follow,
            watch,
            server,
        } => {
            let api = Coordinator::new(&server, state)?;
            if follow {
                return watch_op(&api, id, false, &watch).await;
            }
            let detail = api.op(id).await?;
            if json {
                return print_json(&detail);
            }
            print(&show_text(&detail, lines, terminal()))
        }
        OpsCommand::Watch {
            id,
            json,
            watch,
            server,
        } => {
            let api = Coordinator::new(&server, state)?;
            watch_op(&api, id, json, &watch).await
        }
        OpsCommand::Cancel {
            id,
            stop_running,
            by,
            json,
            server,
        } => {
            let api = Coordinator::new(&server, state)?;
            let request = CancelRequest {
                by: by.name(),
                stop_running,
            };
            let answer = api.cancel(id, &request).await?;
            if json {
                return print_json(&answer);
            }
            let op = &answer.op;
            let mut line = format!(
                "operation {} ({}) cancelled{}: {} cancelled",
                op.id,
                op.kind,
                op.cancelled
                    .as_ref()
                    .map(|c| format!(" by {} at {}", c.by, time(c.at)))
                    .unwrap_or_default(),
                plural(answer.cancelled, "delivery", "deliveries")
            );
            if answer.running > 0 {
                if stop_running {
                    line.push_str(&format!(
                        "; {} running, {} told to stop (they end cancelled)",
                        answer.running, answer.stopping
                    ));
                } else {
                    line.push_str(&format!(
                        "; {} running finish (done if they succeed, else cancelled; \
                         --stop-running stops them)",
                        answer.running
                    ));
                }
            }
            print(&format!("{line}\n"))
        }
        OpsCommand::Requeue {
            op,
            delivery,
            node,
            all,
            server,
        } => {
            let api = Coordinator::new(&server, state)?;
            let request = match (op, delivery, node, all) {
                (Some(op), ..) => RequeueRequest {
                    op: Some(op),
                    ..RequeueRequest::default()
                },
                (_, Some(d), ..) => RequeueRequest {
                    delivery: Some(d),
                    ..RequeueRequest::default()
                },
                (_, _, Some(n), _) => RequeueRequest {
                    node: Some(n),
                    ..RequeueRequest::default()
                },
                _ => RequeueRequest {
                    all: true,
                    ..RequeueRequest::default()
                },
            };
            let answer = api.requeue(&request).await?;
            print(&format!(
                "requeued {}, attempts reset\n",
                plural(answer.requeued, "dead delivery", "dead deliveries")
            ))
        }
    }
}

pub async fn nodes(command: NodesCommand, state: Option<&str>) -> Result<(), Report> {
    match command {
        NodesCommand::List { json, server } => {
            let api = Coordinator::new(&server, state)?;
            let list = api.nodes().await?;
            print_list(&list, json, nodes_table)
        }
        NodesCommand::Remove {
            name,
            by,
            json,
            server,
        } => {
            let api = Coordinator::new(&server, state)?;
            let answer = api.remove(&name, &RemoveRequest { by: by.name() }).await?;
            if json {
                return print_json(&answer);
            }
            let mut line = format!(
                "node {} removed: it gets nothing more, {} cancelled",
                answer.node.name,
                plural(answer.cancelled, "delivery", "deliveries")
            );
            if answer.running > 0 {
                line.push_str(&format!(
                    ", {} it was running end cancelled when they come back",
                    answer.running
                ));
            }
            line.push_str(
                "; its history is kept, and a worker started under its name later is a new node\n",
            );
            print(&line)
        }
        NodesCommand::Drain { name, undo, server } => {
            let api = Coordinator::new(&server, state)?;
            let node = api.drain(&name, undo).await?;
            let line = if undo {
                format!("node {} undrained: it gets deliveries again\n", node.name)
            } else {
                format!(
                    "node {} drained: no new deliveries; {} in flight finish, {} wait\n",
                    node.name, node.in_flight, node.pending
                )
            };
            print(&line)
        }
    }
}

fn terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// `ops submit --from FILE`: the operations of FILE (`-`: stdin), one JSON
/// body of `POST /v1/ops` per line, sent in batches of [`MAX_BATCH`], each
/// one transaction. Every line is read before anything is sent, so a line
/// that is not an operation changes nothing. A line without an idempotency
/// key gets `KEY-LINE`, KEY being `base_key` or a random one: a rerun with
/// the same key answers what was already made instead of making it again.
async fn submit_from(
    from: &Path,
    base_key: Option<String>,
    json: bool,
    server: &ServerArgs,
    state: Option<&str>,
) -> Result<(), Report> {
    let stdin = from == Path::new("-");
    let name = if stdin {
        "stdin".to_owned()
    } else {
        from.display().to_string()
    };
    let text = if stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(from)
    }
    .map_err(|e| Report::from_error(exit::USAGE, &e).detail(format!("--from {name}")))?;
    let mut lines = read_operations(&text, &name)?;
    if lines.is_empty() {
        return Err(Report::new(
            exit::USAGE,
            format!("{name} holds no operation (one JSON object per line)"),
        ));
    }
    let base_key = match base_key {
        Some(key) => key,
        None => crate::state::random_hex(16).map_err(|e| Report::from_error(exit::FAILURE, &e))?,
    };
    for (line, request) in &mut lines {
        request
            .idempotency_key
            .get_or_insert_with(|| format!("{base_key}-{line}"));
    }
    let api = Coordinator::new(server, state)?;
    let requests: Vec<SubmitRequest> = lines.iter().map(|(_, r)| r.clone()).collect();
    let (mut made, mut repeated, mut deliveries, mut superseded) = (0, 0, 0, 0);
    for (n, batch) in requests.chunks(MAX_BATCH).enumerate() {
        let first = n * MAX_BATCH;
        let answers = match api.submit_batch(batch).await {
            Ok(answers) => answers,
            Err((report, refused)) => {
                let sent = if first == 0 {
                    "nothing was submitted".to_owned()
                } else {
                    format!(
                        "the {} before line {} were submitted",
                        plural(first as u64, "operation", "operations"),
                        lines[first].0
                    )
                };
                let report = match refused.filter(|(i, _)| first + i < lines.len()) {
                    Some((i, why)) => Report::new(
                        report.code,
                        format!(
                            "{name} line {}: the coordinator refused it: {why}",
                            lines[first + i].0
                        ),
                    )
                    .detail(format!(
                        "nothing from line {} on was submitted; {sent}",
                        lines[first].0
                    )),
                    None if report.code == exit::TEMPFAIL => report.detail(format!(
                        "the lines from {} on may not have been submitted; {sent}; to make sure \
                         each is made once, run the same command with --idempotency-key {base_key}",
                        lines[first].0
                    )),
                    None => report.detail(format!(
                        "nothing from line {} on was submitted; {sent}",
                        lines[first].0
                    )),
                };
                return Err(report);
            }
        };
        for answer in &answers {
            if answer.repeated {
                repeated += 1;
            } else {
                made += 1;
                deliveries += answer.deliveries;
                superseded += answer.superseded;
            }
            if json {
                print_json(answer)?;
            }
        }
    }
    if json {
        return Ok(());
    }
    let mut line = format!(
        "{} from {name}: {} new, {}",
        plural(lines.len() as u64, "operation", "operations"),
        made,
        plural(deliveries, "delivery", "deliveries")
    );
    if superseded > 0 {
        line.push_str(&format!(
            ", {superseded} older ones with their keys superseded"
        ));
    }
    if repeated > 0 {
        line.push_str(&format!(
            "; {repeated} submitted before with their idempotency keys, answered"
        ));
    }
    print(&format!("{line}\n"))
}

/// The operations of a `--from` file with their line numbers: each line a
/// JSON body of `POST /v1/ops`; blank lines and `#` comments skipped.
fn read_operations(text: &str, name: &str) -> Result<Vec<(usize, SubmitRequest)>, Report> {
    let mut operations = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let request = serde_json::from_str(line).map_err(|e| {
            Report::new(
                exit::USAGE,
                format!("{name} line {}: not an operation: {e}", i + 1),
            )
            .detail("nothing was submitted")
        })?;
        operations.push((i + 1, request));
    }
    Ok(operations)
}

fn print(text: &str) -> Result<(), Report> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Report::from_error(exit::FAILURE, &e))
        }
        _ => Ok(()),
    }
}

/// One JSON object on a line, its keys sorted.
fn json_line(item: &impl serde::Serialize) -> Result<String, Report> {
    let value = serde_json::to_value(item).map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    Ok(format!("{value}\n"))
}

fn print_json(item: &impl serde::Serialize) -> Result<(), Report> {
    print(&json_line(item)?)
}

/// One JSON object per line with `--json`, else a table.
fn print_list<T: serde::Serialize>(
    items: &[T],
    json: bool,
    table: fn(&[T], bool) -> String,
) -> Result<(), Report> {
    if json {
        let lines = items
            .iter()
            .map(json_line)
            .collect::<Result<String, Report>>()?;
        return print(&lines);
    }
    print(&table(items, terminal()))
}

/// A time as the API writes it: RFC 3339, to the millisecond.
fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// An optional time, "-" when absent.
fn opt_time(at: Option<SystemTime>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// An optional text, "-" when absent.
fn opt_text(text: Option<&str>) -> String {
    text.unwrap_or("-").to_owned()
}

fn target(op: &Op) -> String {
    match &op.node_type {
        Some(t) if op.present_only => format!("type {t} (nodes present at submit)"),
        Some(t) => format!("type {t}"),
        None => format!("nodes {}", op.nodes.join(", ")),
    }
}

fn key_text(op: &Op) -> String {
    match &op.key {
        Some(k) => format!(", key {k}"),
        None => String::new(),
    }
}

/// "operation 12: install for type gpu, key llama".
fn heading(op: &Op) -> String {
    format!(
        "operation {}: {} for {}{}",
        op.id,
        op.kind,
        target(op),
        key_text(op)
    )
}

/// An operation's own settings, "timeout 30m, max_failures 5"; `None`
/// when it has none.
fn settings_text(settings: &Settings) -> Option<String> {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let parts: Vec<String> = [
        settings.timeout.map(|t| format!("timeout {}", d(t))),
        settings.max_failures.map(|n| format!("max_failures {n}")),
        settings.base_delay.map(|t| format!("base_delay {}", d(t))),
        settings.max_delay.map(|t| format!("max_delay {}", d(t))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What `ops show` prints: the operation, its deliveries, and the last
/// `lines` lines (0: all) of each stream each delivery's latest attempt
/// printed.
fn show_text(detail: &OpDetail, lines: usize, terminal: bool) -> String {
    let op = &detail.op;
    let mut out = format!("{}, submitted {}\n", heading(op), time(op.created));
    if let Some(c) = &op.cancelled {
        out.push_str(&format!("cancelled by {} at {}\n", c.by, time(c.at)));
    }
    if let Some(settings) = settings_text(&op.settings) {
        out.push_str(&format!("settings: {settings}\n"));
    }
    out.push_str(&format!("payload: {}\n\n", op.payload));
    out.push_str(&deliveries_table(&detail.deliveries, terminal));
    for attempt in &detail.attempts {
        out.push_str(&attempt_text(attempt, lines));
    }
    out
}

/// One attempt's outcome and the end of what it printed.
fn attempt_text(attempt: &Attempt, lines: usize) -> String {
    let mut out = format!(
        "\ndelivery {} to {}, attempt {}: {}{}, {}\n",
        attempt.delivery,
        attempt.node,
        attempt.attempt,
        attempt.outcome,
        attempt
            .error
            .as_deref()
            .map(|e| format!(" ({})", first_line(e)))
            .unwrap_or_default(),
        time(attempt.finished)
    );
    for (name, text) in [
        ("stdout", &attempt.output.stdout),
        ("stderr", &attempt.output.stderr),
    ] {
        let all: Vec<&str> = text.lines().collect();
        if all.is_empty() {
            continue;
        }
        let skip = if lines == 0 {
            0
        } else {
            all.len().saturating_sub(lines)
        };
        out.push_str(&format!("  {name}:\n"));
        if skip > 0 {
            out.push_str(&format!(
                "    … {} earlier (--lines 0 shows all that is kept)\n",
                plural(skip as u64, "line", "lines")
            ));
        }
        for line in &all[skip..] {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// Follows operation `id`'s deliveries: a line (or, with `json`, the
/// delivery as JSON) for each that is new or changed, until every one is
/// finished; then `Ok` when all are done, else exit 1 saying how they
/// ended.
async fn watch_op(api: &Coordinator, id: i64, json: bool, watch: &WatchArgs) -> Result<(), Report> {
    let detail = api.op(id).await?;
    let op = &detail.op;
    if !json {
        print(&format!("{}\n", heading(op)))?;
    }
    let mut seen: HashMap<i64, String> = HashMap::new();
    let mut deliveries = detail.deliveries;
    loop {
        deliveries.sort_by_key(|d| d.id);
        for d in &deliveries {
            let now = change_text(d);
            if seen.get(&d.id) != Some(&now) {
                if json {
                    print(&json_line(d)?)?;
                } else {
                    print(&format!("{} {now}\n", time(d.updated)))?;
                }
                seen.insert(d.id, now);
            }
        }
        if deliveries.iter().all(|d| d.state.is_final()) {
            break;
        }
        tokio::time::sleep(watch.interval).await;
        deliveries = api.deliveries_of(id).await?;
    }
    let mut counts: Vec<(DeliveryState, u64)> = Vec::new();
    for st in DeliveryState::ALL {
        let n = deliveries.iter().filter(|d| d.state == st).count() as u64;
        if n > 0 {
            counts.push((st, n));
        }
    }
    let summary = counts
        .iter()
        .map(|(st, n)| format!("{n} {st}"))
        .collect::<Vec<_>>()
        .join(", ");
    if counts.iter().all(|(st, _)| *st == DeliveryState::Done) {
        if !json {
            print(&format!(
                "operation {id}: every delivery done ({summary})\n"
            ))?;
        }
        return Ok(());
    }
    Err(Report::new(
        exit::FAILURE,
        format!("operation {id} finished, not all done: {summary}"),
    )
    .hint(format!(
        "see `backstop ops show {id}` for the errors and output"
    )))
}

/// How a delivery stands, as a line of `ops watch`.
fn change_text(d: &Delivery) -> String {
    let what = format!("delivery {} to {}:", d.id, d.node);
    let error = || {
        d.last_error
            .as_deref()
            .map(|e| format!(" ({})", short(Some(e))))
            .unwrap_or_default()
    };
    match d.state {
        DeliveryState::Pending => match d.held {
            Some(hold) => format!("{what} pending, {}", hold.describe()),
            None => format!("{what} pending, next {}{}", time(d.next_at), error()),
        },
        DeliveryState::InFlight => format!(
            "{what} in flight, attempt {}{}",
            d.attempts,
            if d.cancelled.is_some() {
                " (its operation was cancelled)"
            } else {
                ""
            }
        ),
        DeliveryState::Done => format!("{what} done"),
        DeliveryState::Dead => format!(
            "{what} dead after {}{}",
            plural(u64::from(d.failures), "failure", "failures"),
            error()
        ),
        DeliveryState::Superseded => format!("{what} superseded by a newer operation with its key"),
        DeliveryState::Cancelled => format!(
            "{what} cancelled{}",
            d.cancelled
                .as_ref()
                .map(|c| format!(" by {}", c.by))
                .unwrap_or_default()
        ),
    }
}

/// The first line of an error (its head: "exit 3: ..."), shortened: its
/// whole stderr is shown below it.
fn first_line(error: &str) -> String {
    let line = error.lines().next().unwrap_or("").trim();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(79).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The last line of an error, shortened for a table cell.
fn short(error: Option<&str>) -> String {
    let t = error.unwrap_or("-");
    let line = t.lines().last().unwrap_or("").trim();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(79).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn ops_table(ops: &[OpSummary], terminal: bool) -> String {
    if ops.is_empty() {
        return "no operations\n".to_owned();
    }
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|summary| {
            let (op, d) = (&summary.op, &summary.deliveries);
            vec![
                op.id.to_string(),
                op.kind.clone(),
                target(op),
                opt_text(op.key.as_deref()),
                d.pending.to_string(),
                d.in_flight.to_string(),
                d.done.to_string(),
                d.dead.to_string(),
                d.superseded.to_string(),
                d.cancelled.to_string(),
                time(op.created),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "ID",
            "KIND",
            "TARGET",
            "KEY",
            "PENDING",
            "IN FLIGHT",
            "DONE",
            "DEAD",
            "SUPERSEDED",
            "CANCELLED",
            "CREATED",
        ],
        &rows,
        terminal,
    )
}

fn dead_table(deliveries: &[Delivery], terminal: bool) -> String {
    if deliveries.is_empty() {
        return "no dead deliveries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.op.to_string(),
                d.kind.clone(),
                opt_text(d.key.as_deref()),
                d.node.clone(),
                d.failures.to_string(),
                opt_time(d.finished),
                short(d.last_error.as_deref()),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "DELIVERY",
            "OP",
            "KIND",
            "KEY",
            "NODE",
            "FAILURES",
            "DIED",
            "LAST ERROR",
        ],
        &rows,
        terminal,
    )
}

fn deliveries_table(deliveries: &[Delivery], terminal: bool) -> String {
    if deliveries.is_empty() {
        return "no deliveries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            let when = match (d.state, d.held) {
                // Held by its node, its next attempt time says nothing.
                (DeliveryState::Pending, Some(hold)) => hold.describe().to_owned(),
                (DeliveryState::Pending, None) => format!("next {}", time(d.next_at)),
                (DeliveryState::InFlight, _) => {
                    format!("lease until {}", opt_time(d.lease_until))
                }
                _ => opt_time(d.finished),
            };
            let state = match (d.state, &d.cancelled) {
                (DeliveryState::Cancelled, Some(c)) => format!("cancelled by {}", c.by),
                (DeliveryState::InFlight, Some(_)) => "in_flight (cancelling)".to_owned(),
                (st, _) => st.to_string(),
            };
            // Since the last requeue, and in all when they differ.
            let attempts = if d.attempts == d.attempt {
                d.attempts.to_string()
            } else {
                format!("{} ({} in all)", d.attempts, d.attempt)
            };
            vec![
                d.id.to_string(),
                d.node.clone(),
                state,
                attempts,
                d.failures.to_string(),
                when,
                short(d.last_error.as_deref()),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "DELIVERY",
            "NODE",
            "STATE",
            "ATTEMPTS",
            "FAILURES",
            "WHEN",
            "LAST ERROR",
        ],
        &rows,
        terminal,
    )
}

fn nodes_table(nodes: &[Node], terminal: bool) -> String {
    if nodes.is_empty() {
        return "no nodes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.node_type.clone(),
                n.status.to_string(),
                if n.drained { "yes" } else { "no" }.to_owned(),
                n.kinds.join(","),
                n.capacity.to_string(),
                n.in_flight.to_string(),
                n.pending.to_string(),
                n.dead.to_string(),
                opt_time(n.last_heartbeat),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "NAME",
            "TYPE",
            "STATUS",
            "DRAINED",
            "KINDS",
            "CAPACITY",
            "IN FLIGHT",
            "PENDING",
            "DEAD",
            "LAST HEARTBEAT",
        ],
        &rows,
        terminal,
    )
}
