//! Getting a feed's bytes: a local file, or an HTTP(S) download (ureq, rustls), both
//! bounded in size (and the download in time); and the on-disk copy of the last good
//! download. Blocking: called on a blocking thread.

use std::{io::Read, path::Path};

use crate::config::feeds::{FeedSource, FeedSpec};

/// Read or download a feed, refusing more than `max_bytes`.
pub fn fetch(spec: &FeedSpec) -> Result<Vec<u8>, String> {
    match &spec.source {
        FeedSource::File(path) => read_bounded(path, spec.max_bytes),
        FeedSource::Url(url) => download(url, spec),
    }
}

/// A file, at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than max_size ({max} bytes)"));
    }
    Ok(bytes)
}

fn download(url: &str, spec: &FeedSpec) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(spec.timeout))
        .http_status_as_error(true)
        .user_agent(concat!("trafficd/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| describe(&e, spec))?;
    resp.body_mut()
        .with_config()
        .limit(spec.max_bytes)
        .read_to_vec()
        .map_err(|e| describe(&e, spec))
}

fn describe(e: &ureq::Error, spec: &FeedSpec) -> String {
    match e {
        ureq::Error::BodyExceedsLimit(_) => {
            format!("larger than max_size ({} bytes)", spec.max_bytes)
        }
        ureq::Error::Timeout(_) => format!("no complete answer within {:?}", spec.timeout),
        ureq::Error::StatusCode(c) => format!("HTTP status {c}"),
        other => other.to_string(),
    }
}

/// Keep the last good download on disk (written aside, then renamed: never half a file).
pub fn store_cache(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cache {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
