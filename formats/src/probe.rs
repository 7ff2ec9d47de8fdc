//! Format detection by magic bytes, on a prefix the caller peeked without
//! consuming it. Never by file name (G2).

/// How many bytes of prefix [`detect`] wants: tar's `ustar` sits at 257,
/// VDI's signature at 0x40, and a VMDK text descriptor is recognised within
/// the first 2 KiB (qemu's probe window).
pub const PROBE_LEN: usize = 2048;

/// What a stream is, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// gzip (RFC 1952), possibly multi-member.
    Gzip,
    /// xz, possibly multi-stream.
    Xz,
    /// zstd frames (or a skippable frame first).
    Zstd,
    /// bzip2: recognised, not supported.
    Bzip2,
    /// POSIX/GNU tar (`ustar` at 257).
    Tar,
    /// QEMU copy-on-write image, with the version field from the header.
    /// Version 1 is the obsolete qcow format.
    Qcow {
        /// Header version (2 and 3 are qcow2).
        version: u32,
    },
    /// VMware VMDK (sparse extent, COWD or text descriptor).
    Vmdk,
    /// Dynamic VHD (`conectix` at 0). A fixed VHD has its footer at the end
    /// and is indistinguishable from raw, as in CDI.
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// QEMU enhanced disk.
    Qed,
    /// LUKS encrypted volume.
    Luks,
    /// Parallels disk.
    Parallels,
    /// Anything else: ISO 9660, MBR/GPT disks, filesystems.
    Raw,
}

impl Probe {
    /// The common name used in messages and `info` output.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Gzip => "gzip",
            Probe::Xz => "xz",
            Probe::Zstd => "zstd",
            Probe::Bzip2 => "bzip2",
            Probe::Tar => "tar",
            Probe::Qcow { version: 1 } => "qcow",
            Probe::Qcow { .. } => "qcow2",
            Probe::Vmdk => "vmdk",
            Probe::Vhd => "vhd",
            Probe::Vhdx => "vhdx",
            Probe::Vdi => "vdi",
            Probe::Qed => "qed",
            Probe::Luks => "luks",
            Probe::Parallels => "parallels",
            Probe::Raw => "raw",
        }
    }

    /// Whether this is a compression layer the decoder stage can remove.
    pub fn is_compression(self) -> bool {
        matches!(self, Probe::Gzip | Probe::Xz | Probe::Zstd)
    }

    /// Whether this is a recognised format that is refused rather than
    /// imported as raw (G2).
    pub fn is_unsupported(self) -> bool {
        matches!(
            self,
            Probe::Bzip2
                | Probe::Vmdk
                | Probe::Vhd
                | Probe::Vhdx
                | Probe::Vdi
                | Probe::Qed
                | Probe::Luks
                | Probe::Parallels
        )
    }
}

fn at(prefix: &[u8], offset: usize, magic: &[u8]) -> bool {
    prefix.get(offset..offset + magic.len()) == Some(magic)
}

/// Detects the format of a stream from its first bytes (up to
/// [`PROBE_LEN`]; a shorter prefix means the stream is that short).
pub fn detect(prefix: &[u8]) -> Probe {
    if at(prefix, 0, b"QFI\xfb") {
        let version = prefix
            .get(4..8)
            .map_or(0, |v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
        return Probe::Qcow { version };
    }
    // zstd skippable frames: magic 0x184D2A50..=0x184D2A5F, little endian.
    let zstd_skippable =
        prefix.len() >= 4 && prefix[0] & 0xf0 == 0x50 && prefix[1..4] == [0x2a, 0x4d, 0x18];
    let table: &[(usize, &[u8], Probe)] = &[
        (0, b"\x1f\x8b\x08", Probe::Gzip),
        (0, b"\xfd7zXZ\x00", Probe::Xz),
        (0, b"\x28\xb5\x2f\xfd", Probe::Zstd),
        (0, b"KDMV", Probe::Vmdk),
        (0, b"COWD", Probe::Vmdk),
        (0, b"# Disk DescriptorFile", Probe::Vmdk),
        (0, b"conectix", Probe::Vhd),
        (0, b"vhdxfile", Probe::Vhdx),
        (0x40, b"\x7f\x10\xda\xbe", Probe::Vdi),
        (0, b"QED\x00", Probe::Qed),
        (0, b"LUKS\xba\xbe", Probe::Luks),
        (0, b"WithoutFreeSpace", Probe::Parallels),
        (0, b"WithouFreSpacExt", Probe::Parallels),
        (257, b"ustar", Probe::Tar),
    ];
    if zstd_skippable {
        return Probe::Zstd;
    }
    if let Some((_, _, p)) = table.iter().find(|(o, m, _)| at(prefix, *o, m)) {
        return *p;
    }
    if at(prefix, 0, b"BZh") && at(prefix, 4, b"1AY&SY") {
        return Probe::Bzip2;
    }
    if is_vmdk_descriptor(prefix) {
        return Probe::Vmdk;
    }
    Probe::Raw
}

/// How much of a stream qemu looks at to recognise a format.
const QEMU_PROBE_LEN: usize = 2048;

/// Whether `prefix` reads as a VMDK text descriptor the way qemu's probe
/// reads it (docs/formats.md, "VMDK descriptors"): comment lines (`#...`)
/// and lines of spaces may come first; the first other line must be
/// `version=1`, `version=2` or `version=3`, ended by `\n` or `\r\n`. Such
/// a file names extent files qemu-img would open; it is refused, never
/// copied as raw, and the extents are never opened.
fn is_vmdk_descriptor(prefix: &[u8]) -> bool {
    let buf = &prefix[..prefix.len().min(QEMU_PROBE_LEN)];
    let mut p = 0;
    while p < buf.len() {
        match buf[p] {
            b'#' => {
                while p < buf.len() && buf[p] != b'\n' {
                    p += 1;
                }
                p += 1;
            }
            b' ' => {
                while p < buf.len() && buf[p] == b' ' {
                    p += 1;
                }
                if buf.get(p) == Some(&b'\r') {
                    p += 1;
                }
                if buf.get(p) != Some(&b'\n') {
                    return false;
                }
                p += 1;
            }
            _ => {
                let line = &buf[p..];
                return [b"1", b"2", b"3"].iter().any(|v| {
                    let head = [b"version=".as_slice(), v.as_slice()].concat();
                    line.starts_with(&head)
                        && (line[head.len()..].starts_with(b"\n")
                            || line[head.len()..].starts_with(b"\r\n"))
                });
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_at(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; PROBE_LEN];
        v[offset..offset + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn each_magic_is_detected() {
        let cases: &[(usize, &[u8], Probe)] = &[
            (0, b"\x1f\x8b\x08\x00", Probe::Gzip),
            (0, b"\xfd7zXZ\x00\x00", Probe::Xz),
            (0, b"\x28\xb5\x2f\xfd", Probe::Zstd),
            (0, b"\x50\x2a\x4d\x18", Probe::Zstd),
            (0, b"KDMV", Probe::Vmdk),
            (0, b"# Disk DescriptorFile\n", Probe::Vmdk),
            (0, b"conectix", Probe::Vhd),
            (0, b"vhdxfile", Probe::Vhdx),
            (0x40, b"\x7f\x10\xda\xbe", Probe::Vdi),
            (0, b"QED\x00", Probe::Qed),
            (0, b"LUKS\xba\xbe\x00\x01", Probe::Luks),
            (257, b"ustar\x0000", Probe::Tar),
            (0, b"BZh91AY&SY", Probe::Bzip2),
            (0, b"QFI\xfb\x00\x00\x00\x03", Probe::Qcow { version: 3 }),
            (0, b"QFI\xfb\x00\x00\x00\x01", Probe::Qcow { version: 1 }),
        ];
        for (off, magic, want) in cases {
            assert_eq!(detect(&with_at(*off, magic)), *want, "{magic:?}");
        }
    }

    #[test]
    fn iso_and_mbr_disks_are_raw() {
        let mut mbr = vec![0u8; PROBE_LEN];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(detect(&mbr), Probe::Raw);
        assert_eq!(detect(b""), Probe::Raw);
        assert_eq!(detect(b"QFI"), Probe::Raw);
    }

    #[test]
    fn bad_qcow2_magic_is_raw() {
        // Q01: QFI\xfa is not qcow2.
        assert_eq!(detect(&with_at(0, b"QFI\xfa\x00\x00\x00\x03")), Probe::Raw);
    }

    #[test]
    fn vmdk_descriptors_without_the_banner_are_vmdk() {
        let passwd =
            b"# comment\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n";
        assert_eq!(detect(passwd), Probe::Vmdk);
        // Blank lines of spaces and CRLF endings, as qemu accepts them.
        assert_eq!(detect(b"#a\r\n   \r\n  \nversion=3\r\nx"), Probe::Vmdk);
        assert_eq!(detect(b"version=2\n"), Probe::Vmdk);
        // Not descriptors for qemu either: an empty line first, another
        // version, text before the version line, no line end.
        assert_eq!(detect(b"\nversion=1\n"), Probe::Raw);
        assert_eq!(detect(b"version=4\n"), Probe::Raw);
        assert_eq!(detect(b"createType=x\nversion=1\n"), Probe::Raw);
        assert_eq!(detect(b"version=1"), Probe::Raw);
        assert_eq!(detect(b"  x\nversion=1\n"), Probe::Raw);
        // Past qemu's 2 KiB probe window it is data.
        let mut late = vec![b'#'; 3000];
        late.extend(b"\nversion=1\n");
        assert_eq!(detect(&late), Probe::Raw);
    }

    #[test]
    fn unsupported_formats_are_flagged() {
        assert!(Probe::Vmdk.is_unsupported());
        assert!(!Probe::Raw.is_unsupported());
        assert!(!Probe::Qcow { version: 3 }.is_unsupported());
        assert!(Probe::Xz.is_compression());
    }
}
