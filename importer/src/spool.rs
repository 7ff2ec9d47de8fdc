//! The scratch fallback: a qcow2 that arrives as a non-seekable stream
//! (inside gz/xz/zst, or on stdin) is copied to an unnamed scratch file and
//! then read by random access, as CDI's `TransferScratch` does. The
//! forward-only streaming reader that avoids this copy is the next step
//! (see the README); every spooled byte is logged.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Copies `reader` to an unnamed file in `dir` (removed when closed) and
/// returns it with the number of bytes spooled. Fails once `limit` bytes
/// would be exceeded.
pub fn spool(reader: &mut dyn Read, dir: &Path, limit: u64) -> io::Result<(File, u64)> {
    let mut file = tempfile::tempfile_in(dir)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limit {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("scratch space limit of {limit} bytes exceeded"),
            ));
        }
        file.write_all(&buf[..n])?;
    }
    file.flush()?;
    Ok((file, total))
}
