//! The command line: what each command and flag means.

use std::path::PathBuf;
use std::time::Duration;

use backstop_ledger::{Key, Reason};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps AI-infrastructure work going through rate limits, flaky networks
/// and dying nodes.
#[derive(Debug, Parser)]
#[command(name = "backstop", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success; 1 permanent failure; 2 usage error; \
75 temporary failure, try later (rate limited, or transient failures exhausted); 130 interrupted."
)]
pub struct Cli {
    /// More detail on stderr (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Where the cooldown ledger lives: a SQLite file, or a postgres:// URL
    /// shared by many machines [default: $XDG_STATE_HOME/backstop/backstop.db]
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_STATE",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub state: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET a URL with retries: body to stdout, or to FILE written atomically.
    Get(GetArgs),
    /// Download many files at once: each retried on its own, resumed by
    /// Range (also after Ctrl-C), renamed into place once size and sha256
    /// match.
    Pull(PullArgs),
    /// Query the Hugging Face Hub (honours HF_ENDPOINT and HF_TOKEN).
    Hub {
        #[command(subcommand)]
        command: HubCommand,
    },
    /// Print the first available model: neither it nor its provider is
    /// cooling down. Exit 75 when none is, saying which frees up first.
    Pick(PickArgs),
    /// Inspect and change the cooldown ledger.
    Cooldown {
        #[command(subcommand)]
        command: CooldownCommand,
    },
    /// Watch the retry engine get a request through a rate limit, an
    /// overload and a cut connection, against a flaky server it starts on
    /// this machine. Needs no network.
    Demo,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The http or https URL.
    pub url: String,
    /// Write the body to FILE (replaced only once the whole body is in)
    /// instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Add a request header; repeatable. Credentials are never printed.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    #[command(flatten)]
    pub retry: RetryArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
backstop pull https://example.com/model.gguf --sha256 9f86d08...\n  \
backstop pull 'hf://Qwen/Qwen3-8B-GGUF/*Q4_K_M*' --dir models\n  \
backstop pull hf://datasets/org/data@v1.0 --jobs 8 --streams 4\n\n\
Ctrl-C keeps partial files (NAME.part); the same command resumes them.\n\
Exit codes: 0 every file in place; 75 every failure temporary, try later; 1 otherwise; 130 interrupted.")]
pub struct PullArgs {
    /// http(s) URLs, and hf://[datasets/]ORG/REPO[@REVISION][/PATTERN]
    /// (PATTERN as huggingface_hub's allow_patterns: *.gguf, onnx/).
    #[arg(value_name = "SOURCE", required = true, value_parser = parse_source)]
    pub sources: Vec<backstop_transfer::Source>,
    /// Where the files go; folders of the repository are kept.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Files downloaded at once.
    #[arg(short, long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Range streams for one large file (at least 32 MiB each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub streams: u16,
    /// The sha256 a URL's file must have; repeat for several URLs, in
    /// order. hf:// files are checked against the Hub's own.
    #[arg(long = "sha256", value_name = "HEX", value_parser = parse_sha256)]
    pub sha256s: Vec<backstop_transfer::Sha256>,
    /// Add a request header to URL sources; repeatable. Credentials are
    /// never printed.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Cut and retry a transfer that moves less than SIZE in DURATION;
    /// 0 turns it off [default: 1MiB/2m].
    #[arg(long, value_name = "SIZE/DURATION", value_parser = parse_min_progress)]
    pub min_progress: Option<MinProgressArg>,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `--min-progress`: a window, or none.
#[derive(Clone, Copy, Debug)]
pub struct MinProgressArg(pub Option<backstop_transfer::MinProgress>);

/// A source of `backstop pull`.
pub fn parse_source(value: &str) -> Result<backstop_transfer::Source, String> {
    value
        .parse()
        .map_err(|e: backstop_transfer::Error| e.to_string())
}

/// A sha256 digest.
pub fn parse_sha256(value: &str) -> Result<backstop_transfer::Sha256, String> {
    value
        .parse()
        .map_err(|e: backstop_transfer::BadDigest| e.to_string())
}

/// "1MiB/2m", "500KB/30s", or "0".
pub fn parse_min_progress(value: &str) -> Result<MinProgressArg, String> {
    let value = value.trim();
    if matches!(value, "0" | "off" | "none") {
        return Ok(MinProgressArg(None));
    }
    let (size, window) = value
        .split_once('/')
        .ok_or_else(|| format!("{value:?} is not SIZE/DURATION (example: 1MiB/2m)"))?;
    let bytes = parse_size(size)?;
    let window = parse_positive_duration(window)?;
    Ok(MinProgressArg(Some(backstop_transfer::MinProgress {
        bytes,
        window,
    })))
}

/// "1048576", "512KiB", "1MiB", "10MB", "2GiB".
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{value:?} is not a size (examples: 512KiB, 1MiB, 10MB)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{value:?} is not a size (examples: 512KiB, 1MiB, 10MB)"))
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// List models (GET /api/models).
    Search(SearchArgs),
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Free-text search over model ids.
    #[arg(long, value_name = "Q")]
    pub search: Option<String>,
    /// Only this user's or organisation's models.
    #[arg(long, value_name = "A")]
    pub author: Option<String>,
    /// Order, most first.
    #[arg(long, value_enum)]
    pub sort: Option<SortArg>,
    /// How many models at most.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// One JSON object per line, as the Hub sent it.
    #[arg(long)]
    pub json: bool,
    /// When the Hub keeps rate limiting, print a one-line notice and exit 0
    /// with no results (for scheduled jobs). Other errors still fail.
    #[arg(long)]
    pub skip_on_rate_limit: bool,
    #[command(flatten)]
    pub retry: RetryArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortArg {
    Trending,
    Downloads,
    Likes,
    Created,
}

#[derive(Debug, Args)]
pub struct PickArgs {
    /// Models in order of preference, PROVIDER/MODEL.
    #[arg(value_name = "MODEL", env = "BACKSTOP_MODELS", value_delimiter = ',', required = true, value_parser = parse_model)]
    pub models: Vec<Key>,
    /// Print {"available": MODEL|null, "earliest": {"model", "at"}|null}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CooldownCommand {
    /// List the keys cooling down.
    List {
        /// Also list entries that are over (kept to remember escalation).
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Cool a key down by hand.
    Set {
        /// PROVIDER or PROVIDER/MODEL.
        #[arg(value_parser = parse_key)]
        key: Key,
        /// Why.
        #[arg(long, value_enum)]
        reason: ReasonArg,
        /// For how long (10m, 1h30m).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_positive_duration, required_unless_present = "until", conflicts_with = "until")]
        duration: Option<Duration>,
        /// Until when, RFC 3339 (2026-11-22T18:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<std::time::SystemTime>,
        /// Replace a longer cooldown instead of keeping it.
        #[arg(long)]
        replace: bool,
    },
    /// End cooldowns.
    Clear {
        /// The key to clear.
        #[arg(value_parser = parse_key, required_unless_present = "all", conflicts_with = "all")]
        key: Option<Key>,
        /// Clear every key.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ReasonArg {
    RateLimit,
    Overloaded,
    Quota,
    Auth,
    Error,
}

impl From<ReasonArg> for Reason {
    fn from(r: ReasonArg) -> Reason {
        match r {
            ReasonArg::RateLimit => Reason::RateLimit,
            ReasonArg::Overloaded => Reason::Overloaded,
            ReasonArg::Quota => Reason::Quota,
            ReasonArg::Auth => Reason::Auth,
            ReasonArg::Error => Reason::Error,
        }
    }
}

/// A ledger key.
pub fn parse_key(value: &str) -> Result<Key, String> {
    value.parse::<Key>().map_err(|e| e.to_string())
}

/// A PROVIDER/MODEL key.
pub fn parse_model(value: &str) -> Result<Key, String> {
    Key::model_key(value.trim()).map_err(|e| e.to_string())
}

/// A duration longer than zero.
pub fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.is_zero() {
        return Err("the duration must be longer than zero".to_owned());
    }
    Ok(d)
}

/// An RFC 3339 instant.
pub fn parse_time(value: &str) -> Result<std::time::SystemTime, String> {
    backstop_core::time::parse_rfc3339(value)
        .ok_or_else(|| format!("{value:?} is not an RFC 3339 time (example: 2026-11-22T18:00:00Z)"))
}

/// How hard to retry. Durations: 500ms, 10s, 2m, 1h30m (a bare number is
/// seconds).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Retrying")]
pub struct RetryArgs {
    /// Attempts in all, the first included [default: 5; pull: 6, counted
    /// afresh whenever bytes flow].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub attempts: Option<u32>,
    /// Ceiling of the first wait; later ones double [default: 1s; pull: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub base_delay: Option<Duration>,
    /// No computed wait is longer [default: 30s; pull: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_delay: Option<Duration>,
    /// Longest server-requested wait (Retry-After...) to sit through; a
    /// longer request ends the command with exit 75 [default: 60s; pull:
    /// 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_wait: Option<Duration>,
    /// Longest one attempt may take; 0 for no limit [default: 30s; pull:
    /// from the size, 5 min to 8 h, a runaway guard].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub attempt_timeout: Option<Duration>,
    /// Longest the whole command may take, attempts and waits together.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// Time allowed to connect [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Longest silence from the server, waiting for headers or for the
    /// next bytes of a body [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
}

/// "10s", "1m30s", "250ms", or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if value.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(value)
        .map_err(|_| format!("{value:?} is not a duration (examples: 500ms, 10s, 2m, 1h30m)"))
}

/// "Name: value".
pub fn parse_header(value: &str) -> Result<(String, String), String> {
    let Some((name, v)) = value.split_once(':') else {
        return Err("a header is written \"Name: value\"".to_owned());
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok((name.to_owned(), v.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_and_windows() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        for bad in ["", "MiB", "1.5MiB", "-1", "1TiB", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        let w = parse_min_progress("1MiB/2m").unwrap().0.unwrap();
        assert_eq!((w.bytes, w.window), (1 << 20, Duration::from_secs(120)));
        assert!(parse_min_progress("0").unwrap().0.is_none());
        assert!(parse_min_progress("1MiB").is_err());
        assert!(parse_min_progress("1MiB/0s").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("Authorization: Bearer x:y"),
            Ok(("Authorization".into(), "Bearer x:y".into()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("bad name: v").is_err());
    }
}
