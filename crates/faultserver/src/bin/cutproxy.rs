//! `backstop-cutproxy LISTEN UPSTREAM CUT_BYTES [STATS_FILE]`: the cutting
//! proxy of `backstop-faultserver` as a process, for the benchmarks. It
//! forwards LISTEN (127.0.0.1:PORT) to UPSTREAM, closes each connection
//! after CUT_BYTES bytes towards the client (0: never), and writes the
//! bytes forwarded so far to STATS_FILE every 100 ms. It runs until
//! killed.

use std::time::Duration;

use backstop_faultserver::Proxy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream, cut] | [listen, upstream, cut, _] => upstream
            .parse()
            .ok()
            .zip(cut.parse::<u64>().ok())
            .map(|(u, c)| (listen, u, c)),
        _ => None,
    };
    let Some((listen, upstream, cut)) = parsed else {
        eprintln!("usage: backstop-cutproxy LISTEN UPSTREAM CUT_BYTES [STATS_FILE]");
        std::process::exit(2);
    };
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
