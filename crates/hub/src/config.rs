//! Where the Hub endpoint, the token and the cache come from, as in
//! huggingface_hub.

use std::path::PathBuf;

use backstop_core::Secret;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The token huggingface_hub would use: `HF_TOKEN`, else the older
/// `HUGGING_FACE_HUB_TOKEN`, else the token file (`HF_TOKEN_PATH`, else
/// `$HF_HOME/token`, else `$XDG_CACHE_HOME/huggingface/token`, else
/// `~/.cache/huggingface/token`). Blank values count as absent.
pub fn token_from_env() -> Option<Secret> {
    if let Some(token) = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")) {
        return Some(Secret::new(token));
    }
    let path = var("HF_TOKEN_PATH")
        .map(expand_home)
        .or_else(|| Some(hf_home()?.join("token")))?;
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| Secret::new(token))
}

/// The cache folder huggingface_hub would use: `HF_HUB_CACHE`, else the
/// older `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
/// `None` only when none of these is set and there is no home folder.
pub fn hub_cache_from_env() -> Option<PathBuf> {
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .map(expand_home)
        .or_else(|| Some(hf_home()?.join("hub")))
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface`.
fn hf_home() -> Option<PathBuf> {
    var("HF_HOME").map(expand_home).or_else(|| {
        let cache = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("huggingface"))
    })
}

/// A variable's value, trimmed; blank counts as absent.
fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A leading `~` is the home folder, as Python's `expanduser` has it.
fn expand_home(path: String) -> PathBuf {
    match (path.strip_prefix('~'), var("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    }
}
