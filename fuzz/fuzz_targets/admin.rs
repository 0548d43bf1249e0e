//! The proxy's admin API requests: method, path and JSON body through the same check the
//! server runs before acting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::admin;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let (method, path) = match which % 6 {
        0 => ("POST", "/backends"),
        1 => ("DELETE", "/backends"),
        2 => ("POST", "/strategy"),
        3 => ("GET", "/status"),
        4 => ("PUT", "/strategy"),
        _ => ("GET", "/nowhere"),
    };
    match admin::parse(method, path, body) {
        Ok(_) => {}
        Err((status, msg)) => {
            assert!([400, 404, 405].contains(&status), "{status}");
            assert!(!msg.is_empty());
        }
    }
});
