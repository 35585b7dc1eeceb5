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
    /// Where backstop keeps its state (the cooldown ledger, the fan-out
    /// queue): a SQLite file (PATH, sqlite:PATH, file:PATH), or a
    /// postgres:// or postgresql:// URL shared by many machines and
    /// coordinators; any other scheme:// is refused [default:
    /// $XDG_STATE_HOME/backstop/backstop.db]
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_STATE",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub state: Option<String>,
    /// Keep hosts' cooldowns to this process: a 429 or 503 it gets is not
    /// recorded in the state for other processes, and what they recorded
    /// is not read (`get`, `pull`, `push`, `login`, `hub`).
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_NO_SHARED_COOLDOWN",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub no_shared_cooldown: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET a URL with retries, a cut body resumed by Range: to stdout once
    /// whole, or to FILE (replaced atomically; a device or FIFO written
    /// through). The shorthand of `request` without a method or a body.
    Get(GetArgs),
    /// Send a request with any method and a body, as curl does (-X, -d,
    /// --data-binary, --json, -H), with retries: a POST or a PATCH only
    /// when the server cannot have acted on it, unless it carries an
    /// idempotency key (--idempotency-key auto) or --retry-unsafe.
    Request(Box<RequestArgs>),
    /// Download many files at once: each retried on its own, resumed by
    /// Range (also after Ctrl-C), renamed into place once size and sha256
    /// match.
    Pull(PullArgs),
    /// Push model files to an OCI registry as a ModelPack artifact: each
    /// blob skipped when the registry has it, else uploaded in chunks
    /// continued from the registry's offset (also after Ctrl-C), then the
    /// manifest.
    Push(Box<PushArgs>),
    /// Check credentials against an OCI registry and store them where
    /// docker and oras look.
    Login(LoginArgs),
    /// Remove an OCI registry's stored credentials.
    Logout(LogoutArgs),
    /// Query the Hugging Face Hub (honours HF_ENDPOINT and HF_TOKEN).
    Hub {
        #[command(subcommand)]
        command: HubCommand,
    },
    /// Print the first available model: neither it nor its provider is
    /// cooling down. Exit 75 when none is, saying which frees up first.
    Pick(PickArgs),
    /// Run a command (an AI coding agent, or anything else) with the first
    /// available model, falling back to the next on a rate limit, an
    /// overload, a quota or an auth failure.
    Run(RunArgs),
    /// Inspect and change the cooldown ledger.
    Cooldown {
        #[command(subcommand)]
        command: CooldownCommand,
    },
    /// Run the fan-out coordinator: the queue, the dispatcher, the health
    /// monitor and the operators' API; local nodes from backstop.toml, and
    /// remote workers with --nats.
    Serve(ServeArgs),
    /// Run a remote node: register over NATS, send heartbeats, run a
    /// handler per delivery.
    Worker(WorkerArgs),
    /// Submit, list, show, watch, cancel and requeue fan-out operations.
    Ops {
        #[command(subcommand)]
        command: OpsCommand,
    },
    /// List fan-out nodes, drain, undrain and remove them.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
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
#[command(mut_arg("attempt_timeout", |a| a.help("Longest one attempt may take, a runaway guard; a cut attempt resumes by Range; 0 for no limit [default: from the size, 5 min to 8 h]")))]
pub struct GetArgs {
    /// The http or https URL.
    pub url: String,
    /// Write the body to FILE instead of stdout: a regular file (or a
    /// symlink's target) is replaced only once the whole body is in; a
    /// device or a FIFO is written through.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Add a request header; repeatable. Credentials are never printed.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Cut and resume a body that moves less than SIZE in DURATION; 0
    /// turns it off [default: 1MiB/2m].
    #[arg(long, value_name = "SIZE/DURATION", value_parser = parse_min_progress)]
    pub min_progress: Option<MinProgressArg>,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `backstop request`: `get`'s arguments, and a method and a body.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
backstop request -X POST https://api.example.com/v1/jobs --json '{\"model\":\"qwen3\"}' --idempotency-key auto\n  \
backstop request https://api.example.com/v1/upload --data-binary @weights.bin -H 'Content-Type: application/octet-stream'\n  \
backstop request -X DELETE https://api.example.com/v1/jobs/42\n\n\
A GET without a body is `backstop get`: its body resumed by Range. Any other request's \
answer is fetched whole again when cut, and written only once complete.\n\
Retries: GET, HEAD, PUT, DELETE, OPTIONS as the flags say; POST and PATCH only when the \
server cannot have acted (no connection made; 408, 425, 429, 529, or 503 with Retry-After), \
unless they carry an Idempotency-Key or --retry-unsafe is given. A POST not retried for \
that reason exits 1: it may have been acted on.")]
pub struct RequestArgs {
    #[command(flatten)]
    pub send: SendArgs,
    #[command(flatten)]
    pub get: GetArgs,
}

/// What a request sends besides a GET's URL and headers.
#[derive(Debug, Default, Args)]
pub struct SendArgs {
    /// The method (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, or
    /// another) [default: POST with a body, else GET].
    #[arg(short = 'X', long = "request", value_name = "METHOD", value_parser = parse_method)]
    pub method: Option<backstop_http::Method>,
    /// Send DATA as a form would: @FILE reads a file and @- standard
    /// input, carriage returns and newlines dropped; repeated, joined
    /// with &. Content-Type application/x-www-form-urlencoded unless -H
    /// gives one.
    #[arg(short = 'd', long = "data", value_name = "DATA", conflicts_with_all = ["data_binary", "json"])]
    pub data: Vec<String>,
    /// Send DATA as it is: @FILE is read from the file again for every
    /// attempt, never held in memory whole; @- reads standard input (up to
    /// 64 MiB, kept to send again); repeated, joined with &.
    #[arg(long = "data-binary", value_name = "DATA", conflicts_with = "json")]
    pub data_binary: Vec<String>,
    /// Send JSON, with Content-Type and Accept application/json (as curl
    /// 7.82+ does); @FILE, @- as --data-binary; repeated, the pieces are
    /// joined as they are. The whole body must be valid JSON: it is
    /// checked before anything is sent.
    #[arg(long = "json", value_name = "JSON")]
    pub json: Vec<String>,
    /// Send the Idempotency-Key header, the same on every attempt, so that
    /// a POST or a PATCH is retried like a GET; `auto` makes a random key
    /// (a UUIDv4) for this run.
    #[arg(long, value_name = "KEY|auto")]
    pub idempotency_key: Option<String>,
    /// Retry a POST or a PATCH like a GET without an idempotency key: the
    /// server may then act on it more than once.
    #[arg(long)]
    pub retry_unsafe: bool,
}

impl SendArgs {
    /// Whether anything is sent besides a GET's URL and headers.
    pub fn is_plain_get(&self) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| *m == backstop_http::Method::GET)
            && self.data.is_empty()
            && self.data_binary.is_empty()
            && self.json.is_empty()
    }
}

/// An HTTP method: a token (RFC 9110), as given (methods are
/// case-sensitive; curl sends them as typed).
pub fn parse_method(value: &str) -> Result<backstop_http::Method, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the method is empty".to_owned());
    }
    backstop_http::Method::from_bytes(value.as_bytes())
        .map_err(|_| format!("{value:?} is not an HTTP method"))
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
backstop pull 'hf://Qwen/Qwen3-8B-GGUF/*Q4_K_M*'        (into the Hugging Face cache)\n  \
backstop pull hf://datasets/org/data@v1.0 --jobs 8 --streams 4\n  \
backstop pull 'hf://Qwen/Qwen3-8B-GGUF/*Q4_K_M*' --dir models\n  \
backstop pull https://example.com/model.gguf --sha256 9f86d08...\n\n\
hf:// sources go to the Hugging Face cache (HF_HUB_CACHE, else $HF_HOME/hub, else \
~/.cache/huggingface/hub) unless --dir is given, where transformers, vLLM and \
huggingface_hub find them; other sources go to --dir (default: the current folder).\n\
Ctrl-C keeps partial files (NAME.part, or blobs/<etag>.incomplete in the cache); \
the same command resumes them.\n\
Exit codes: 0 every file in place; 75 every failure temporary, try later; 1 otherwise; 130 interrupted.")]
#[command(
    mut_arg("attempts", |a| a.help("Attempts per file in all, the first included; counted afresh whenever bytes flow [default: 6]")),
    mut_arg("base_delay", |a| a.help("Ceiling of the first wait; later ones double [default: 5s]")),
    mut_arg("max_delay", |a| a.help("No computed wait is longer [default: 2m]")),
    mut_arg("max_wait", |a| a.help("Longest server-requested wait (Retry-After...) to sit through; a longer request fails the file as temporary [default: 2m]")),
    mut_arg("attempt_timeout", |a| a.help("Longest one attempt may take, a runaway guard; 0 for no limit [default: from the size, 5 min to 8 h]")),
)]
pub struct PullArgs {
    /// http(s) URLs, hf://[datasets/]ORG/REPO[@REVISION][/PATTERN]
    /// (PATTERN as huggingface_hub's allow_patterns: *.gguf, onnx/), and
    /// oci://REGISTRY/REPOSITORY(:TAG|@sha256:DIGEST)[/PATTERN].
    #[arg(value_name = "SOURCE", required_unless_present = "input_file", value_parser = parse_source)]
    pub sources: Vec<PullSource>,
    /// Read more sources from FILE (- for standard input), one a line:
    /// SOURCE [sha256=HEX] [out=PATH], PATH under --dir; # starts a
    /// comment.
    #[arg(short = 'i', long = "input-file", value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Check each file against this sha256sum list (HEX  NAME, HEX
    /// *NAME), NAME being its path under --dir; every URL's file must be
    /// listed.
    #[arg(long, value_name = "FILE")]
    pub sha256sums: Option<PathBuf>,
    /// Print each file's result as it ends, then a total, as JSON Lines
    /// on stdout.
    #[arg(long)]
    pub json: bool,
    /// Bytes per second for the whole run, every file and stream
    /// together: 500K, 10M, 1G (K = 1024, as curl), or a plain number.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<std::num::NonZeroU64>,
    /// Where the files go, folders of the repository kept [default: the
    /// Hugging Face cache for hf:// sources, else the current folder].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Put hf:// sources in the Hugging Face cache, laid out as
    /// huggingface_hub lays it out (the default without --dir).
    #[arg(long, conflicts_with = "dir")]
    pub cache: bool,
    /// Files downloaded at once.
    #[arg(short, long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Range streams for one large file (at least 32 MiB each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub streams: u16,
    /// Connections open to one server at once, over every file and
    /// stream: --jobs times --streams beyond it wait their turn (the
    /// default is aria2c's ceiling, what throttling CDNs tolerate).
    #[arg(long, value_name = "N", default_value_t = backstop_transfer::DEFAULT_CONNECTIONS_PER_HOST, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_connections_per_host: u16,
    /// The sha256 a URL's file must have; repeat for several URLs, in
    /// order. hf:// files are checked against the Hub's own.
    #[arg(long = "sha256", value_name = "HEX", value_parser = parse_sha256)]
    pub sha256s: Vec<backstop_transfer::Sha256>,
    /// Add a request header to URL sources; repeatable. Credentials are
    /// never printed.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Cut and retry a transfer that moves less than SIZE in DURATION,
    /// over however many connections; the attempt count starts again only
    /// after SIZE has moved. 0 turns it off [default: 1MiB/2m].
    #[arg(long, value_name = "SIZE/DURATION", value_parser = parse_min_progress)]
    pub min_progress: Option<MinProgressArg>,
    /// Keep a file already in place whose size is right without asking
    /// the server whether it is current (a file with a sha256 to check is
    /// still checked by it).
    #[arg(long)]
    pub skip_existing: bool,
    /// Speak plain HTTP to the registries of oci:// sources (local ones).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust the certificate authorities of this PEM file too (a private
    /// registry's or server's), for every source of the pull.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// A source of `backstop pull`: a URL or a Hub repository, or a model
/// artifact in an OCI registry.
#[derive(Clone, Debug)]
pub enum PullSource {
    /// http(s) or hf://.
    Transfer(backstop_transfer::Source),
    /// oci://.
    Oci(backstop_oci::OciSource),
}

/// `--min-progress`: a window, or none.
#[derive(Clone, Copy, Debug)]
pub struct MinProgressArg(pub Option<backstop_transfer::MinProgress>);

impl MinProgressArg {
    /// The window of `--min-progress` as given, else the default (1 MiB
    /// in 2 minutes): the same guard for `get`, `pull` and `push`.
    pub fn window(arg: Option<MinProgressArg>) -> Option<backstop_transfer::MinProgress> {
        arg.map_or(Some(backstop_transfer::MinProgress::default()), |m| m.0)
    }
}

/// A source of `backstop pull`.
pub fn parse_source(value: &str) -> Result<PullSource, String> {
    if value.trim().starts_with("oci://") {
        return value
            .parse()
            .map(PullSource::Oci)
            .map_err(|e: backstop_oci::ReferenceError| e.to_string());
    }
    value
        .parse()
        .map(PullSource::Transfer)
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

/// A rate in bytes per second, as curl's `--limit-rate` takes it: a
/// number, with K, M, G or T for powers of 1024 ("500K", "10M"), or a
/// unit of [`parse_size`] ("1MiB", "10MB"); "/s" may follow.
pub fn parse_rate(value: &str) -> Result<std::num::NonZeroU64, String> {
    let text = value.trim();
    let text = text.strip_suffix("/s").unwrap_or(text);
    let curl = text
        .strip_suffix(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T'])
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| {
            let power = match text.as_bytes()[text.len() - 1].to_ascii_lowercase() {
                b'k' => 1,
                b'm' => 2,
                b'g' => 3,
                _ => 4,
            };
            n.checked_mul(1u64 << (10 * power))
        });
    let bytes = match curl {
        Some(bytes) => bytes,
        None => parse_size(text).ok(),
    };
    match bytes {
        Some(0) => Err("the rate must be more than 0".to_owned()),
        Some(n) => Ok(std::num::NonZeroU64::new(n).unwrap_or(std::num::NonZeroU64::MIN)),
        None => Err(format!(
            "{value:?} is not a rate in bytes per second (examples: 500K, 10M, 1G)"
        )),
    }
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
    /// List models, or datasets (GET /api/models, /api/datasets).
    Search(SearchArgs),
    /// Describe a repository at a revision: its commit, when it was made,
    /// whether it is private or gated, downloads, likes, files and size.
    Info(RepoArgs),
    /// List a repository's files at a revision: path, size, and the
    /// sha256 of LFS files.
    Files(RepoArgs),
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// List datasets instead of models.
    #[arg(long)]
    pub datasets: bool,
    /// Free-text search over repository ids.
    #[arg(long, value_name = "Q")]
    pub search: Option<String>,
    /// Only this user's or organisation's repositories.
    #[arg(long, value_name = "A")]
    pub author: Option<String>,
    /// Order, most first.
    #[arg(long, value_enum)]
    pub sort: Option<SortArg>,
    /// How many at most (1 to 100000).
    #[arg(long, default_value_t = 20, value_parser = parse_limit)]
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

/// `hub info` and `hub files`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
backstop hub info Qwen/Qwen3-8B-GGUF\n  \
backstop hub files datasets/HuggingFaceFW/fineweb@v1.2.0 --json\n  \
backstop hub info spaces/org/demo")]
pub struct RepoArgs {
    /// [datasets/|spaces/]ORG/NAME[@REVISION]: a model unless prefixed;
    /// the default branch unless a branch, tag or commit is given.
    #[arg(value_name = "REPO[@REV]", value_parser = parse_repo)]
    pub repo: backstop_hub::RepoRef,
    /// JSON on stdout: for info the Hub's record, for files one object per
    /// line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// A repository, as `hub info` and `hub files` take it.
pub fn parse_repo(value: &str) -> Result<backstop_hub::RepoRef, String> {
    value
        .parse()
        .map_err(|e: backstop_hub::Error| e.to_string())
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

/// `backstop run`.
#[derive(Debug, Args)]
#[command(after_help = "\
Falls back to the next available model on a rate limit, an overload, a quota or an auth \
failure, recording a cooldown for the model (or its provider, for quota and auth) in the \
ledger. Transient failures (a provider error, a stall) are retried on the same model \
(--attempts, --base-delay, --max-delay), then cool it and fall back. When every model is \
cooling, waits up to --max-wait (default 60s) for the first to free up, else exits 75. \
A permanent failure exits with the command's own exit code.

Example: backstop run --models anthropic/claude-sonnet-4-5,anthropic/claude-opus-4-1 -- \
claude -p --model {model} 'fix the failing test'

Across providers, give each its command in backstop.toml (or --models-file):
  [run.providers.anthropic]
  command = [\"claude\", \"-p\", \"--model\", \"{model}\"]
  [run.providers.openai]
  command = [\"codex\", \"exec\", \"--model\", \"{model}\", \"-\"]
then: echo 'fix the failing test' | backstop run --models anthropic/claude-sonnet-4-5,openai/gpt-5")]
pub struct RunArgs {
    /// Models to use, in order of preference: PROVIDER/MODEL,...
    #[arg(long, value_name = "MODELS", env = "BACKSTOP_MODELS", value_delimiter = ',', required = true, value_parser = parse_model)]
    pub models: Vec<Key>,
    /// How to read the command's output [default: from the command's
    /// name, else generic: exit 0 success, 75 temporary, other failure].
    #[arg(long, value_enum)]
    pub agent: Option<AgentArg>,
    /// Stop the command (TERM, then KILL 10 s later) when it prints
    /// nothing for this long, and treat it as a stall; 0 turns the
    /// watchdog off.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10m")]
    pub idle_timeout: Duration,
    /// Retries of transient failures (a provider error, a stall) on one
    /// model; `--max-wait` is also how long to wait for a cooling model
    /// to free up when every model is cooling.
    #[command(flatten)]
    pub backoff: BackoffArgs,
    /// The `[run]` tables giving a provider or a model its own command
    /// [default: ./backstop.toml when it exists].
    #[arg(long, value_name = "FILE", env = "BACKSTOP_MODELS_FILE")]
    pub models_file: Option<PathBuf>,
    /// Where the command's standard output goes: `final` writes only the
    /// last attempt's (earlier ones are held back and summarised on
    /// stderr), `stream` writes every attempt's as it comes [default:
    /// stream on a terminal, else final]. Standard error always streams.
    #[arg(long, value_enum, value_name = "MODE")]
    pub output: Option<OutputArg>,
    /// The command and its arguments, after `--`, for every model the
    /// models file gives no command of its own. `{model}` is replaced by
    /// the model's name, `{provider}` by its provider, `{key}` by
    /// PROVIDER/MODEL; any other `{name}` is refused.
    #[arg(value_name = "COMMAND", last = true, num_args = 1..)]
    pub command: Vec<std::ffi::OsString>,
}

/// Where `run` sends the command's standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    /// Only the final attempt's.
    Final,
    /// Every attempt's, as it comes.
    Stream,
}

/// The agents `run` can read.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AgentArg {
    Claude,
    Codex,
    Opencode,
    Aider,
    Generic,
}

impl From<AgentArg> for backstop_agent::Agent {
    fn from(a: AgentArg) -> Self {
        use backstop_agent::Agent;
        match a {
            AgentArg::Claude => Agent::Claude,
            AgentArg::Codex => Agent::Codex,
            AgentArg::Opencode => Agent::Opencode,
            AgentArg::Aider => Agent::Aider,
            AgentArg::Generic => Agent::Generic,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CooldownCommand {
    /// List the keys cooling down: models, providers, and hosts
    /// (host:NAME[:PORT]) that answered a 429 or 503 with a wait.
    List {
        /// Also list entries that are over (kept to remember escalation).
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Cool a key down by hand: for the reason's default (escalating with
    /// the key's consecutive failures, as a recorded failure does), for
    /// --for, or until --until; at most 365 days.
    #[command(after_help = "\
Defaults when neither --for nor --until is given: rate_limit 1 min, overloaded 30 s, \
error 1 min, quota 1 h, auth 1 h, each doubling with consecutive failures up to 15 min, \
5 min, 10 min, 24 h, 24 h.")]
    Set {
        /// PROVIDER, PROVIDER/MODEL, or host:NAME[:PORT] (every backstop
        /// call to that host waits).
        #[arg(value_parser = parse_key)]
        key: Key,
        /// Why.
        #[arg(long, value_enum)]
        reason: ReasonArg,
        /// For how long (10m, 1h30m), at most 365 days [default: the
        /// reason's, escalated].
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_positive_duration, conflicts_with = "until")]
        duration: Option<Duration>,
        /// Until when, RFC 3339 (2026-11-22T18:00:00Z), at most 365 days
        /// from now.
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

/// The default address of the coordinator's API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the API listens, HOST:PORT (a name is resolved). Anything but
    /// loopback should be served over TLS (--tls-cert, --tls-key).
    #[arg(long, env = "BACKSTOP_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Serve the API over HTTPS with this certificate chain (PEM, the
    /// server's certificate first).
    #[arg(
        long,
        env = "BACKSTOP_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "BACKSTOP_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Also serve GET /metrics on ADDR (HOST:PORT), over plain HTTP and
    /// without the API token, for a Prometheus that is not given the token.
    /// Keep it on loopback or a private network.
    #[arg(long, env = "BACKSTOP_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The local nodes and their handlers [default: ./backstop.toml when it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also serve remote workers over the NATS server at URL.
    #[arg(
        long,
        env = "BACKSTOP_NATS",
        value_name = "URL",
        hide_env_values = true
    )]
    pub nats: Option<String>,
    #[command(flatten)]
    pub nats_auth: NatsArgs,
    /// Subject prefix on NATS (one per fleet sharing a server).
    #[arg(long, value_name = "PREFIX", default_value = "backstop")]
    pub subject_prefix: String,
    /// Ceiling of the first wait after a failed delivery; later ones double.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub base_delay: Duration,
    /// No wait between attempts of a delivery is longer.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_positive_duration)]
    pub max_delay: Duration,
    /// Handler failures after which a delivery is dead.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_failures: u32,
    /// How long a handler may run before it is stopped.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_positive_duration)]
    pub handler_timeout: Duration,
    /// A worker silent this long is unhealthy; its deliveries wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub stale_after: Duration,
    /// How long an attempt with no reply stays in flight past the handler
    /// timeout before it is offered again (not counted as a failure).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_positive_duration)]
    pub lease_grace: Duration,
    /// How long finished deliveries (done, superseded, cancelled) are kept
    /// before they are removed; keyless operations stop going to nodes
    /// that join later after this long too. Dead deliveries stay until
    /// requeued.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_positive_duration)]
    pub keep: Duration,
    /// How much of the end of each handler's stdout and stderr is kept
    /// with its attempt (redacted), shown by `ops show`; at most 256KiB,
    /// 0 keeps none.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_output_tail)]
    pub output_tail: u64,
}

/// `--output-tail`: a size up to what one NATS message carries with room
/// to spare ([`backstop_queue::handler::MAX_OUTPUT_TAIL`]).
pub fn parse_output_tail(value: &str) -> Result<u64, String> {
    let size = parse_size(value)?;
    let max = backstop_queue::handler::MAX_OUTPUT_TAIL;
    if size > max {
        return Err(format!("at most {}KiB is kept, not {value}", max >> 10));
    }
    Ok(size)
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The NATS server the coordinators listen on.
    #[arg(
        long,
        env = "BACKSTOP_NATS",
        value_name = "URL",
        hide_env_values = true
    )]
    pub nats: String,
    #[command(flatten)]
    pub nats_auth: NatsArgs,
    /// This node's name, unique in the fleet.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// This node's type: operations target every node of a type.
    #[arg(long = "type", value_name = "TYPE")]
    pub node_type: String,
    /// A kind of operation and the shell command that handles it; the
    /// payload arrives as JSON on stdin. Exit 0: done; 75: try later;
    /// anything else: failed, with the end of stderr as the error.
    #[arg(long = "handle", value_name = "KIND=COMMAND", required = true, value_parser = parse_handle)]
    pub handlers: Vec<(String, String)>,
    /// Handlers run at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// How often to send a heartbeat.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    pub heartbeat: Duration,
    /// On SIGTERM, how long running handlers may finish before they are
    /// stopped and their deliveries handed back.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Subject prefix on NATS (the coordinators' --subject-prefix).
    #[arg(long, value_name = "PREFIX", default_value = "backstop")]
    pub subject_prefix: String,
}

/// How `serve` and `worker` prove who they are to NATS, and its TLS.
/// Secrets come from files or the environment, never from the command
/// line, where `ps` shows them.
#[derive(Debug, Args)]
#[command(next_help_heading = "NATS credentials and TLS")]
pub struct NatsArgs {
    /// The NATS user; its password comes from --nats-password-file or
    /// BACKSTOP_NATS_PASSWORD.
    #[arg(long, env = "BACKSTOP_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// A file holding the NATS user's password.
    #[arg(
        long,
        env = "BACKSTOP_NATS_PASSWORD_FILE",
        value_name = "FILE",
        requires = "nats_user"
    )]
    pub nats_password_file: Option<PathBuf>,
    /// A file holding a NATS token (or BACKSTOP_NATS_TOKEN).
    #[arg(long, env = "BACKSTOP_NATS_TOKEN_FILE", value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// A file holding an NKey seed (SU...) the server knows the public key
    /// of.
    #[arg(long, env = "BACKSTOP_NATS_NKEY_FILE", value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// A .creds file (a user JWT and its NKey seed) for a server in
    /// operator mode.
    #[arg(long, env = "BACKSTOP_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// Trust the certificate authorities of this PEM file for NATS,
    /// instead of the system's; TLS is then required.
    #[arg(long, env = "BACKSTOP_NATS_CA_FILE", value_name = "FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM) to NATS; TLS is then required.
    #[arg(
        long,
        env = "BACKSTOP_NATS_CERT",
        value_name = "FILE",
        requires = "nats_key"
    )]
    pub nats_cert: Option<PathBuf>,
    /// The private key of --nats-cert (PEM).
    #[arg(
        long,
        env = "BACKSTOP_NATS_KEY",
        value_name = "FILE",
        requires = "nats_cert"
    )]
    pub nats_key: Option<PathBuf>,
}

/// How `ops` and `nodes` reach the coordinator. Each setting comes from
/// its flag, else its variable, else the client file
/// (`$XDG_CONFIG_HOME/backstop/client.toml`: `server`, `token_file`,
/// `ca_file`).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The coordinator's API [default: the client file's `server`, else
    /// http://127.0.0.1:7878].
    #[arg(long, env = "BACKSTOP_SERVER", value_name = "URL", global = true)]
    pub server: Option<String>,
    /// Read the API token from FILE (readable by you only). Without it:
    /// BACKSTOP_TOKEN, BACKSTOP_TOKEN_FILE, the client file's
    /// `token_file`, or the token `backstop serve` keeps beside the state.
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Trust the certificate authorities of this PEM file too, for an
    /// https:// server whose certificate the system does not trust
    /// [default: the client file's `ca_file`].
    #[arg(long, env = "BACKSTOP_CA_FILE", value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// How a deliveries' watch runs.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// How often to ask the coordinator.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,
}

/// Who asks for a change that every operator sees (a cancellation, a
/// removal).
#[derive(Debug, Args)]
pub struct ByArgs {
    /// Your name, kept and shown with the change (never a secret)
    /// [default: $USER, else the fingerprint of the API token].
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

impl ByArgs {
    /// `--by`, else `$USER` (or `$LOGNAME`).
    pub fn name(&self) -> Option<String> {
        self.by.clone().or_else(|| {
            ["USER", "LOGNAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        })
    }
}

/// How an operation's deliveries run, where it differs from the
/// coordinator's defaults (and its `[kinds]`).
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// How long a handler may run before it is stopped (1s to 30d).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,
    /// Handler failures after which a delivery is dead.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_failures: Option<u32>,
    /// Ceiling of the first wait after a failed delivery; later ones double.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub base_delay: Option<Duration>,
    /// No wait between attempts of a delivery is longer.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub max_delay: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Submit an operation to every node of a type (or to named nodes), or
    /// many from a file (--from).
    Submit {
        /// What to do: a kind the nodes declare (install, delete...).
        #[arg(required_unless_present = "from")]
        kind: Option<String>,
        /// Every node of this type, including nodes that join later.
        #[arg(
            long = "type",
            value_name = "TYPE",
            required_unless_present_any = ["nodes", "from"],
            conflicts_with = "nodes"
        )]
        node_type: Option<String>,
        /// Submit the operations of FILE ("-": stdin), one JSON object per
        /// line with the fields of the API's body (kind, type or nodes,
        /// key, payload, present_only, timeout, max_failures, base_delay,
        /// max_delay, idempotency_key); blank lines and lines starting
        /// with # are skipped. Sent in batches of 1000, each in one
        /// transaction; a line without an idempotency key gets
        /// --idempotency-key (or a random one) and its line number.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with_all = [
                "kind", "node_type", "nodes", "key", "payload", "present_only",
                "timeout", "max_failures", "base_delay", "max_delay"
            ]
        )]
        from: Option<PathBuf>,
        /// Only these nodes (repeatable).
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// Desired-state key: a newer operation with the same key replaces
        /// the older ones not yet delivered.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// The payload, JSON, handed to each handler on stdin [default: {}].
        #[arg(long, value_name = "JSON", value_parser = parse_json)]
        payload: Option<serde_json::Value>,
        /// Only the nodes of the type present now, not those that join later.
        #[arg(long, requires = "node_type")]
        present_only: bool,
        /// Makes the submission once however often it is sent: retries
        /// carry it, and the coordinator answers a repeat within 24 h with
        /// the operation the first made [default: a new random key per
        /// invocation]. Pass one to rerun a submission that exited 75.
        /// With --from, each line without its own key gets KEY-LINE.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List operations, newest first, with their deliveries by state; with
    /// --dead, the dead deliveries and their last errors.
    List {
        /// Only operations with a delivery in this state (pending,
        /// in_flight, done, dead, superseded, cancelled).
        #[arg(long, value_name = "STATE")]
        having: Option<String>,
        /// List dead deliveries instead of operations.
        #[arg(long, conflicts_with = "having")]
        dead: bool,
        /// Only dead deliveries to this node (with --dead).
        #[arg(long, value_name = "NAME", requires = "dead")]
        node: Option<String>,
        /// At most this many (1 to 100000).
        #[arg(long, default_value_t = 50, value_parser = parse_limit)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One operation, each of its deliveries, and the end of what the
    /// handler of each printed in its latest attempt.
    Show {
        /// The operation's id.
        id: i64,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        /// Of each handler's output, at most this many last lines per
        /// stream; 0 for all that is kept.
        #[arg(long, value_name = "N", default_value_t = 10)]
        lines: usize,
        /// Follow its deliveries until every one is finished, as `ops
        /// watch` does.
        #[arg(long, conflicts_with = "json")]
        follow: bool,
        #[command(flatten)]
        watch: WatchArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow an operation's deliveries, a line per change, until every
    /// one is finished; exit 0 when all are done, 1 when any ended
    /// otherwise (dead, cancelled, superseded).
    Watch {
        /// The operation's id.
        id: i64,
        /// One JSON object per change (the delivery as it is now).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        watch: WatchArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel an operation: its waiting and dead deliveries end cancelled,
    /// those running finish (done if they succeed, else cancelled), and
    /// nodes that join later do not get it.
    Cancel {
        /// The operation's id.
        id: i64,
        /// Also stop the handlers of its running deliveries (they end
        /// cancelled).
        #[arg(long)]
        stop_running: bool,
        #[command(flatten)]
        by: ByArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Requeue dead deliveries with their attempts reset: of an operation,
    /// one delivery, a node's, or all.
    Requeue {
        /// Every dead delivery of this operation.
        #[arg(value_name = "OP", required_unless_present_any = ["delivery", "node", "all"], conflicts_with_all = ["delivery", "node", "all"])]
        op: Option<i64>,
        /// This dead delivery.
        #[arg(long, value_name = "ID", conflicts_with_all = ["node", "all"])]
        delivery: Option<i64>,
        /// Every dead delivery to this node.
        #[arg(long, value_name = "NAME", conflicts_with = "all")]
        node: Option<String>,
        /// Every dead delivery.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes: health, drained, deliveries in flight, waiting and dead.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop new deliveries to a node (its running ones finish); --undo
    /// resumes them.
    Drain {
        /// The node.
        name: String,
        /// Undrain it.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove (decommission) a node: a worker that is down, or any node
    /// while drained with nothing running. What waits for it is
    /// cancelled, its history stays, and a worker of that name started
    /// later is a new node. A node of backstop.toml stays removed while
    /// its entry there is unchanged.
    Remove {
        /// The node.
        name: String,
        #[command(flatten)]
        by: ByArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// "KIND=COMMAND".
pub fn parse_handle(value: &str) -> Result<(String, String), String> {
    let Some((kind, command)) = value.split_once('=') else {
        return Err("a handler is written KIND=COMMAND".to_owned());
    };
    let (kind, command) = (kind.trim(), command.trim());
    backstop_queue::model::check_name("kind", kind).map_err(|e| e.to_string())?;
    if command.is_empty() {
        return Err(format!("the command for {kind} is empty"));
    }
    Ok((kind.to_owned(), command.to_owned()))
}

/// The most rows a `--limit` asks for.
pub const MAX_LIMIT: u32 = backstop_queue::store::MAX_LIMIT;

/// A listing's `--limit`: 1 to [`MAX_LIMIT`]. 0 is refused rather than
/// read as "no limit" or "the default", the same for every listing.
pub fn parse_limit(value: &str) -> Result<u32, String> {
    let n: u32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if n == 0 || n > MAX_LIMIT {
        return Err(format!("the limit is 1 to {MAX_LIMIT}, not {n}"));
    }
    Ok(n)
}

/// HOST:PORT to listen on: an address (`127.0.0.1:7878`, `[::1]:7878`) or
/// a name resolved now (`localhost:7878`), preferring its IPv4 address.
pub fn parse_listen(value: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    if value
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!(
            "{value:?} is not HOST:PORT (example: 127.0.0.1:7878)"
        ));
    }
    let addrs: Vec<std::net::SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {value:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{value:?} resolves to no address"))
}

/// A JSON document.
pub fn parse_json(value: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(value).map_err(|e| format!("not valid JSON: {e}"))
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
    #[command(flatten)]
    pub backoff: BackoffArgs,
    /// Longest one attempt may take; 0 for no limit [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub attempt_timeout: Option<Duration>,
    /// Time allowed to connect [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Longest silence from the server, waiting for headers or for the
    /// next bytes of a body [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
}

/// The engine's attempts and waits, shared by every command that retries.
#[derive(Debug, Default, Args)]
pub struct BackoffArgs {
    /// Attempts in all, the first included [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub attempts: Option<u32>,
    /// Ceiling of the first wait; later ones double [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub base_delay: Option<Duration>,
    /// No computed wait is longer [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_delay: Option<Duration>,
    /// Longest server-requested wait (Retry-After...) to sit through, at
    /// most a week; a longer request, however long, ends the command with
    /// exit 75 [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_wait: Option<Duration>,
    /// Longest the whole command may take, attempts and waits together.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deadline: Option<Duration>,
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

/// `backstop push`.
#[derive(Debug, Args)]
#[command(
    mut_arg("attempts", |a| a.help("Attempts per blob in all, the first included; counted afresh whenever the registry confirms new bytes [default: 6]")),
    mut_arg("base_delay", |a| a.help("Ceiling of the first wait; later ones double [default: 5s]")),
    mut_arg("max_delay", |a| a.help("No computed wait is longer [default: 2m]")),
    mut_arg("max_wait", |a| a.help("Longest registry-requested wait (Retry-After...) to sit through; a longer request fails the blob as temporary [default: 2m]")),
    mut_arg("attempt_timeout", |a| a.help("Longest one attempt at a blob may take, a runaway guard; 0 for no limit [default: from the size, 5 min to 8 h]")),
)]
pub struct PushArgs {
    /// Directories (all their files, recursively, with their relative
    /// paths; names starting with '.' skipped) or files.
    #[arg(value_name = "SOURCE", required = true)]
    pub sources: Vec<PathBuf>,
    /// Where to push: oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST).
    #[arg(value_name = "TARGET", value_parser = parse_reference)]
    pub target: backstop_oci::Reference,
    /// Speak plain HTTP to the registry (a local one).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust the certificate authorities of this PEM file (a private
    /// registry's).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Bytes per PATCH; a blob no larger goes in one PUT. Raised to the
    /// registry's OCI-Chunk-Min-Length; after a chunk is torn on the way,
    /// the next ones are smaller for a while.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u64,
    /// Fail and retry a blob's attempt when it moves less than SIZE in
    /// DURATION, over however many connections; the attempt count starts
    /// again only after the registry holds SIZE more. 0 turns it off
    /// [default: 1MiB/2m].
    #[arg(long, value_name = "SIZE/DURATION", value_parser = parse_min_progress)]
    pub min_progress: Option<MinProgressArg>,
    /// Blobs pushed at once.
    #[arg(short, long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Mount blobs the registry holds in this repository instead of
    /// uploading them.
    #[arg(long, value_name = "REPO")]
    pub mount_from: Option<String>,
    /// Give the files matching PATTERN the role ROLE (weight,
    /// weight.config, doc, code, dataset), before the built-in table;
    /// repeatable.
    #[arg(long = "role", value_name = "PATTERN=ROLE", value_parser = parse_role)]
    pub roles: Vec<backstop_oci::RoleRule>,
    /// The model's name (the config's descriptor.name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The model's family (descriptor.family: qwen3, llama3).
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,
    /// The model's architecture (config.architecture: transformer).
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,
    /// The weights' format (config.format: safetensors, gguf).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// The parameter count (config.paramSize: 8b).
    #[arg(long, value_name = "SIZE")]
    pub param_size: Option<String>,
    /// The precision (config.precision: bf16).
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// The quantization (config.quantization: q4_k_m).
    #[arg(long, value_name = "QUANT")]
    pub quantization: Option<String>,
    /// The creation time to record (RFC 3339); without it the same files
    /// always give the same manifest.
    #[arg(long, value_name = "TIME", value_parser = parse_created)]
    pub created: Option<String>,
    /// Print each blob's result as it ends, then a total with the pushed
    /// reference, as JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `backstop login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT].
    #[arg(value_name = "REGISTRY", value_parser = parse_registry)]
    pub registry: String,
    /// The user name.
    #[arg(short, long, value_name = "USER")]
    pub username: String,
    /// Read the password (or token) from standard input; one trailing
    /// newline is dropped. The only way: a password in the arguments
    /// would show in the process list.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    /// Speak plain HTTP to the registry (a local one).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust the certificate authorities of this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `backstop logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: HOST[:PORT].
    #[arg(value_name = "REGISTRY", value_parser = parse_registry)]
    pub registry: String,
}

/// `oci://REGISTRY/REPOSITORY:TAG`.
pub fn parse_reference(value: &str) -> Result<backstop_oci::Reference, String> {
    if !value.trim().starts_with("oci://") {
        return Err(format!(
            "{value:?} is not a push target: write oci://REGISTRY/REPOSITORY:TAG"
        ));
    }
    value
        .parse()
        .map_err(|e: backstop_oci::ReferenceError| e.to_string())
}

/// A registry host.
pub fn parse_registry(value: &str) -> Result<String, String> {
    backstop_oci::Reference::parse_registry(value).map_err(|e| e.to_string())
}

/// `PATTERN=ROLE`.
pub fn parse_role(value: &str) -> Result<backstop_oci::RoleRule, String> {
    backstop_oci::RoleRule::parse(value)
}

/// A chunk size: at least 1 byte.
pub fn parse_chunk_size(value: &str) -> Result<u64, String> {
    match parse_size(value)? {
        0 => Err("a chunk cannot be empty".to_owned()),
        n => Ok(n),
    }
}

/// An RFC 3339 time.
pub fn parse_created(value: &str) -> Result<String, String> {
    let value = value.trim();
    backstop_core::time::parse_rfc3339(value)
        .map(|_| value.to_owned())
        .ok_or_else(|| format!("{value:?} is not an RFC 3339 time (2026-01-02T03:04:05Z)"))
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
    fn handlers() {
        assert_eq!(
            parse_handle("install=./install.sh --fast"),
            Ok(("install".into(), "./install.sh --fast".into()))
        );
        assert_eq!(
            parse_handle("x=a=b"),
            Ok(("x".into(), "a=b".into())),
            "only the first = splits"
        );
        assert!(parse_handle("install").is_err());
        assert!(parse_handle("in stall=x").is_err());
        assert!(parse_handle("install= ").is_err());
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
    fn rates_as_curl_writes_them() {
        let rate = |v: &str| parse_rate(v).map(std::num::NonZeroU64::get);
        assert_eq!(rate("500K"), Ok(500 << 10));
        assert_eq!(rate("500k"), Ok(500 << 10));
        assert_eq!(rate("10M"), Ok(10 << 20));
        assert_eq!(rate("1G"), Ok(1 << 30));
        assert_eq!(rate("2T"), Ok(2 << 40));
        assert_eq!(rate("123456"), Ok(123_456));
        assert_eq!(rate("10M/s"), Ok(10 << 20));
        assert_eq!(rate("1MiB"), Ok(1 << 20));
        assert_eq!(rate("10MB"), Ok(10_000_000));
        assert_eq!(
            rate("0"),
            Err("the rate must be more than 0".to_owned()),
            "curl reads 0 as no limit; leaving the flag out says that"
        );
        for bad in ["", "fast", "-1K", "1.5M", "99999999999T", "K"] {
            assert!(rate(bad).is_err(), "{bad:?}");
        }
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
