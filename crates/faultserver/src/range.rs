//! Serving a file's bytes the way a static file server answers `Range`.

use crate::{Ranges, Reply};

/// The reply to send for a request with these `Range` and `If-Range`
/// headers: the scripted reply itself for a plain one, else the part of
/// the file asked for, with its status and `Content-Range`.
pub(crate) fn apply(mut reply: Reply, range: Option<&str>, if_range: Option<&str>) -> Reply {
    if let Some(offset) = reply.corrupt.and_then(|o| usize::try_from(o).ok())
        && offset < reply.body.len()
    {
        let mut bytes = reply.body.to_vec();
        bytes[offset] ^= 0xff;
        reply.body = bytes.into();
    }
    if reply.ranges == Ranges::Plain || reply.status != 200 {
        return reply;
    }
    let len = reply.body.len() as u64;
    let etag = reply
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.as_str());
    let validator_matches = if_range.is_none_or(|v| etag == Some(v.trim()));
    let asked = range.and_then(|r| parse(r, len));
    let (start, end) = match (reply.ranges, asked, validator_matches) {
        (Ranges::Ignore, _, _) | (_, None, _) | (_, _, false) => return reply,
        (_, Some(Err(())), _) => {
            reply.status = 416;
            reply.body = Default::default();
            return reply.header("Content-Range", &format!("bytes */{len}"));
        }
        (_, Some(Ok(span)), _) => span,
    };
    // `end` is inclusive; `parse` keeps start <= end < len.
    reply.body = reply.body.slice(start as usize..=end as usize);
    reply.status = 206;
    let shown = if reply.ranges == Ranges::Wrong {
        format!("bytes {}-{}/{len}", start + 1, end + 1)
    } else {
        format!("bytes {start}-{end}/{len}")
    };
    reply.header("Content-Range", &shown)
}

/// One `bytes=` range against a file of `len` bytes: `None` when the
/// header is not one the server understands (the whole file is sent),
/// `Some(Err(()))` when it starts past the end (416).
fn parse(header: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(suffix), len - 1)));
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() {
        len.checked_sub(1)
    } else {
        Some(last.parse::<u64>().ok()?.min(len.saturating_sub(1)))
    };
    match end {
        Some(end) if start < len && start <= end => Some(Ok((start, end))),
        _ if start >= len => Some(Err(())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse("bytes=0-", 10), Some(Ok((0, 9))));
        assert_eq!(parse("bytes=3-5", 10), Some(Ok((3, 5))));
        assert_eq!(parse("bytes=3-50", 10), Some(Ok((3, 9))));
        assert_eq!(parse("bytes=-4", 10), Some(Ok((6, 9))));
        assert_eq!(parse("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse("bytes=5-3", 10), None);
        assert_eq!(parse("bytes=0-1,4-5", 10), None);
        assert_eq!(parse("items=0-1", 10), None);
    }

    #[test]
    fn replies() {
        let r = apply(Reply::file("0123456789"), Some("bytes=4-"), None);
        assert_eq!((r.status, &r.body[..]), (206, &b"456789"[..]));
        let r = apply(
            Reply::file("0123456789").ignore_range(),
            Some("bytes=4-"),
            None,
        );
        assert_eq!((r.status, r.body.len()), (200, 10));
        let r = apply(
            Reply::file("0123456789").header("ETag", "\"v2\""),
            Some("bytes=4-"),
            Some("\"v1\""),
        );
        assert_eq!((r.status, r.body.len()), (200, 10));
        let r = apply(Reply::file("0123456789"), Some("bytes=12-"), None);
        assert_eq!(r.status, 416);
        let r = apply(
            Reply::file("0123456789").corrupt_at(5),
            Some("bytes=4-"),
            None,
        );
        assert_eq!(&r.body[..], &b"4\xca6789"[..]);
    }
}
