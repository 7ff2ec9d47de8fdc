//! Node pull (`pullMethod: node`): CDI runs this server inside the user's
//! container disk image, which holds nothing but `/disk/<file>`, and the
//! importer fetches the file from it over loopback. A replacement for
//! CDI's `cdi-containerimage-server` with its flags and behaviour
//! (docs/registry.md, "Node pull"):
//!
//! - `-p PORT` (8100), `-image-dir DIR` (`.`), `-ready-file FILE`
//!   (`/shared/ready`), `-done-file FILE` (`/shared/done`), Go flag syntax
//!   (`-name value`, `-name=value`, `--name`);
//! - refuses bootc images (`/sysroot` or `/ostree`), prints every path
//!   under the image directory, which must hold exactly one entry, not a
//!   directory (else "Invalid container image", exit 1);
//! - listens on 127.0.0.1, then writes the ready file (0600) with the
//!   file's name; serves `GET /info` (`{"env":[...]}`) and `GET`/`HEAD` of
//!   the file with single byte ranges, `If-Range` and `Last-Modified`;
//! - polls the done file every second; when it appears, removes it and the
//!   ready file and exits 0.
//!
//! Standard library only: no allocator tricks, no resolver, no TLS, so it
//! links statically with `-C target-feature=+crt-static`.

mod http;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `-p`.
    pub port: u16,
    /// `-image-dir`.
    pub image_dir: PathBuf,
    /// `-ready-file`.
    pub ready_file: PathBuf,
    /// `-done-file`.
    pub done_file: PathBuf,
    /// Where `/sysroot` and `/ostree` are looked for (`/`; tests move it).
    pub root: PathBuf,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            port: 8100,
            image_dir: PathBuf::from("."),
            ready_file: PathBuf::from("/shared/ready"),
            done_file: PathBuf::from("/shared/done"),
            root: PathBuf::from("/"),
        }
    }
}

/// Parses Go-style flags.
pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let flag = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("flag needs an argument: -{name}"))
        };
        match name {
            "p" => {
                let v = value()?;
                a.port = v
                    .parse()
                    .map_err(|_| format!("invalid value {v:?} for flag -p"))?;
            }
            "image-dir" => a.image_dir = value()?.into(),
            "ready-file" => a.ready_file = value()?.into(),
            "done-file" => a.done_file = value()?.into(),
            "root" => a.root = value()?.into(),
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    Ok(a)
}

fn log(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The one file of the image directory (CDI's `getImageFilename`).
fn image_file(dir: &Path) -> Result<String, String> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("Failed get image filename in {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Failed get image filename in {}: {e}", dir.display()))?;
    match entries.as_slice() {
        [one] if !one.file_type().is_ok_and(|t| t.is_dir()) => {
            Ok(one.file_name().to_string_lossy().into_owned())
        }
        _ => Err(format!(
            "Failed get image filename in {}: Invalid container image",
            dir.display()
        )),
    }
}

/// Prints every path under `dir`, as CDI's server does (bounded: a few
/// thousand lines at most).
fn print_files(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    let mut shown = 0;
    while let Some(p) = stack.pop() {
        println!("{}", p.display());
        shown += 1;
        if shown > 4096 {
            break;
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut kids: Vec<_> = rd.flatten().map(|e| e.path()).collect();
                kids.sort();
                stack.extend(kids.into_iter().rev());
            }
        }
    }
}

/// Runs the server; the process exit code.
pub fn main_with(args: &[String]) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            log(&e);
            return 2;
        }
    };
    match serve(&a) {
        Ok(()) => 0,
        Err(e) => {
            log(&e);
            1
        }
    }
}

/// Serves until the done file appears.
pub fn serve(a: &Args) -> Result<(), String> {
    for d in ["sysroot", "ostree"] {
        if a.root.join(d).is_dir() {
            return Err("bootc image detected: this image contains an ostree-based bootable OS and cannot be imported as a regular container disk; bootc-to-disk conversion is not yet implemented".into());
        }
    }
    print_files(&a.image_dir);
    let name = image_file(&a.image_dir)?;
    let file = a.image_dir.join(&name);
    let listener = TcpListener::bind(("127.0.0.1", a.port))
        .map_err(|e| format!("Failed listening on localhost:{} err: {e}", a.port))?;
    write_ready(&a.ready_file, &name)?;
    log(&format!(
        "Serving {} on HTTP port: {}",
        a.image_dir.display(),
        a.port
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicUsize::new(0));
    let l2 = listener.try_clone().map_err(|e| e.to_string())?;
    let (stop2, name2) = (stop.clone(), name.clone());
    let acceptor = std::thread::spawn(move || {
        for conn in l2.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            while active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                std::thread::sleep(Duration::from_millis(10));
            }
            active.fetch_add(1, Ordering::SeqCst);
            let (active, file, name) = (active.clone(), file.clone(), name2.clone());
            std::thread::spawn(move || {
                http::serve_conn(conn, &file, &name);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    while !a.done_file.exists() {
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = std::fs::remove_file(&a.done_file);
    stop.store(true, Ordering::SeqCst);
    // Wake the acceptor so it sees the flag.
    let _ = std::net::TcpStream::connect(("127.0.0.1", a.port));
    let _ = acceptor.join();
    let _ = std::fs::remove_file(&a.ready_file);
    log("Importer has completed");
    Ok(())
}

fn write_ready(path: &Path, name: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("Failed creating \"ready\" file: {e}"))?;
    f.write_all(name.as_bytes())
        .map_err(|e| format!("Failed creating \"ready\" file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn go_style_flags_parse() {
        let a = parse(&s(&[
            "-p",
            "8200",
            "-image-dir=/disk",
            "--ready-file",
            "/r",
            "-done-file=/d",
        ]))
        .unwrap();
        assert_eq!(a.port, 8200);
        assert_eq!(a.image_dir, PathBuf::from("/disk"));
        assert_eq!(a.ready_file, PathBuf::from("/r"));
        assert_eq!(a.done_file, PathBuf::from("/d"));
        assert_eq!(parse(&[]).unwrap(), Args::default());
        assert!(parse(&s(&["-x"])).unwrap_err().contains("not defined: -x"));
        assert!(parse(&s(&["-p"]))
            .unwrap_err()
            .contains("needs an argument"));
        assert!(parse(&s(&["-p", "99999"])).is_err());
    }

    #[test]
    fn the_image_directory_must_hold_exactly_one_file() {
        let d = std::env::temp_dir().join(format!("serveimage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert!(image_file(&d)
            .unwrap_err()
            .contains("Invalid container image"));
        std::fs::write(d.join("disk.qcow2"), b"x").unwrap();
        assert_eq!(image_file(&d).unwrap(), "disk.qcow2");
        std::fs::write(d.join("two"), b"x").unwrap();
        assert!(image_file(&d)
            .unwrap_err()
            .contains("Invalid container image"));
        std::fs::remove_file(d.join("two")).unwrap();
        std::fs::remove_file(d.join("disk.qcow2")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        assert!(image_file(&d)
            .unwrap_err()
            .contains("Invalid container image"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
