//! `backstop ops` and `backstop nodes`: the coordinator's API from the
//! command line. A table on a terminal, JSON for scripts.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use backstop_core::{Policy, Secret};
use backstop_http::{Client, Method};
use backstop_queue::Hold;
use serde_json::{Value, json};

use crate::cli::{NodesCommand, OpsCommand, ServerArgs};
use crate::report::{Report, exit, plural};

/// Talks to one coordinator.
struct Api {
    client: Client,
    base: String,
    token: Secret,
}

impl Api {
    fn new(server: &ServerArgs, state: Option<&str>) -> Result<Api, Report> {
        let token = crate::state::read_token(state)?;
        // A coordinator on this machine answers at once or not at all:
        // retry briefly, then say so.
        let policy = Policy::api()
            .max_attempts(3)
            .initial_delay(Duration::from_millis(200))
            .max_delay(Duration::from_secs(2));
        let client = Client::builder().policy(policy).build()?;
        Ok(Api {
            client,
            base: server.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Report> {
        self.call_once(method, path, body, None).await
    }

    /// [`Api::call`]; with an idempotency key, a request the coordinator
    /// makes once, so that it is retried like a GET: every retry carries
    /// the same key, and a repeat answers what the first did.
    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Report> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string())
                .idempotent(false);
        }
        if let Some(key) = idempotency_key {
            request = request
                .header("idempotency-key", &format!("\"{key}\""))
                .idempotent(true);
        }
        request.json::<Value>().await.map_err(|e| {
            use backstop_core::AttemptError::Failed;
            use backstop_http::Failure;
            match e.retry_error().and_then(|r| r.last.as_ref()) {
                // The coordinator said no: its sentence is the message.
                // Input it finds invalid (400, 422: an unknown kind, an
                // empty key, a bad name) is a usage error, like a bad flag.
                Some(Failed(Failure::Status { status, detail, .. }))
                    if status.is_client_error() =>
                {
                    let message = format!(
                        "the coordinator refused: {}",
                        detail.clone().unwrap_or_else(|| status.to_string())
                    );
                    let code = match status.as_u16() {
                        400 | 422 => exit::USAGE,
                        _ => exit::FAILURE,
                    };
                    let report = Report::new(code, message);
                    if status.as_u16() == 401 {
                        report.hint("set BACKSTOP_TOKEN to the token `backstop serve` uses")
                    } else {
                        report
                    }
                }
                Some(Failed(Failure::Transport(t))) if t.is_connect() => {
                    Report::from(e).hint(format!(
                        "is `backstop serve` running at {}? (--server or BACKSTOP_SERVER)",
                        self.base
                    ))
                }
                _ => Report::from(e),
            }
        })
    }
}

pub async fn ops(command: OpsCommand, state: Option<&str>) -> Result<(), Report> {
    match command {
        OpsCommand::Submit {
            kind,
            node_type,
            nodes,
            key,
            payload,
            present_only,
            idempotency_key,
            json,
            server,
        } => {
            let api = Api::new(&server, state)?;
            // One key per invocation, reused by its retries.
            let idempotency_key = match idempotency_key {
                Some(key) => key,
                None => crate::state::random_hex(16)
                    .map_err(|e| Report::from_error(exit::FAILURE, &e))?,
            };
            let mut body = json!({ "kind": kind, "payload": payload.unwrap_or_else(|| json!({})) });
            if let Some(t) = node_type {
                body["type"] = json!(t);
                body["present_only"] = json!(present_only);
            } else {
                body["nodes"] = json!(nodes);
            }
            if let Some(k) = key {
                body["key"] = json!(k);
            }
            let answer = api
                .call_once(Method::POST, "/v1/ops", Some(body), Some(&idempotency_key))
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
                return print(&format!("{answer}\n"));
            }
            let op = &answer["op"];
            let n = answer["deliveries"].as_u64().unwrap_or(0);
            let mut line = format!(
                "operation {} ({} for {}{}): {}",
                op["id"],
                text(&op["kind"]),
                target(op),
                key_text(op),
                plural(n, "delivery", "deliveries")
            );
            if answer["superseded"].as_u64().unwrap_or(0) > 0 {
                line.push_str(&format!(
                    ", {} older ones with its key superseded",
                    answer["superseded"]
                ));
            }
            print(&format!("{line}\n"))
        }
        OpsCommand::List {
            having,
            dead,
            node,
            limit,
            json,
            server,
        } => {
            let api = Api::new(&server, state)?;
            if dead {
                let mut path = format!("/v1/deliveries?state=dead&limit={limit}");
                if let Some(node) = node {
                    path.push_str(&format!("&node={}", encode(&node)));
                }
                let list = api.call(Method::GET, &path, None).await?;
                return print_list(&list, json, dead_table);
            }
            let mut path = format!("/v1/ops?limit={limit}");
            if let Some(s) = having {
                path.push_str(&format!("&state={}", encode(&s)));
            }
            let list = api.call(Method::GET, &path, None).await?;
            print_list(&list, json, ops_table)
        }
        OpsCommand::Show { id, json, server } => {
            let api = Api::new(&server, state)?;
            let op = api
                .call(Method::GET, &format!("/v1/ops/{id}"), None)
                .await?;
            if json {
                return print(&format!("{op}\n"));
            }
            let mut out = format!(
                "operation {}: {} for {}{}, submitted {}\npayload: {}\n\n",
                op["id"],
                text(&op["kind"]),
                target(&op),
                key_text(&op),
                text(&op["created"]),
                text(&op["payload"])
            );
            let empty = Vec::new();
            let deliveries = op["deliveries"].as_array().unwrap_or(&empty);
            out.push_str(&deliveries_table(deliveries, terminal()));
            print(&out)
        }
        OpsCommand::Requeue {
            op,
            delivery,
            node,
            all,
            server,
        } => {
            let api = Api::new(&server, state)?;
            let body = match (op, delivery, node, all) {
                (Some(op), ..) => json!({ "op": op }),
                (_, Some(d), ..) => json!({ "delivery": d }),
                (_, _, Some(n), _) => json!({ "node": n }),
                _ => json!({ "all": true }),
            };
            let answer = api.call(Method::POST, "/v1/requeue", Some(body)).await?;
            let n = answer["requeued"].as_u64().unwrap_or(0);
            print(&format!(
                "requeued {}, attempts reset\n",
                plural(n, "dead delivery", "dead deliveries")
            ))
        }
    }
}

pub async fn nodes(command: NodesCommand, state: Option<&str>) -> Result<(), Report> {
    match command {
        NodesCommand::List { json, server } => {
            let api = Api::new(&server, state)?;
            let list = api.call(Method::GET, "/v1/nodes", None).await?;
            print_list(&list, json, nodes_table)
        }
        NodesCommand::Drain { name, undo, server } => {
            let api = Api::new(&server, state)?;
            let verb = if undo { "undrain" } else { "drain" };
            let path = format!("/v1/nodes/{}/{verb}", encode(&name));
            let node = api.call(Method::POST, &path, Some(json!({}))).await?;
            let line = if undo {
                format!(
                    "node {} undrained: it gets deliveries again\n",
                    text(&node["name"])
                )
            } else {
                format!(
                    "node {} drained: no new deliveries; {} in flight finish, {} wait\n",
                    text(&node["name"]),
                    node["in_flight"],
                    node["pending"]
                )
            };
            print(&line)
        }
    }
}

fn terminal() -> bool {
    std::io::stdout().is_terminal()
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

/// One JSON object per line with `--json`, else a table.
fn print_list(list: &Value, json: bool, table: fn(&[Value], bool) -> String) -> Result<(), Report> {
    let empty = Vec::new();
    let items = list.as_array().unwrap_or(&empty);
    if json {
        let lines: String = items.iter().map(|i| format!("{i}\n")).collect();
        return print(&lines);
    }
    print(&table(items, terminal()))
}

/// A JSON string as plain text ("-" when absent).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn target(op: &Value) -> String {
    match op["node_type"].as_str() {
        Some(t) if op["present_only"].as_bool() == Some(true) => {
            format!("type {t} (nodes present at submit)")
        }
        Some(t) => format!("type {t}"),
        None => format!(
            "nodes {}",
            op["nodes"]
                .as_array()
                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
    }
}

fn key_text(op: &Value) -> String {
    match op["key"].as_str() {
        Some(k) => format!(", key {k}"),
        None => String::new(),
    }
}

fn count(v: &Value) -> String {
    v.as_u64().unwrap_or(0).to_string()
}

/// The first line of an error, shortened for a table cell.
fn short(v: &Value) -> String {
    let t = text(v);
    let line = t.lines().last().unwrap_or("").trim();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(79).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn ops_table(ops: &[Value], terminal: bool) -> String {
    if ops.is_empty() {
        return "no operations\n".to_owned();
    }
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|op| {
            let d = &op["deliveries"];
            vec![
                text(&op["id"]),
                text(&op["kind"]),
                target(op),
                text(&op["key"]),
                count(&d["pending"]),
                count(&d["in_flight"]),
                count(&d["done"]),
                count(&d["dead"]),
                count(&d["superseded"]),
                text(&op["created"]),
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
            "CREATED",
        ],
        &rows,
        terminal,
    )
}

fn dead_table(deliveries: &[Value], terminal: bool) -> String {
    if deliveries.is_empty() {
        return "no dead deliveries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                text(&d["id"]),
                text(&d["op"]),
                text(&d["kind"]),
                text(&d["key"]),
                text(&d["node"]),
                count(&d["failures"]),
                text(&d["finished"]),
                short(&d["last_error"]),
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

fn deliveries_table(deliveries: &[Value], terminal: bool) -> String {
    if deliveries.is_empty() {
        return "no deliveries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            let when = match d["state"].as_str() {
                // Held by its node, its next attempt time says nothing.
                Some("pending") => match serde_json::from_value::<Hold>(d["held"].clone()) {
                    Ok(hold) => hold.describe().to_owned(),
                    Err(_) => format!("next {}", text(&d["next_at"])),
                },
                Some("in_flight") => format!("lease until {}", text(&d["lease_until"])),
                _ => text(&d["finished"]),
            };
            // Since the last requeue, and in all when they differ.
            let attempts = match (d["attempts"].as_u64(), d["attempt"].as_u64()) {
                (Some(since), Some(all)) if since != all => format!("{since} ({all} in all)"),
                (Some(since), _) => since.to_string(),
                (None, _) => count(&d["attempt"]),
            };
            vec![
                text(&d["id"]),
                text(&d["node"]),
                text(&d["state"]),
                attempts,
                count(&d["failures"]),
                when,
                short(&d["last_error"]),
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

fn nodes_table(nodes: &[Value], terminal: bool) -> String {
    if nodes.is_empty() {
        return "no nodes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                text(&n["name"]),
                text(&n["node_type"]),
                text(&n["status"]),
                if n["drained"].as_bool() == Some(true) {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
                n["kinds"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                count(&n["capacity"]),
                count(&n["in_flight"]),
                count(&n["pending"]),
                count(&n["dead"]),
                text(&n["last_heartbeat"]),
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

/// Percent-encodes a path or query component.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
