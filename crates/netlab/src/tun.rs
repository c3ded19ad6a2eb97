//! A host's TUN device: its only link, read and written by the emulator.

use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::namespace::{in_namespace, ip};
use crate::{LabError, Result};

/// `_IOW('T', 202, int)`: attach a file to a TUN/TAP device.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// The device's name inside its namespace.
const DEVICE: &str = "tun0";

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct InterfaceRequest {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Creates `tun0` in namespace `ns` with address `addr`/16 (the lab's
/// hosts and the public addresses of its NAT routers), up, and
/// returns the non-blocking file that carries its packets (IPv4 without
/// a packet-info header).
pub(crate) fn open_in(ns: &str, addr: Ipv4Addr) -> Result<OwnedFd> {
    let fd = in_namespace(ns, open)??;
    let cidr = format!("{addr}/16");
    ip(&["-n", ns, "addr", "add", &cidr, "dev", DEVICE])?;
    ip(&["-n", ns, "link", "set", DEVICE, "up"])?;
    Ok(fd)
}

fn open() -> Result<OwnedFd> {
    let io = |what: &str| LabError::Io {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: a NUL-terminated path; the result is checked.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io("opening /dev/net/tun"));
    }
    // SAFETY: `raw` is a file descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut request = InterfaceRequest {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _rest: [0; 22],
    };
    request.name[..DEVICE.len()].copy_from_slice(DEVICE.as_bytes());
    use std::os::fd::AsRawFd;
    // SAFETY: TUNSETIFF reads an ifreq, which `request` is laid out as.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
        return Err(io("creating the TUN device"));
    }
    Ok(fd)
}
