//! Socket creation and options, through socket2.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::config::SocketOptions;

/// Binds a non-blocking listener with SO_REUSEPORT (so every loop can bind the same address) and
/// SO_REUSEADDR when configured.
pub(crate) fn listener(
    addr: SocketAddr,
    opts: &SocketOptions,
    backlog: i32,
) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(opts.reuse_address)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // On Linux an accepted socket inherits these from its listener (buffer sizes must be set
    // before listen to affect the window anyway), so accepting costs no setsockopt call.
    #[cfg(target_os = "linux")]
    apply(&socket, opts)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Checks that no other socket listens on `addr` (and picks the port when it is 0), before the
/// loops bind it with SO_REUSEPORT: SO_REUSEPORT would let this process silently join a port
/// another process of the same user listens on, and the kernel would split clients between
/// them. A plain bind (SO_REUSEADDR only, so TIME_WAIT does not count) fails on any listener.
/// The probe is closed before the loops bind; the window between the two is microseconds.
pub(crate) fn claim(addr: SocketAddr, opts: &SocketOptions) -> io::Result<SocketAddr> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(opts.reuse_address)?;
    match socket.bind(&addr.into()) {
        Ok(()) => socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound address is not an IP address")),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("address {addr} is already in use"),
        )),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))),
    }
}

/// Applies the per-connection options to a listener (Linux: its accepted sockets inherit them),
/// an accepted stream (elsewhere) or an outbound stream.
pub(crate) fn apply<S: std::os::fd::AsFd>(stream: &S, opts: &SocketOptions) -> io::Result<()> {
    let s = SockRef::from(stream);
    if opts.nodelay {
        s.set_tcp_nodelay(true)?;
    }
    if let Some(k) = opts.keepalive {
        let ka = TcpKeepalive::new()
            .with_time(k.idle)
            .with_interval(k.interval);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        let ka = ka.with_retries(k.retries);
        s.set_tcp_keepalive(&ka)?;
    }
    if let Some(n) = opts.recv_buffer {
        s.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer {
        s.set_send_buffer_size(n)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(t) = opts.user_timeout {
        s.set_tcp_user_timeout(Some(t))?;
    }
    if opts.linger.is_some() {
        s.set_linger(opts.linger)?;
    }
    Ok(())
}

/// Options an accepted stream does not inherit from its listener on this platform.
pub(crate) fn apply_accepted(stream: &mio::net::TcpStream, opts: &SocketOptions) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let _ = (stream, opts);
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    apply(stream, opts)
}

/// Opens a non-blocking outbound connection; completion is reported by the first writable event.
pub(crate) fn connect(addr: SocketAddr, opts: &SocketOptions) -> io::Result<mio::net::TcpStream> {
    let stream = mio::net::TcpStream::connect(addr)?;
    apply(&stream, opts)?;
    Ok(stream)
}

/// The process's soft open-file limit, if the platform has one.
pub(crate) fn open_file_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        Some(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the process's soft open-file limit to its hard limit, as nginx (`worker_rlimit_nofile`)
/// and Redis do at start, and returns the limit now in force. Call it before
/// [`Server::new`](crate::Server::new) when a server should take as many connections as the
/// system allows: the default [`Limits::max_connections`](crate::Limits::max_connections)
/// follows the soft limit at that moment. The engine never changes the limit by itself.
///
/// # Errors
///
/// The OS error when the limit cannot be read or set; `Unsupported` on platforms without one.
///
/// ```
/// let n = engine::raise_open_file_limit()?;
/// assert!(n > 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn raise_open_file_limit() -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if lim.rlim_cur < lim.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Ok(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Accepting sets no option on Linux: this is what makes that correct.
    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let opts = SocketOptions {
            recv_buffer: Some(128 * 1024),
            ..SocketOptions::default()
        };
        let l = listener("127.0.0.1:0".parse().unwrap(), &opts, 16).unwrap();
        let addr = l.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let l = std::net::TcpListener::from(l);
        l.set_nonblocking(false).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let s = SockRef::from(&accepted);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        let tcp = |opt| {
            use std::os::fd::AsRawFd;
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `v`.
            let r = unsafe {
                libc::getsockopt(
                    accepted.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    opt,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0);
            v
        };
        assert_eq!(tcp(libc::TCP_KEEPIDLE), 30);
        assert_eq!(tcp(libc::TCP_KEEPINTVL), 10);
        assert_eq!(tcp(libc::TCP_KEEPCNT), 9);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(60)));
        // The kernel doubles the value asked for (bookkeeping overhead).
        assert_eq!(s.recv_buffer_size().unwrap(), 2 * 128 * 1024);
    }
}
