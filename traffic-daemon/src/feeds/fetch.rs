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

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::*;
    use crate::config::feeds::FeedAction;

    fn spec(source: FeedSource, max_bytes: u64) -> FeedSpec {
        FeedSpec {
            name: "t".to_owned(),
            source,
            refresh: Duration::from_secs(60),
            action: FeedAction::Deny,
            max_prefixes: 10,
            max_bytes,
            timeout: Duration::from_secs(2),
            cache: PathBuf::from("/nonexistent/t.list"),
        }
    }

    #[test]
    fn https_is_built_in_and_a_refused_connection_is_an_error() {
        // Nothing listens on the discard port of loopback: the error is the connection's,
        // not "no TLS provider" (the client is built with rustls).
        for url in ["https://127.0.0.1:9/list", "http://127.0.0.1:9/list"] {
            let e = fetch(&spec(FeedSource::Url(url.to_owned()), 100)).unwrap_err();
            assert!(
                !e.to_lowercase().contains("tls") || e.contains("refused"),
                "{url}: {e}"
            );
            assert!(
                e.to_lowercase().contains("refused") || e.contains("connect"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn a_file_over_max_size_is_refused_and_the_cache_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("trf-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("sub/list.txt");
        store_cache(&file, b"198.18.0.1\n198.18.0.2\n").unwrap();
        assert_eq!(read_bounded(&file, 22).unwrap().len(), 22);
        assert!(read_bounded(&file, 21).unwrap_err().contains("max_size"));
        store_cache(&file, b"198.18.0.3\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"198.18.0.3\n");
        assert!(!file.with_extension("tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
