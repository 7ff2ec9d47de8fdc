//! The volume and CDI's space rules (docs/cdi.md, "Space"): where the
//! image goes, how much it may take, and what a Filesystem image grows to.

use std::path::{Path, PathBuf};

use super::under;
use crate::sink;
use crate::ImportError;

/// Usable space is rounded down to this.
const ALIGN: u64 = 1 << 20;

/// CDI's usable space: the available bytes less the filesystem overhead,
/// `RoundDown(ceil(avail / (1 + overhead)), 1 MiB)` (docs/cdi.md).
pub fn usable_space(available: u64, overhead: f64) -> u64 {
    let usable = (available as f64 / (1.0 + overhead)).ceil();
    let usable = if usable >= u64::MAX as f64 {
        u64::MAX
    } else {
        usable as u64
    };
    usable / ALIGN * ALIGN
}

/// The volume: a block device at /dev/cdi-block-volume when it exists,
/// else /data/disk.img.
#[derive(Debug, Clone)]
pub struct Target {
    /// The block device or the image file.
    pub path: PathBuf,
    /// The data directory (Filesystem mode).
    pub data_dir: PathBuf,
    /// Block mode.
    pub block: bool,
}

impl Target {
    /// The volume under `root`: the block device when present, else the
    /// image file in /data.
    pub fn find(root: &Path) -> Target {
        let dev = under(root, Path::new("/dev/cdi-block-volume"));
        let data_dir = under(root, Path::new("/data"));
        if std::fs::symlink_metadata(&dev).is_ok() {
            Target {
                path: dev,
                data_dir,
                block: true,
            }
        } else {
            Target {
                path: data_dir.join("disk.img"),
                data_dir,
                block: false,
            }
        }
    }

    /// CDI's available space (docs/cdi.md, "Space"): what the image may
    /// take. Block: the device size; Filesystem: min(free space,
    /// IMPORTER_IMAGE_SIZE). The filesystem overhead plays no part here.
    pub fn available(&self, image_size: Option<u64>) -> Result<u64, ImportError> {
        let free = sink::inspect(&self.path, None)?.capacity;
        Ok(match image_size {
            Some(s) if !self.block => s.min(free),
            _ => free,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_space_matches_cdi_numbers_worked_out_by_hand() {
        let gib = 1u64 << 30;
        let mib = 1u64 << 20;
        // (free or request, overhead, RoundDown(ceil(x / (1 + o)), 1 MiB)).
        for (avail, overhead, want) in [
            // 1073741824 / 1.06 = 1012964003.8 -> 966 MiB.
            (gib, 0.06, 1_012_924_416),
            (gib, 0.0, gib),
            // 1073741824 / 1.55 = 692736660.6 -> 660 MiB.
            (gib, 0.55, 692_060_160),
            (gib, 1.0, 512 * mib),
            // A 10Gi DataVolume's PVC, 11381663335 bytes: exactly 10 GiB.
            (11_381_663_335, 0.06, 10 * gib),
            // The same PVC's free space after mkfs.ext4 -m0: 9965 MiB.
            (11_077_079_040, 0.06, 10_449_059_840),
            (64 * mib, 0.06, 60 * mib),
            (0, 0.06, 0),
        ] {
            assert_eq!(usable_space(avail, overhead), want, "{avail} {overhead}");
        }
    }
}
