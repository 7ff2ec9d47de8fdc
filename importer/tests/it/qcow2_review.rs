//! qcow2 defects found by the outside review of the landed binary (issue
//! 9, items 1 and 7), each built from a real qemu image and run through
//! random access, the stream reader (stdin) and, where it matters, HTTP.

use std::path::Path;

use crate::common::*;
use crate::convert::qemu_img;
use crate::import::Pod;
use crate::net::{FaultServer, Static};
use crate::qcow2_hostile::{accepted, base, base_sized, be64, poke32, poke64, refused};

/// BASE layout: header 0, refcount table 0x10000, refcount block 0x20000,
/// L1 0x30000, L2 0x40000, data 0x50000 (0xab) ...
const RT: usize = 0x10000;
const L1: usize = 0x30000;
const DATA: u64 = 0x50000;

/// A 1 GiB BASE (two L1 entries) whose second L1 entry names the first
/// entry's L2 table: guest 512 MiB.. reads like guest 0...
fn shared_l2(d: &Path) -> Vec<u8> {
    let mut b = base_sized(d, "", "1G");
    assert_eq!(be64(&b, L1 + 8), 0, "second L1 entry unexpectedly used");
    let first = be64(&b, L1);
    poke64(&mut b, L1 + 8, first);
    b
}

/// A valid snapshot table entry with no id, name or extra data.
fn empty_snapshot_entry() -> [u8; 40] {
    [0u8; 40]
}

#[test]
fn shared_l2_table_converts_like_qemu_on_every_path() {
    if qemu_img().is_none() {
        return;
    }
    let t = tmp();
    let d = t.path();
    let img = shared_l2(d);
    // Random access and stdin (this spun forever in the stream reader).
    accepted(d, &img);
    let want = std::fs::read(path(d, "ref.raw")).unwrap();
    assert_eq!(&want[(512 << 20)..(512 << 20) + 4], &[0xab; 4]);

    // Over HTTP from a server without ranges: the stream path again.
    let mut res = Static::new(img.clone());
    res.ranges = false;
    let s = FaultServer::start(move |req, _| res.reply(req));
    let out = path(d, "http.raw");
    ok(&run(&["convert", "--no-progress", &s.url("s.qcow2"), &out]));
    assert!(std::fs::read(&out).unwrap() == want, "HTTP stream differs");

    // And through `import`, CDI's pod contract.
    let pod = Pod::new();
    let o = pod.run(&[
        ("IMPORTER_SOURCE", "http"),
        ("IMPORTER_ENDPOINT", &s.url("s.qcow2")),
        ("IMPORTER_IMAGE_SIZE", "1Gi"),
    ]);
    pod.json(&o);
    let got = std::fs::read(pod.disk()).unwrap();
    assert!(got[..want.len()] == want[..], "import differs");
}

#[test]
fn stream_refuses_what_random_access_refuses() {
    if qemu_img().is_none() {
        return;
    }
    let t = tmp();
    let d = t.path();

    // A refcount table past the end of the file (never needed to read
    // data, so the stream used to finish without reaching it).
    let mut b = base(d, "");
    let end = b.len() as u64;
    poke64(&mut b, 48, end + 0x10000);
    refused(d, &b, "format", "beyond end of file");

    // A refcount block cut by the end of the file.
    let mut b = base(d, "");
    let end = b.len() as u64;
    poke64(&mut b, RT + 8, end);
    refused(d, &b, "truncated", "beyond end of file");

    // A bogus snapshot table: entries made of guest data (0xab), whose
    // lengths walk far past anything sensible.
    let mut b = base(d, "");
    poke32(&mut b, 60, 3);
    poke64(&mut b, 64, DATA);
    refused(d, &b, "format", "snapshot table");

    // A data cluster lying on a valid snapshot table (D6).
    let mut b = base(d, "");
    poke32(&mut b, 60, 1);
    poke64(&mut b, 64, DATA);
    b[DATA as usize..DATA as usize + 40].copy_from_slice(&empty_snapshot_entry());
    refused(d, &b, "format", "overlaps the snapshot table");

    // A snapshot table past the end of the file.
    let mut b = base(d, "");
    let end = b.len() as u64;
    poke32(&mut b, 60, 1);
    poke64(&mut b, 64, end + 0x10000);
    refused(d, &b, "format", "beyond end of file");
}

#[test]
fn refcount_table_after_the_data_is_still_checked_against_it() {
    if qemu_img().is_none() {
        return;
    }
    let t = tmp();
    let d = t.path();
    // The refcount table moved past the data (as a running guest can leave
    // it): the stream meets the data first.
    let mut b = base(d, "");
    let end = b.len();
    let rt = b[RT..RT + 0x10000].to_vec();
    b.extend_from_slice(&rt);
    poke64(&mut b, 48, end as u64);
    accepted(d, &b);
    // One of its blocks is the first data cluster (D6): refused on both
    // paths, though the stream has already read that cluster as data.
    poke64(&mut b, end + 8, DATA);
    refused(d, &b, "format", "refcount block");
}
