//! The ethtool ioctl (`SIOCETHTOOL`): an interface's driver statistics (`ethtool -S`) and
//! its offload features (`ethtool -k` / `-K`), read and changed by name.
//!
//! Every call opens a socket in the calling thread's network namespace and names the
//! interface there.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::bail;

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_STATS: u32 = 1;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` with the `ifr_data` member of its union (padded to the kernel's 40 bytes).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `SIOCETHTOOL` on `iface` with `cmd`, a buffer starting with the ethtool command
/// word and as large as the command's structure.
fn ioctl(iface: &str, cmd: &mut [u64]) -> io::Result<libc::c_int> {
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        data: cmd.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{iface:?} is not a valid interface name"),
        ));
    }
    req.name[..name.len()].copy_from_slice(name);
    let sock = socket()?;
    // SAFETY: `req` is a valid ifreq whose data pointer refers to `cmd`, which outlives the
    // call and is as large as the structure the command word asks the kernel to use.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A buffer of u64 words (so that u64 fields are aligned) of at least `bytes` bytes,
/// starting with the two u32 words `a` and `b`.
fn buffer(bytes: usize, a: u32, b: u32) -> Vec<u64> {
    let mut buf = vec![0u64; bytes.div_ceil(8)];
    set_u32(&mut buf, 0, a);
    set_u32(&mut buf, 1, b);
    buf
}

fn bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: any u64 is 8 initialised bytes; the slice covers exactly the buffer.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), std::mem::size_of_val(buf)) }
}

fn get_u32(buf: &[u64], index: usize) -> u32 {
    let b = bytes(buf);
    u32::from_ne_bytes(b[index * 4..index * 4 + 4].try_into().expect("4 bytes"))
}

fn set_u32(buf: &mut [u64], index: usize, value: u32) {
    let word = &mut buf[index / 2];
    let mut b = word.to_ne_bytes();
    let at = (index % 2) * 4;
    b[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    *word = u64::from_ne_bytes(b);
}

fn context(iface: &str, what: &str, e: io::Error) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENODEV) => " (no such interface in this network namespace)",
        Some(libc::EOPNOTSUPP) => " (the driver does not support it)",
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        _ => "",
    };
    anyhow::anyhow!("ethtool {what} on {iface}: {e}{hint}")
}

/// The number of strings of set `set` (0 when the driver has none).
fn string_count(iface: &str, set: u32) -> anyhow::Result<usize> {
    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
    let mut buf = buffer(24, ETHTOOL_GSSET_INFO, 0);
    buf[1] = 1u64 << set;
    match ioctl(iface, &mut buf) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(0),
        Err(e) => return Err(context(iface, "string set info", e)),
    }
    if buf[1] & (1u64 << set) == 0 {
        return Ok(0);
    }
    Ok(get_u32(&buf, 4) as usize)
}

/// The names of string set `set` (statistics or features).
fn strings(iface: &str, set: u32, count: usize) -> anyhow::Result<Vec<String>> {
    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
    let mut buf = buffer(12 + count * ETH_GSTRING_LEN, ETHTOOL_GSTRINGS, set);
    set_u32(&mut buf, 2, count as u32);
    ioctl(iface, &mut buf).map_err(|e| context(iface, "strings", e))?;
    let returned = (get_u32(&buf, 2) as usize).min(count);
    let data = &bytes(&buf)[12..];
    Ok((0..returned)
        .map(|i| {
            let raw = &data[i * ETH_GSTRING_LEN..(i + 1) * ETH_GSTRING_LEN];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        })
        .collect())
}

/// The driver's statistics, by name, in the driver's order (what `ethtool -S` prints).
/// Empty when the driver has none.
pub fn stats(iface: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let count = string_count(iface, ETH_SS_STATS)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let names = strings(iface, ETH_SS_STATS, count)?;
    // struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
    let mut buf = buffer(8 + count * 8, ETHTOOL_GSTATS, count as u32);
    ioctl(iface, &mut buf).map_err(|e| context(iface, "statistics", e))?;
    let n = (get_u32(&buf, 1) as usize).min(names.len());
    Ok(names
        .into_iter()
        .take(n)
        .zip(buf[1..].iter().copied())
        .collect())
}

/// One offload feature of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The kernel's name, as `ethtool -k` prints it in its long form (`rx-gro`, `rx-lro`).
    pub name: String,
    /// The driver can change it.
    pub changeable: bool,
    /// Requested by the administrator (what `ethtool -K` set).
    pub requested: bool,
    /// In effect.
    pub active: bool,
}

/// The interface's offload features (what `ethtool -k` shows).
pub fn features(iface: &str) -> anyhow::Result<Vec<Feature>> {
    let count = string_count(iface, ETH_SS_FEATURES)?;
    if count == 0 {
        bail!("ethtool features on {iface}: the kernel lists none");
    }
    let names = strings(iface, ETH_SS_FEATURES, count)?;
    let blocks = count.div_ceil(32);
    // struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 available, requested,
    // active, never_changed; } features[]; }
    let mut buf = buffer(8 + blocks * 16, ETHTOOL_GFEATURES, blocks as u32);
    ioctl(iface, &mut buf).map_err(|e| context(iface, "features", e))?;
    let word = |block: usize, field: usize| get_u32(&buf, 2 + block * 4 + field);
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let (block, bit) = (i / 32, 1u32 << (i % 32));
            Feature {
                name,
                changeable: word(block, 0) & bit != 0,
                requested: word(block, 1) & bit != 0,
                active: word(block, 2) & bit != 0,
            }
        })
        .collect())
}

/// Requests each `(feature, on)` change on `iface` and returns the features as they are
/// afterwards. A feature the kernel does not know is an error; whether a change took
/// effect is for the caller to check in the result (a driver may keep a feature that
/// another one depends on).
pub fn set_features(iface: &str, changes: &[(&str, bool)]) -> anyhow::Result<Vec<Feature>> {
    let names: Vec<String> = features(iface)?.into_iter().map(|f| f.name).collect();
    let blocks = names.len().div_ceil(32);
    // struct ethtool_sfeatures { u32 cmd; u32 size; struct { u32 valid, requested; }
    // features[]; }
    let mut buf = buffer(8 + blocks * 8, ETHTOOL_SFEATURES, blocks as u32);
    for (feature, on) in changes {
        let Some(i) = names.iter().position(|n| n == feature) else {
            bail!("ethtool: {iface} has no feature {feature:?}");
        };
        let (block, bit) = (i / 32, 1u32 << (i % 32));
        let valid = get_u32(&buf, 2 + block * 2) | bit;
        set_u32(&mut buf, 2 + block * 2, valid);
        let requested = get_u32(&buf, 3 + block * 2);
        set_u32(
            &mut buf,
            3 + block * 2,
            if *on {
                requested | bit
            } else {
                requested & !bit
            },
        );
    }
    // A positive return (ETHTOOL_F_WISH and friends) means "not all as asked": the
    // features read back below say what happened.
    ioctl(iface, &mut buf).map_err(|e| context(iface, "set features", e))?;
    features(iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_words_pack_into_u64_buffers() {
        let mut buf = buffer(20, 7, 9);
        set_u32(&mut buf, 3, 0xdead_beef);
        assert_eq!(get_u32(&buf, 0), 7);
        assert_eq!(get_u32(&buf, 1), 9);
        assert_eq!(get_u32(&buf, 2), 0);
        assert_eq!(get_u32(&buf, 3), 0xdead_beef);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn loopback_has_features_and_names_are_checked() {
        // Every namespace has `lo`; reading features needs no privilege.
        let f = features("lo").expect("lo's features");
        assert!(f.iter().any(|f| f.name == "rx-gro"), "{f:?}");
        let e = stats("no-such-if0").unwrap_err().to_string();
        assert!(e.contains("no-such-if0"), "{e}");
        let e = stats("a-name-far-too-long").unwrap_err().to_string();
        assert!(e.contains("not a valid interface name"), "{e}");
    }
}
