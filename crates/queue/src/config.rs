//! `backstop.toml`: the nodes that run inside the coordinator, and how
//! the operations of each kind run.
//!
//! ```toml
//! [[node]]
//! name = "gpu-1"
//! type = "gpu"
//! concurrency = 2            # handlers at once; default 1
//!
//! [node.handle]              # one shell command per kind
//! install = "./handlers/install-backend.sh"
//! delete = "./handlers/delete-backend.sh"
//!
//! [kinds.install]            # for operations of this kind submitted here
//! timeout = "30m"            # each unset one: `backstop serve`'s flag
//! max_failures = 5
//! base_delay = "30s"
//! max_delay = "15m"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::handler::CommandHandler;
use crate::model::{Invalid, Settings};
use crate::transport::local::LocalNode;

/// The file, as read.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The local nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeConfig>,
    /// How the operations of each kind run (`[kinds.KIND]`), where it
    /// differs from `backstop serve`'s flags: applied to each operation of
    /// the kind submitted to this coordinator, under what the submission
    /// itself asks for ([`Settings::or`]).
    #[serde(default)]
    pub kinds: BTreeMap<String, Settings>,
    /// `backstop run`'s commands per provider and model (`[run]`), read by
    /// `backstop_agent::template`; accepted here so that one file serves
    /// both.
    #[serde(default, rename = "run")]
    _run: OtherTable,
}

/// A table another reader of the file owns: accepted, not looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct OtherTable;

impl<'de> Deserialize<'de> for OtherTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| OtherTable)
    }
}

/// One `[[node]]`.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Handlers at once.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// A shell command per kind.
    pub handle: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{} is not a valid backstop.toml: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and checks the text of a `backstop.toml`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        let mut seen = std::collections::HashSet::new();
        for node in &config.nodes {
            if !seen.insert(node.name.as_str()) {
                return Err(format!("node {:?} is declared twice", node.name));
            }
            if node.handle.values().any(|c| c.trim().is_empty()) {
                return Err(format!("node {:?} has an empty handler command", node.name));
            }
            node.local().map_err(|e| e.to_string())?;
        }
        for (kind, settings) in &config.kinds {
            crate::model::check_name("kind", kind).map_err(|e| format!("[kinds.{kind}]: {e}"))?;
            settings
                .validate()
                .map_err(|e| format!("[kinds.{kind}]: {e}"))?;
        }
        Ok(config)
    }

    /// Checks that every handler's program exists and is executable
    /// ([`crate::program::check_handler`]), from the current directory and
    /// `PATH` the handlers will run with.
    pub fn check_handlers(&self) -> Result<(), crate::program::Unrunnable> {
        for node in &self.nodes {
            for (kind, command) in &node.handle {
                crate::program::check_handler(&node.name, kind, command)?;
            }
        }
        Ok(())
    }

    /// The local nodes, each kind run by its command.
    pub fn local_nodes(&self) -> Result<Vec<LocalNode>, Invalid> {
        self.nodes.iter().map(NodeConfig::local).collect()
    }
}

impl NodeConfig {
    fn local(&self) -> Result<LocalNode, Invalid> {
        let mut node = LocalNode::new(&self.name, &self.node_type, self.concurrency);
        for (kind, command) in &self.handle {
            node = node.handle(kind, Arc::new(CommandHandler::new(command)));
        }
        node.spec.declaration = Some(self.declaration());
        node.spec = node.spec.validate()?;
        Ok(node)
    }

    /// A fingerprint of this declaration (name, type, concurrency and
    /// every handler): an operator's removal of the node holds while it
    /// stays the same ([`crate::Store::register`]).
    pub fn declaration(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_default();
        crate::model::sha256_hex(canonical.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nodes_and_handlers() {
        let config = Config::parse(
            r#"
            [[node]]
            name = "gpu-1"
            type = "gpu"
            concurrency = 2
            [node.handle]
            install = "./install.sh"
            delete = "rm -rf /models/x"

            [[node]]
            name = "cpu-1"
            type = "cpu"
            handle = { install = "true" }

            # backstop run's table, in the same file.
            [run.providers.anthropic]
            command = ["claude", "-p", "--model", "{model}"]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let nodes = config.local_nodes().unwrap_or_default();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].spec.kinds, ["delete", "install"]);
        assert_eq!(nodes[0].spec.capacity, 2);
        assert_eq!(nodes[1].spec.capacity, 1);
        assert_eq!(nodes[1].spec.transport, "local");
    }

    #[test]
    fn reads_the_settings_of_kinds() {
        let config = Config::parse(
            r#"
            [kinds.install]
            timeout = "30m"
            max_failures = 5
            base_delay = "30s"
            max_delay = "15m"

            [kinds.delete]
            max_failures = 2
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let install = config.kinds.get("install").copied().unwrap_or_default();
        assert_eq!(install.timeout, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(install.max_failures, Some(5));
        assert_eq!(install.base_delay, Some(std::time::Duration::from_secs(30)));
        assert_eq!(install.max_delay, Some(std::time::Duration::from_secs(900)));
        let delete = config.kinds.get("delete").copied().unwrap_or_default();
        assert_eq!((delete.max_failures, delete.timeout), (Some(2), None));
    }

    #[test]
    fn a_declaration_changes_with_its_entry_and_only_then() {
        let text = |concurrency: u32, other: &str| {
            format!(
                "[[node]]\nname = \"a\"\ntype = \"t\"\nconcurrency = {concurrency}\n\
                 handle = {{ x = \"true\" }}\n{other}"
            )
        };
        let declared = |text: &str| {
            Config::parse(text)
                .unwrap_or_else(|e| panic!("{e}"))
                .local_nodes()
                .unwrap_or_default()
                .pop()
                .and_then(|n| n.spec.declaration)
        };
        let first = declared(&text(1, ""));
        assert!(first.is_some());
        assert_eq!(
            declared(&text(1, "# a comment\n[kinds.x]\nmax_failures = 3\n")),
            first,
            "another part of the file is no new declaration"
        );
        assert_ne!(declared(&text(2, "")), first, "its entry changed");
    }

    #[test]
    fn says_what_is_wrong() {
        let cases = [
            ("[[node]]\nname = \"a\"\n", "type"),
            (
                "[[node]]\nname = \"a b\"\ntype = \"t\"\nhandle = { x = \"true\" }",
                "node name",
            ),
            (
                "[[node]]\nname = \"a\"\ntype = \"t\"\nhandle = {}",
                "declares no kind",
            ),
            (
                "[[node]]\nname = \"a\"\ntype = \"t\"\nhandle = { x = \" \" }",
                "empty handler",
            ),
            (
                "[[node]]\nname = \"a\"\ntype = \"t\"\nhandle = { x = \"true\" }\n[[node]]\nname = \"a\"\ntype = \"t\"\nhandle = { x = \"true\" }",
                "twice",
            ),
            ("[[nodes]]\n", "unknown field"),
            ("not toml", "line 1"),
            (
                "[kinds.install]\ntimeout = \"0s\"\n",
                "[kinds.install]: timeout 0 ms is out of bounds: use 1 s to 30 d",
            ),
            (
                "[kinds.install]\nmax_failures = 0\n",
                "max_failures 0 is out of bounds: use 1 to 1000",
            ),
            ("[kinds.install]\ntimeout = \"soon\"\n", "is not a duration"),
            ("[kinds.install]\nretries = 3\n", "unknown field"),
            (
                "[kinds.install]\nbase_delay = \"1h\"\nmax_delay = \"1m\"\n",
                "longer than max_delay",
            ),
            (
                "[kinds.\"in stall\"]\nmax_failures = 3\n",
                "kind \"in stall\" is not valid",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).err().unwrap_or_default();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert_eq!(Config::parse("").map(|c| c.nodes.len()), Ok(0));
    }
}
