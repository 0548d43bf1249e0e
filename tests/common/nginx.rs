//! nginx as a test peer, when it is installed: a throwaway prefix directory, one worker,
//! stopped when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;

use super::TempDir;

/// A running nginx.
pub struct Nginx {
    pub addr: SocketAddr,
    pid: String,
    _dir: TempDir,
}

impl Nginx {
    /// True when an `nginx` binary can be run (and, where `NETMOD_REQUIRE_NGINX=1`, fails the
    /// test when it cannot).
    pub fn installed() -> bool {
        super::prerequisite("nginx", "NETMOD_REQUIRE_NGINX", super::runs("nginx", "-v"))
    }

    /// Starts nginx answering `/health` and every other path with 200 `{"backend":"<name>"}`,
    /// with nginx's default limits otherwise (client_max_body_size `max_body`).
    pub fn start(name: &str, max_body: &str) -> Nginx {
        let locations = format!(
            "location = /health {{ return 200 '{{\"status\":\"ok\"}}'; }}\n\
             location / {{ default_type application/json; return 200 '{{\"backend\":\"{name}\"}}'; }}"
        );
        Self::with_locations(name, max_body, &locations)
    }

    /// Starts nginx as a reverse proxy in front of `backend` (keep-alive to it, nginx's
    /// defaults otherwise): how a user puts nginx in front of the HTTP front.
    pub fn proxy(name: &str, backend: SocketAddr) -> Nginx {
        let locations = format!(
            "location / {{ proxy_pass http://{backend}; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; }}"
        );
        Self::with_locations(name, "1m", &locations)
    }

    fn with_locations(name: &str, max_body: &str, locations: &str) -> Nginx {
        let dir = TempDir::new(&format!("nginx-{name}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            "worker_processes 1; pid nginx.pid; error_log error.log warn; daemon on;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_max_body_size {max_body};\n\
               server {{ listen 127.0.0.1:{port};\n{locations} }} }}\n"
        );
        std::fs::write(dir.path("nginx.conf"), conf).unwrap();
        let out = Command::new("nginx")
            .args(["-p", dir.0.to_str().unwrap(), "-c", "nginx.conf"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid_file = dir.path("nginx.pid");
        super::eventually("nginx pid file", || pid_file.exists());
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        Nginx {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}
