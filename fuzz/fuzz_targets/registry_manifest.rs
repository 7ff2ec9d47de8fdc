//! Manifests, indexes and configs over arbitrary bytes: parsed with their
//! bounds, the platform chosen from any index; never panics.
#![no_main]
use sources::registry::manifest::{check_config, choose, parse_config, parse_manifest, Manifest};
use sources::registry::Wanted;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Manifest::Index { manifests, docker }) = parse_manifest(data, None) {
        let _ = choose(&manifests, docker, &Wanted::default());
    }
    let _ = parse_manifest(data, Some("application/vnd.docker.distribution.manifest.list.v2+json"));
    if let Ok(c) = parse_config(data) {
        let _ = check_config(&c, &Wanted::default());
    }
});
