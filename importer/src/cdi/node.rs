//! Node pull (`pullMethod: node`, docs/cdi.md "Node pull"): the
//! container disk is served by the image's own pod; the ready file names
//! the disk file and the server's `/info` gives the image's environment,
//! turned into PVC labels.

use std::collections::BTreeMap;
use std::time::Duration;

use sources::http::HttpOptions;

use super::{under, Outcome, Settings};

/// CDI's file name of a disk image in a volume and in a node-pull endpoint.
const DISK_IMAGE_NAME: &str = "disk.img";

/// Longest disk file name taken from the ready file.
const MAX_READY_NAME: usize = 4096;

/// Node pull (docs/cdi.md, "Node pull"): the ready file holds the disk's
/// file name inside the container image, which replaces the endpoint's
/// trailing `disk.img` (CDI's `getHTTPEp`). An empty or absent file
/// leaves the endpoint as it is.
pub(super) fn node_endpoint(s: &Settings) -> Result<Settings, Outcome> {
    let mut s = s.clone();
    let Some(ready) = &s.ready_file else {
        return Ok(s);
    };
    let path = under(&s.root, ready);
    let name = match std::fs::read(&path) {
        Ok(n) => n,
        Err(e) => {
            return Err(Outcome::failed(format!(
                "Unable to process data: reading {}: {e}",
                formats::text::escape(&path.display().to_string())
            )))
        }
    };
    let name = String::from_utf8_lossy(&name);
    let name = name.trim_end_matches(['\n', '\r']);
    if name.len() > MAX_READY_NAME || name.chars().any(char::is_control) {
        return Err(Outcome::failed(
            "Unable to process data: the ready file does not hold a file name".into(),
        ));
    }
    if !name.is_empty() {
        let base = s
            .endpoint
            .strip_suffix(DISK_IMAGE_NAME)
            .unwrap_or(&s.endpoint);
        s.endpoint = format!("{base}{name}");
    }
    Ok(s)
}

/// Node pull: the image's environment from the server's `/info`, as PVC
/// labels (CDI's `GetTerminationMessage`). A failure is logged and gives
/// no labels, as in CDI.
pub(super) fn node_labels(endpoint: &str) -> BTreeMap<String, String> {
    let Ok(url) = url::Url::parse(endpoint) else {
        return BTreeMap::new();
    };
    let info = format!(
        "{}://{}/info",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    );
    // CDI asks with a plain client: no credentials, no extra headers.
    let opts = HttpOptions {
        retry: sources::http::RetryPolicy {
            retries: 2,
            ..HttpOptions::default().retry
        },
        deadline: Some(Duration::from_secs(60)),
        ..HttpOptions::default()
    };
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(default)]
        env: Vec<String>,
    }
    match sources::http::fetch_small(&info, opts, 1 << 20)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Info>(&b).map_err(|e| e.to_string()))
    {
        Ok(i) => envs_to_labels(&i.env),
        Err(e) => {
            tracing::error!("Reading the container image server's info: {e}");
            BTreeMap::new()
        }
    }
}

/// CDI's `envsToLabels`: every `K=V` whose key contains `KUBEVIRT_IO_`
/// becomes a label. The part before it (trailing `_` dropped) becomes
/// dot-separated words and a dot, then `kubevirt.io/`, then the part after
/// it with `_` as `-`, all lower case: `TEST_TEST_KUBEVIRT_IO_TEST_TEST`
/// is `test.test.kubevirt.io/test-test`.
pub fn envs_to_labels(envs: &[String]) -> BTreeMap<String, String> {
    const PREFIX: &str = "KUBEVIRT_IO_";
    let mut labels = BTreeMap::new();
    for e in envs {
        let Some((k, v)) = e.split_once('=') else {
            continue;
        };
        let Some((before, after)) = k.split_once(PREFIX) else {
            continue;
        };
        let mut label = String::new();
        let before = before.strip_suffix('_').unwrap_or(before);
        // As CDI: no prefix at all when its first word is empty.
        if !before.is_empty() && !before.starts_with('_') {
            label.push_str(&before.split('_').collect::<Vec<_>>().join("."));
            label.push('.');
        }
        label.push_str("kubevirt.io/");
        label.push_str(&after.replace('_', "-"));
        labels.insert(label.to_lowercase(), v.to_owned());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_env_becomes_labels_as_cdi_names_them() {
        let env: Vec<String> = [
            "KUBEVIRT_IO_TEST=a",
            "TEST_TEST_KUBEVIRT_IO_TEST_TEST=b",
            "INSTANCETYPE_KUBEVIRT_IO_DEFAULT_INSTANCETYPE=u1.small",
            "_X_KUBEVIRT_IO_Y=c",
            "PATH=/bin",
            "KUBEVIRT_IO_NOVALUE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let l = envs_to_labels(&env);
        let want: BTreeMap<String, String> = [
            ("kubevirt.io/test", "a"),
            ("test.test.kubevirt.io/test-test", "b"),
            ("instancetype.kubevirt.io/default-instancetype", "u1.small"),
            ("kubevirt.io/y", "c"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(l, want);
    }
}
