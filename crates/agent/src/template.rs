//! Command templates: the command run for a model, with `{model}`,
//! `{provider}` and `{key}` filled in, and the `[run]` tables of
//! `backstop.toml` that give a provider or a model a command of its own.
//!
//! ```toml
//! [run.providers.anthropic]
//! command = ["claude", "-p", "--model", "{model}", "--output-format", "json"]
//!
//! [run.providers.openai]
//! command = ["codex", "exec", "--json", "--model", "{model}", "-"]
//!
//! [run.models."openai/gpt-5-codex"]      # a model's own beats its provider's
//! command = ["codex", "exec", "--json", "-m", "{model}", "-"]
//! agent = "codex"                        # how to read its output [default: from the program's name]
//! ```

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Agent;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 3] = ["model", "provider", "key"];

/// What fills the placeholders for one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names<'a> {
    /// `{model}`: the model's name (`claude-sonnet-4-5`).
    pub model: &'a str,
    /// `{provider}`: its provider (`anthropic`).
    pub provider: &'a str,
    /// `{key}`: both (`anthropic/claude-sonnet-4-5`).
    pub key: &'a str,
}

/// A `{name}` that is not one of [`PLACEHOLDERS`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown placeholder {{{name}}} in {arg:?}; the known ones are {{model}}, {{provider}} and {{key}}"
)]
pub struct UnknownPlaceholder {
    /// The name between the braces.
    pub name: String,
    /// The argument it was found in.
    pub arg: String,
}

/// The `{name}`s of `text`, with where each starts and ends. A name is a
/// letter or `_`, then letters, digits, `_` or `-`; `${NAME}` is a shell's
/// and not ours, and other braces (JSON, `{}`) are text.
fn placeholders(text: &str) -> impl Iterator<Item = (usize, usize, &str)> + '_ {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(offset) = text[at..].find('{') {
            let start = at + offset;
            at = start + 1;
            if start > 0 && bytes[start - 1] == b'$' {
                continue;
            }
            let rest = &text[start + 1..];
            let len = rest.find('}')?;
            let name = &rest[..len];
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if valid {
                at = start + len + 2;
                return Some((start, at, name));
            }
        }
        None
    })
}

/// Checks that every placeholder in `arg` is known. An argument that is
/// not UTF-8 holds none.
pub fn check(arg: &OsStr) -> Result<(), UnknownPlaceholder> {
    let Some(text) = arg.to_str() else {
        return Ok(());
    };
    match placeholders(text).find(|(_, _, name)| !PLACEHOLDERS.contains(name)) {
        Some((_, _, name)) => Err(UnknownPlaceholder {
            name: name.to_owned(),
            arg: text.chars().take(200).collect(),
        }),
        None => Ok(()),
    }
}

/// `arg` with its placeholders filled in (unknown ones, which [`check`]
/// refuses, are left as they are). An argument that is not UTF-8 is
/// passed as it is.
///
/// ```
/// use std::ffi::OsStr;
/// use backstop_agent::template::{Names, substitute};
///
/// let names = Names { model: "gpt-5", provider: "openai", key: "openai/gpt-5" };
/// assert_eq!(substitute(OsStr::new("--model={model}"), &names), "--model=gpt-5");
/// assert_eq!(substitute(OsStr::new(r#"{"k": 1} ${HOME}"#), &names), r#"{"k": 1} ${HOME}"#);
/// ```
pub fn substitute(arg: &OsStr, names: &Names<'_>) -> OsString {
    let Some(text) = arg.to_str() else {
        return arg.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end, name) in placeholders(text) {
        let value = match name {
            "model" => names.model,
            "provider" => names.provider,
            "key" => names.key,
            _ => continue,
        };
        out.push_str(&text[copied..start]);
        out.push_str(value);
        copied = end;
    }
    out.push_str(&text[copied..]);
    out.into()
}

/// A command of the `[run]` tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCommand {
    /// The program and its arguments, placeholders checked.
    pub argv: Vec<OsString>,
    /// How to read its output, when the file says.
    pub agent: Option<Agent>,
}

/// The `[run]` tables of a `backstop.toml`: a command per provider and per
/// model. Other tables of the file (the fan-out's `[[node]]`s) are left to
/// their readers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    providers: BTreeMap<String, ModelCommand>,
    models: BTreeMap<String, ModelCommand>,
}

/// A models file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CommandsError {
    /// It could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid.
    #[error("{} is not a valid models file: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct FileTables {
    #[serde(default)]
    run: RunTables,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunTables {
    #[serde(default)]
    providers: BTreeMap<String, CommandTable>,
    #[serde(default)]
    models: BTreeMap<String, CommandTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandTable {
    command: Vec<String>,
    agent: Option<String>,
}

impl Commands {
    /// Reads the `[run]` tables of `path`.
    pub fn load(path: &Path) -> Result<Commands, CommandsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CommandsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Commands::parse(&text).map_err(|message| CommandsError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and checks the text of a models file: every command a
    /// non-empty list of arguments with known placeholders, every agent
    /// known, provider names without `/` and model keys with one.
    pub fn parse(text: &str) -> Result<Commands, String> {
        let tables: FileTables =
            toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        let convert = |table: &str, name: &str, c: CommandTable| {
            let what = format!("[run.{table}.{name:?}]");
            if c.command.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(format!("{what} has an empty command"));
            }
            let argv: Vec<OsString> = c.command.into_iter().map(OsString::from).collect();
            for arg in &argv {
                check(arg).map_err(|e| format!("{what}: {e}"))?;
            }
            let agent = c
                .agent
                .map(|a| a.parse::<Agent>().map_err(|e| format!("{what}: {e}")))
                .transpose()?;
            Ok(ModelCommand { argv, agent })
        };
        let mut commands = Commands::default();
        for (name, c) in tables.run.providers {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "[run.providers.{name:?}]: a provider's name has no '/' (models go in [run.models])"
                ));
            }
            let command = convert("providers", &name, c)?;
            commands.providers.insert(name, command);
        }
        for (key, c) in tables.run.models {
            if !key.contains('/') {
                return Err(format!(
                    "[run.models.{key:?}]: a model is PROVIDER/MODEL (providers go in [run.providers])"
                ));
            }
            let command = convert("models", &key, c)?;
            commands.models.insert(key, command);
        }
        Ok(commands)
    }

    /// Whether the file gives no command at all.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.models.is_empty()
    }

    /// The command for the model `key` of `provider`: the model's own,
    /// else its provider's, else `None` (the command line's applies).
    pub fn get(&self, key: &str, provider: &str) -> Option<&ModelCommand> {
        self.models
            .get(key)
            .or_else(|| self.providers.get(provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_checked_and_filled() {
        let names = Names {
            model: "meta-llama/llama-3.1-70b",
            provider: "openrouter",
            key: "openrouter/meta-llama/llama-3.1-70b",
        };
        let got = |arg: &str| substitute(OsStr::new(arg), &names);
        assert_eq!(got("--model={model}"), "--model=meta-llama/llama-3.1-70b");
        assert_eq!(got("{provider}:{provider}"), "openrouter:openrouter");
        assert_eq!(got("-m {key}"), "-m openrouter/meta-llama/llama-3.1-70b");
        assert_eq!(got("plain"), "plain");
        assert_eq!(
            got(r#"{"a": {model}}"#),
            r#"{"a": meta-llama/llama-3.1-70b}"#
        );
        assert_eq!(got("${model} {}"), "${model} {}");
        for ok in [
            "{model}",
            "x{key}y",
            r#"{"json": true}"#,
            "${HOME}",
            "{}",
            "{",
            "}{",
        ] {
            assert_eq!(check(OsStr::new(ok)), Ok(()), "{ok}");
        }
        for (bad, name) in [
            ("{modle}", "modle"),
            ("--m={model}/{Model}", "Model"),
            ("{api_key}", "api_key"),
        ] {
            assert_eq!(
                check(OsStr::new(bad)),
                Err(UnknownPlaceholder {
                    name: name.to_owned(),
                    arg: bad.to_owned()
                })
            );
        }
        assert_eq!(
            check(OsStr::new("{modle}")).unwrap_err().to_string(),
            "unknown placeholder {modle} in \"{modle}\"; the known ones are {model}, {provider} and {key}"
        );
    }

    #[test]
    fn a_models_file_gives_each_provider_or_model_its_command() {
        let text = r#"
            [[node]]
            name = "gpu-1"
            type = "gpu"
            handle = { install = "true" }

            [run.providers.anthropic]
            command = ["claude", "-p", "--model", "{model}"]

            [run.providers.openai]
            command = ["codex", "exec", "--model", "{model}", "-"]

            [run.models."openai/gpt-5-codex"]
            command = ["my-codex", "{key}"]
            agent = "codex"
        "#;
        let c = Commands::parse(text).unwrap();
        let argv = |k: &str, p: &str| c.get(k, p).map(|m| m.argv.clone());
        assert_eq!(
            argv("anthropic/claude-sonnet-4-5", "anthropic").unwrap()[0],
            "claude"
        );
        assert_eq!(argv("openai/gpt-5", "openai").unwrap()[0], "codex");
        let own = c.get("openai/gpt-5-codex", "openai").unwrap();
        assert_eq!(
            (own.argv[0].as_os_str(), own.agent),
            (OsStr::new("my-codex"), Some(Agent::Codex))
        );
        assert_eq!(c.get("google/gemini-2.5-pro", "google"), None);
        assert!(
            Commands::parse("[[node]]\nname = \"a\"")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_bad_models_file_is_refused_with_what_is_wrong() {
        let cases = [
            (
                "[run.providers.openai]\ncommand = []",
                "has an empty command",
            ),
            (
                "[run.providers.openai]\ncommand = [\"codex\", \"{modle}\"]",
                "unknown placeholder {modle}",
            ),
            (
                "[run.providers.openai]\ncommand = \"codex exec\"",
                "invalid type",
            ),
            (
                "[run.providers.openai]\ncommand = [\"codex\"]\nagent = \"gpt\"",
                "not an agent",
            ),
            (
                "[run.providers.\"openai/gpt-5\"]\ncommand = [\"codex\"]",
                "a provider's name has no '/'",
            ),
            (
                "[run.models.openai]\ncommand = [\"codex\"]",
                "a model is PROVIDER/MODEL",
            ),
            (
                "[run.provider.openai]\ncommand = [\"codex\"]",
                "unknown field `provider`",
            ),
        ];
        for (text, want) in cases {
            let err = Commands::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
