//! `backstop-cutproxy LISTEN UPSTREAM CUT_BYTES [STATS_FILE]`: the cutting
//! proxy of `backstop-faultserver` as a process, for the benchmarks. It
//! forwards LISTEN (127.0.0.1:PORT) to UPSTREAM, closes each connection
//! after CUT_BYTES bytes towards the client (0: never), and writes the
//! bytes forwarded so far to STATS_FILE every 100 ms. It runs until
//! killed.
//!
//! `backstop-cutproxy --upload LISTEN UPSTREAM CUT_BYTES [STATS_FILE]`
//! cuts the other way: a connection is cut each time another CUT_BYTES
//! bytes have gone towards UPSTREAM (a push's uploads), and STATS_FILE
//! holds the bytes uploaded so far.

use std::time::Duration;

use backstop_faultserver::Proxy;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let upload = args.first().is_some_and(|a| a == "--upload");
    if upload {
        args.remove(0);
    }
    let parsed = match args.as_slice() {
        [listen, upstream, cut] | [listen, upstream, cut, _] => upstream
            .parse()
            .ok()
            .zip(cut.parse::<u64>().ok())
            .map(|(u, c)| (listen, u, c)),
        _ => None,
    };
    let Some((listen, upstream, cut)) = parsed else {
        eprintln!("usage: backstop-cutproxy [--upload] LISTEN UPSTREAM CUT_BYTES [STATS_FILE]");
        std::process::exit(2);
    };
    if upload {
        return cut_uploads(listen, upstream, cut, args.get(3));
    }
    let proxy = Proxy::start_on(listen, upstream, cut);
    eprintln!(
        "backstop-cutproxy: {} -> {upstream}, cut every {cut} bytes",
        proxy.addr()
    );
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(stats) = args.get(3) {
            let _ = std::fs::write(stats, format!("{}\n", proxy.forwarded()));
        }
    }
}

/// Cuts a connection each time another `cut` bytes have been uploaded
/// (`cut_upload_after` cuts once: it is armed again after each cut).
fn cut_uploads(listen: &str, upstream: std::net::SocketAddr, cut: u64, stats: Option<&String>) {
    let proxy = Proxy::start_on(listen, upstream, 0);
    eprintln!(
        "backstop-cutproxy: {} -> {upstream}, an upload cut every {cut} bytes",
        proxy.addr()
    );
    let mut next = u64::MAX;
    if cut > 0 {
        proxy.cut_upload_after(cut);
        next = cut;
    }
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let uploaded = proxy.uploaded();
        if cut > 0 && uploaded >= next {
            proxy.cut_upload_after(cut);
            next = uploaded + cut;
        }
        if let Some(stats) = stats {
            let _ = std::fs::write(stats, format!("{uploaded}\n"));
        }
    }
}
