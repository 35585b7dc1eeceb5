//! `oras` from PyPI, the peer tool interop tests check backstop against,
//! installed in a virtual environment of the tests' own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The oras release the interop tests are pinned to.
pub const ORAS: &str = "oras==0.2.43";

/// A Python with [`ORAS`] installed, in a virtual environment under
/// `dir` (pass `env!("CARGO_TARGET_TMPDIR")`), made on first use.
///
/// # Panics
/// When python3's venv or pip cannot install it (`apt-get install
/// python3-venv`; PyPI must be reachable): a test that needs it must
/// fail, never skip.
pub fn oras_python(dir: &Path) -> PathBuf {
    let venv = dir.join("oras-venv");
    let python = venv.join("bin/python");
    let installed = || {
        Command::new(&python)
            .args(["-c", "import oras.client"])
            .status()
            .is_ok_and(|s| s.success())
    };
    // Test binaries run at once and share `dir`: one makes the
    // environment while the others wait for it.
    std::fs::create_dir_all(dir).expect("the venv's folder can be made");
    let lock = std::fs::File::create(dir.join("oras-venv.lock")).expect("the venv lock opens");
    lock.lock().expect("the venv lock is taken");
    if !installed() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(
            made.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", ORAS])
            .status()
            .expect("pip runs");
        assert!(pip.success(), "pip install {ORAS} failed");
        assert!(installed(), "oras does not import after pip install");
    }
    drop(lock);
    python
}
