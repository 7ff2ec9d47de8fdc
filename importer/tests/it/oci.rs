//! Container-image fixtures: OCI layouts written by hand (any layer bytes,
//! hostile ones too), and Debian's docker-registry on 127.0.0.1 three
//! ways: plain HTTP, TLS with htpasswd Basic auth, and Bearer tokens from
//! a small token realm (fixtures/tokensrv.py). Images reach the registries
//! with skopeo, independently of our code.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::Digest;

use crate::common::{free_port, gz, zst};
use crate::net::{make_pki, Pki};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const TAR_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One layer blob as stored, with its media type.
#[derive(Clone)]
pub struct Layer {
    pub media: String,
    pub blob: Vec<u8>,
}

impl Layer {
    pub fn gz(tar: &[u8]) -> Layer {
        Layer {
            media: TAR_GZ.into(),
            blob: gz(tar),
        }
    }
    pub fn zst(tar: &[u8]) -> Layer {
        Layer {
            media: TAR_ZST.into(),
            blob: zst(tar),
        }
    }
    pub fn plain(tar: &[u8]) -> Layer {
        Layer {
            media: TAR.into(),
            blob: tar.to_vec(),
        }
    }
}

/// A tar entry: `(name, type flag, data, link target)`.
pub type Entry<'a> = (&'a str, u8, &'a [u8], &'a str);

/// A tar of entries with ustar headers written as given (hostile names
/// too): mode 0440 for files, 0755 for directories.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let e: Vec<(&str, u8, &[u8], u32, &str)> = entries
        .iter()
        .map(|(n, k, d, l)| (*n, *k, *d, if *k == b'5' { 0o755 } else { 0o440 }, *l))
        .collect();
    crate::import::tar(&e)
}

/// The usual container disk layer: `disk/` and one file in it.
pub fn disk_tar(name: &str, data: &[u8]) -> Vec<u8> {
    tar(&[
        ("disk/", b'5', b"", ""),
        (&format!("disk/{name}"), b'0', data, ""),
    ])
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// Writes `bytes` as a blob of the layout; its digest and size.
pub fn put_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let d = sha256(bytes);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(&d[7..]), bytes).unwrap();
    (d, bytes.len())
}

/// What an image is made of.
pub struct Image {
    pub layers: Vec<Layer>,
    pub arch: &'static str,
    pub env: Vec<String>,
    pub labels: serde_json::Value,
}

impl Image {
    pub fn new(layers: Vec<Layer>) -> Image {
        Image {
            layers,
            arch: "amd64",
            env: vec!["TEST_KUBEVIRT_IO_TEST=testvalue".into()],
            labels: serde_json::json!({}),
        }
    }
    pub fn arch(mut self, a: &'static str) -> Image {
        self.arch = a;
        self
    }
}

fn add_ref(dir: &Path, desc: serde_json::Value) {
    let idx = dir.join("index.json");
    let mut v: serde_json::Value = std::fs::read(&idx).ok().map_or_else(
        || serde_json::json!({"schemaVersion": 2, "manifests": []}),
        |b| serde_json::from_slice(&b).unwrap(),
    );
    v["manifests"].as_array_mut().unwrap().push(desc);
    std::fs::write(idx, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes the image's blobs and manifest; returns the manifest descriptor.
/// With `tag`, the layout's index.json names it.
pub fn write_image(dir: &Path, tag: Option<&str>, img: &Image) -> serde_json::Value {
    let diff_ids: Vec<String> = img.layers.iter().map(|l| sha256(&l.blob)).collect();
    let config = serde_json::json!({
        "architecture": img.arch, "os": "linux",
        "config": {"Env": img.env, "Labels": img.labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).unwrap());
    let layers: Vec<_> = img
        .layers
        .iter()
        .map(|l| {
            let (d, s) = put_blob(dir, &l.blob);
            serde_json::json!({"mediaType": l.media, "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    });
    write_manifest(dir, tag, &manifest, img.arch)
}

/// Writes a manifest document as given (hostile ones too).
pub fn write_manifest(
    dir: &Path,
    tag: Option<&str>,
    m: &serde_json::Value,
    arch: &str,
) -> serde_json::Value {
    let (md, ms) = put_blob(dir, &serde_json::to_vec(m).unwrap());
    let desc = serde_json::json!({
        "mediaType": m["mediaType"].as_str().unwrap_or(OCI_MANIFEST), "digest": md, "size": ms,
        "platform": {"architecture": arch, "os": "linux"},
    });
    if let Some(t) = tag {
        let mut named = desc.clone();
        named["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": t});
        add_ref(dir, named);
    }
    desc
}

/// Writes an index of `manifests` under `tag`.
pub fn write_index(dir: &Path, tag: &str, manifests: &[serde_json::Value]) {
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let (d, s) = put_blob(dir, &serde_json::to_vec(&index).unwrap());
    add_ref(
        dir,
        serde_json::json!({"mediaType": OCI_INDEX, "digest": d, "size": s,
            "annotations": {"org.opencontainers.image.ref.name": tag}}),
    );
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for_port(port: u16) -> bool {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts `cmd` as a child of a thread that lives as long as the test
/// process; PDEATHSIG stops it when the process exits, however it exits.
fn daemon(mut cmd: Command, log: PathBuf) {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no shared state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut c) => {
                tx.send(true).unwrap();
                let _ = c.wait();
            }
            Err(e) => {
                eprintln!("starting {:?}: {e}", cmd.get_program());
                tx.send(false).unwrap();
            }
        }
        loop {
            std::thread::park();
        }
    });
    assert!(rx.recv().unwrap(), "daemon did not start");
}

/// The test registries.
pub struct Registries {
    pub root: PathBuf,
    /// Plain HTTP, anonymous.
    pub plain: u16,
    /// TLS (test CA) with htpasswd Basic auth admin/password.
    pub tls: u16,
    /// Plain HTTP with Bearer tokens from `realm`.
    pub token: u16,
    pub realm: u16,
    pub pki: Pki,
}

impl Registries {
    pub fn token_log(&self) -> String {
        std::fs::read_to_string(self.root.join("tokensrv.log")).unwrap_or_default()
    }
}

fn start_registries() -> Option<Registries> {
    if ![
        "docker-registry",
        "skopeo",
        "htpasswd",
        "openssl",
        "python3",
    ]
    .iter()
    .all(|b| have(b))
    {
        if ci() {
            panic!("CI=true but docker-registry, skopeo, htpasswd, openssl or python3 is missing");
        }
        eprintln!("registry tools missing: skipping registry tests");
        return None;
    }
    let root = std::env::temp_dir().join(format!("diskimport-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let pki = make_pki(&root);
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "admin", "password"])
        .output()
        .unwrap();
    assert!(htpasswd.status.success());
    std::fs::write(root.join("htpasswd"), htpasswd.stdout).unwrap();
    let signer = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=token-signer",
        ])
        .arg("-keyout")
        .arg(root.join("signer.key"))
        .arg("-out")
        .arg(root.join("signer.crt"))
        .output()
        .unwrap();
    assert!(
        signer.status.success(),
        "{}",
        String::from_utf8_lossy(&signer.stderr)
    );
    let (plain, tls, token, realm) = (free_port(), free_port(), free_port(), free_port());
    let r = root.display();
    let configs = [
        ("plain", format!("http: {{addr: 127.0.0.1:{plain}, secret: t}}\n")),
        (
            "tls",
            format!(
                "http: {{addr: 127.0.0.1:{tls}, secret: t, tls: {{certificate: {}, key: {}}}}}\nauth: {{htpasswd: {{realm: basic-realm, path: {r}/htpasswd}}}}\n",
                pki.cert.display(),
                pki.key.display()
            ),
        ),
        (
            "token",
            format!(
                "http: {{addr: 127.0.0.1:{token}, secret: t}}\nauth: {{token: {{realm: \"http://127.0.0.1:{realm}/token\", service: test-registry, issuer: test-issuer, rootcertbundle: {r}/signer.crt}}}}\n"
            ),
        ),
    ];
    for (name, http) in configs {
        // All three share one store: an image pushed once is in each.
        let conf = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {r}/store}}, delete: {{enabled: true}}}}\n{http}"
        );
        let path = root.join(format!("{name}.yml"));
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&path);
        daemon(cmd, root.join(format!("{name}.log")));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tokensrv.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(realm.to_string())
        .arg(root.join("signer.key"))
        .arg(root.join("signer.crt"))
        .arg(root.join("tokensrv.log"));
    daemon(cmd, root.join("tokensrv.out"));
    for p in [plain, tls, token, realm] {
        assert!(wait_for_port(p), "registry port {p} not listening");
    }
    Some(Registries {
        root,
        plain,
        tls,
        token,
        realm,
        pki,
    })
}

/// The shared registries, started on first use; None (skip) when the
/// tools are missing outside CI.
pub fn registries() -> Option<&'static Registries> {
    static R: OnceLock<Option<Registries>> = OnceLock::new();
    R.get_or_init(start_registries).as_ref()
}

/// Copies `oci:LAYOUT:TAG` to the plain registry as `repo:tag` with
/// skopeo; `extra` adds skopeo flags (`--all`, `--format v2s2`).
pub fn push(layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) -> String {
    let reg = registries().expect("registries");
    let dest = format!("docker://127.0.0.1:{}/{repo_tag}", reg.plain);
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy to {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dest
}
