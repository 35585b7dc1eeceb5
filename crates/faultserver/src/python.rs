//! Peer tools from PyPI that interop tests check backstop against, each
//! installed in a virtual environment of the tests' own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The oras release the interop tests are pinned to.
pub const ORAS: &str = "oras==0.2.43";

/// The huggingface_hub release the interop tests are pinned to.
pub const HUGGINGFACE_HUB: &str = "huggingface_hub==2.4.0";

/// The schemathesis release the API contract test is pinned to.
pub const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The `st` command of [`SCHEMATHESIS`], in a virtual environment under
/// `dir` (pass `env!("CARGO_TARGET_TMPDIR")`), made on first use.
///
/// # Panics
/// See [`venv_python`].
pub fn schemathesis(dir: &Path) -> PathBuf {
    venv_python(dir, "schemathesis-venv", SCHEMATHESIS, "schemathesis").with_file_name("st")
}

/// A Python with [`ORAS`] installed, in a virtual environment under
/// `dir` (pass `env!("CARGO_TARGET_TMPDIR")`), made on first use.
///
/// # Panics
/// See [`venv_python`].
pub fn oras_python(dir: &Path) -> PathBuf {
    venv_python(dir, "oras-venv", ORAS, "oras.client")
}

/// A Python with [`HUGGINGFACE_HUB`] installed, in a virtual environment
/// under `dir` (pass `env!("CARGO_TARGET_TMPDIR")`), made on first use.
///
/// # Panics
/// See [`venv_python`].
pub fn huggingface_hub_python(dir: &Path) -> PathBuf {
    venv_python(
        dir,
        "huggingface-hub-venv",
        HUGGINGFACE_HUB,
        "huggingface_hub",
    )
}

/// The Python of the virtual environment `dir/name`, made on first use
/// with `requirement` installed from PyPI; `module` is what must import
/// for it to count as installed.
///
/// # Panics
/// When python3's venv or pip cannot install it (`apt-get install
/// python3-venv`; PyPI must be reachable): a test that needs it must
/// fail, never skip.
pub fn venv_python(dir: &Path, name: &str, requirement: &str, module: &str) -> PathBuf {
    let venv = dir.join(name);
    let python = venv.join("bin/python");
    let installed = || {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    // Test binaries run at once and share `dir`: one makes the
    // environment while the others wait for it.
    std::fs::create_dir_all(dir).expect("the venv's folder can be made");
    let lock =
        std::fs::File::create(dir.join(format!("{name}.lock"))).expect("the venv lock opens");
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
            .args(["install", "-q", requirement])
            .status()
            .expect("pip runs");
        assert!(pip.success(), "pip install {requirement} failed");
        assert!(installed(), "{module} does not import after pip install");
    }
    drop(lock);
    python
}
