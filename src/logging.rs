//! stderr logging: plain "backstop: ..." lines for people, with levels and
//! targets only when asked for detail.

use std::ffi::OsString;
use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the subscriber. `BACKSTOP_LOG` (a tracing filter such as
/// `backstop_http=debug`) overrides the flags. Colours and other terminal
/// escapes only when stderr is a terminal and `NO_COLOR` is unset or empty.
pub fn init(verbose: u8, quiet: bool) {
    let ours = [
        "backstop",
        "backstop_agent",
        "backstop_core",
        "backstop_http",
        "backstop_hub",
        "backstop_ledger",
        "backstop_queue",
        "backstop_transfer",
    ];
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let others = if verbose >= 2 { "debug" } else { "warn" };
    let default: Vec<String> = std::iter::once(others.to_owned())
        .chain(ours.iter().map(|c| format!("{c}={level}")))
        .collect();
    let filter = std::env::var("BACKSTOP_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default.join(",")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .event_format(Plain {
            detailed: verbose > 0,
        })
        .try_init();
}

/// Whether escapes may be written: to a terminal only, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

struct Plain {
    detailed: bool,
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "backstop: ")?;
        match *meta.level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::INFO => {}
            level => write!(writer, "{level} {}: ", meta.target())?,
        }
        if self.detailed {
            ctx.format_fields(writer.by_ref(), event)?;
        } else {
            // Only the message: structured fields are for -v.
            let mut message = Message(String::new());
            event.record(&mut message);
            write!(writer, "{}", message.0)?;
        }
        writeln!(writer)
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let set = |v: &str| Some(OsString::from(v));
        assert!(colour(true, None));
        assert!(colour(true, set("")), "an empty NO_COLOR is unset");
        assert!(!colour(true, set("1")));
        assert!(!colour(false, None));
        assert!(!colour(false, set("")));
    }
}
