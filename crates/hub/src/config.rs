//! Where the Hub endpoint and token come from, as in huggingface_hub.

use std::path::PathBuf;

use backstop_core::Secret;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The token huggingface_hub would use: `HF_TOKEN`, else the older
/// `HUGGING_FACE_HUB_TOKEN`, else the token file (`HF_TOKEN_PATH`, else
/// `$HF_HOME/token`, else `$XDG_CACHE_HOME/huggingface/token`, else
/// `~/.cache/huggingface/token`). Blank values count as absent.
pub fn token_from_env() -> Option<Secret> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")) {
        return Some(Secret::new(token));
    }
    let path = var("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
        let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("huggingface"))
        })?;
        Some(home.join("token"))
    })?;
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| Secret::new(token))
}
