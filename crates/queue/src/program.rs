//! The program a handler command starts, checked before any delivery runs.
//!
//! A handler is a shell command (`sh -c COMMAND`); when its program does
//! not exist or cannot be executed, every delivery of its kind fails with
//! exit 127 or 126 long after start-up. [`check_handler`] finds the
//! program the way `sh` would — the first word of the command, on `PATH`
//! or as a path from the current directory — so that `serve` and `worker`
//! refuse such a handler at once, naming the node and the kind.
//!
//! Only what can be known without running the shell is checked: a command
//! that begins with a shell keyword or builtin (`if`, `test`, `echo`...),
//! or whose program word has an expansion (`$X`, `` `x` ``, `*`, `~`), is
//! left to `sh`. `exec PROGRAM` checks PROGRAM; leading `NAME=value`
//! assignments are skipped.
//!
//! ```
//! use backstop_queue::program::check_handler;
//!
//! assert!(check_handler("gpu-1", "install", "sh ./install.sh").is_ok());
//! let err = check_handler("gpu-1", "install", "./no-such-handler.sh").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "node gpu-1: the handler for kind \"install\" runs \"./no-such-handler.sh\", which does not exist"
//! );
//! ```

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// A handler whose program cannot be started.
#[derive(Debug, thiserror::Error)]
#[error("node {node}: the handler for kind {kind:?} runs {program:?}, which {problem}")]
pub struct Unrunnable {
    /// The node.
    pub node: String,
    /// The kind it handles.
    pub kind: String,
    /// The program, as the command names it.
    pub program: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a handler's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A bare name found in no directory of `PATH`.
    #[error("is not on PATH")]
    NotOnPath,
    /// A path to nothing.
    #[error("does not exist")]
    Missing,
    /// A path to a directory.
    #[error("is a directory")]
    Directory,
    /// A file with no execute permission.
    #[error("is not executable")]
    NotExecutable,
}

/// Checks that the handler `command` of `node` for `kind` starts a program
/// that exists and is executable (see the module's documentation for what
/// is left to the shell), resolving it on this process's `PATH` and from
/// its current directory, as the handler will be run.
pub fn check_handler(node: &str, kind: &str, command: &str) -> Result<(), Unrunnable> {
    let Some(program) = first_program(command) else {
        return Ok(());
    };
    locate(&program, std::env::var_os("PATH").as_deref())
        .map(drop)
        .map_err(|problem| Unrunnable {
            node: node.to_owned(),
            kind: kind.to_owned(),
            program,
            problem,
        })
}

/// Where `program` is: a path when it has a `/`, else the first
/// executable file of that name in `path`'s directories (an empty entry
/// being the current directory).
pub fn locate(program: &str, path: Option<&OsStr>) -> Result<PathBuf, Problem> {
    if program.contains('/') {
        let file = PathBuf::from(program);
        return executable(&file).map(|()| file);
    }
    let path = path.unwrap_or_default();
    std::env::split_paths(path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| executable(candidate).is_ok())
        .ok_or(Problem::NotOnPath)
}

fn executable(file: &Path) -> Result<(), Problem> {
    let meta = std::fs::metadata(file).map_err(|_| Problem::Missing)?;
    if meta.is_dir() {
        return Err(Problem::Directory);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(Problem::NotExecutable);
        }
    }
    Ok(())
}

/// Words `sh` runs itself, whose "program" is not a file.
const SHELL_WORDS: &[&str] = &[
    "!", "{", "}", "[[", "]]", "if", "then", "else", "elif", "fi", "case", "esac", "for", "while",
    "until", "do", "done", "in", "function", "select", "time", ".", ":", "[", "alias", "bg",
    "break", "cd", "command", "continue", "echo", "eval", "exit", "export", "false", "fg",
    "getopts", "hash", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return",
    "set", "shift", "source", "test", "times", "trap", "true", "type", "ulimit", "umask",
    "unalias", "unset", "wait",
];

/// The program the first simple command of `command` starts, when that
/// can be known without running the shell.
fn first_program(command: &str) -> Option<String> {
    let mut words = first_words(command).into_iter().peekable();
    // NAME=value assignments before the program.
    while words
        .peek()
        .is_some_and(|w| w.known && is_assignment(&w.text))
    {
        words.next();
    }
    let mut word = words.next()?;
    if word.known && word.text == "exec" {
        word = words.find(|w| !w.text.starts_with('-'))?;
    }
    (word.known && !word.text.is_empty() && !SHELL_WORDS.contains(&word.text.as_str()))
        .then_some(word.text)
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// One word of a command: its text with quotes removed, and whether that
/// text is what the shell will see (no expansion in it).
struct Word {
    text: String,
    known: bool,
}

/// The words of the first simple command: up to the first unquoted
/// operator (`;`, `&`, `|`, `(`, `)`, `<`, `>`, newline).
fn first_words(command: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut word: Option<Word> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        let current = word.get_or_insert_with(|| Word {
            text: String::new(),
            known: true,
        });
        match c {
            '\'' => {
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    current.text.push(q);
                }
            }
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '$' | '`' => current.known = false,
                        '\\' => {
                            if let Some(next) = chars.next() {
                                current.text.push(next);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    current.text.push(q);
                }
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    current.text.push(next);
                }
            }
            ';' | '&' | '|' | '(' | ')' | '<' | '>' | '\n' => {
                if current.text.is_empty() {
                    word = None;
                }
                break;
            }
            c if c.is_whitespace() => {
                if let Some(done) = word.take().filter(|w| !w.text.is_empty()) {
                    words.push(done);
                }
            }
            '$' | '`' | '*' | '?' | '[' => {
                current.known = false;
                current.text.push(c);
            }
            '~' if current.text.is_empty() => {
                current.known = false;
                current.text.push(c);
            }
            c => current.text.push(c),
        }
    }
    if let Some(last) = word.filter(|w| !w.text.is_empty() || !w.known) {
        words.push(last);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_the_first_word_sh_would_run() {
        let cases: &[(&str, Option<&str>)] = &[
            ("./handlers/install.sh", Some("./handlers/install.sh")),
            ("  python3 -m backstop_handler --x", Some("python3")),
            ("/opt/h/install --force", Some("/opt/h/install")),
            ("'./my handler.sh' arg", Some("./my handler.sh")),
            ("\"./my handler.sh\"", Some("./my handler.sh")),
            ("./a\\ b.sh", Some("./a b.sh")),
            ("RUST_LOG=debug MODE=x ./install.sh", Some("./install.sh")),
            ("exec ./install.sh", Some("./install.sh")),
            ("sleep 0.2; echo $BACKSTOP_OP >> log", Some("sleep")),
            ("./install.sh|tee log", Some("./install.sh")),
            ("./install.sh>log", Some("./install.sh")),
            // Left to sh: builtins, keywords, expansions, subshells.
            ("true", None),
            ("echo $BACKSTOP_KIND >> log", None),
            ("test -f x || { echo no >&2; exit 2; }", None),
            ("if [ -f x ]; then exit 0; fi", None),
            ("n=$(cat c 2>/dev/null || echo 0); n=$((n+1))", None),
            ("$HOME/bin/install", None),
            ("\"$DIR/install\"", None),
            ("~/bin/install", None),
            ("./install-*.sh", None),
            ("(cd /x && ./install.sh)", None),
            ("`which install`", None),
            ("X=1", None),
            ("", None),
        ];
        for (command, want) in cases {
            assert_eq!(first_program(command).as_deref(), *want, "{command:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_program_must_exist_and_be_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let script = dir.path().join("install.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        let mode = |m| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(m));
        mode(0o644).unwrap_or_else(|e| panic!("{e}"));
        let path = Some(dir.path().as_os_str());
        let named = script.display().to_string();
        assert_eq!(locate(&named, path), Err(Problem::NotExecutable));
        assert_eq!(
            locate("install.sh", path),
            Err(Problem::NotOnPath),
            "not executable"
        );
        mode(0o755).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(locate(&named, path), Ok(script.clone()));
        assert_eq!(locate("install.sh", path), Ok(script.clone()));
        assert_eq!(locate("install.sh", None), Err(Problem::NotOnPath));
        let missing = dir.path().join("nope.sh").display().to_string();
        assert_eq!(locate(&missing, path), Err(Problem::Missing));
        let here = dir.path().display().to_string();
        assert_eq!(locate(&here, path), Err(Problem::Directory));
    }
}
