//! Connection strings: a URL or key=value string into the keywords libpq is given.

use super::*;

/// The keywords and values [`PgConn::connect_params`] hands libpq, in order (the last value
/// of a keyword wins): the defaults, the URL's own settings but those overridden, then the
/// overrides that have a value.
pub(super) fn conn_params(
    url: &str,
    defaults: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> Result<Vec<(String, String)>, PgError> {
    let own = |(k, v): &(&str, &str)| (k.to_string(), v.to_string());
    let mut out: Vec<(String, String)> = defaults.iter().map(own).collect();
    out.extend(
        parse_conninfo(url)?
            .into_iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k)),
    );
    out.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).map(own));
    Ok(out)
}

/// The settings a connection URL (or `key=value` string) gives, as libpq reads them.
pub(super) fn parse_conninfo(url: &str) -> Result<Vec<(String, String)>, PgError> {
    let text = CString::new(url).map_err(|_| PgError::client("connection URL holds a NUL"))?;
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: a C string; libpq allocates the options (or the message) for us to free.
    let opts = unsafe { ffi::PQconninfoParse(text.as_ptr(), &mut err) };
    if opts.is_null() {
        // SAFETY: NULL or a message libpq allocated, freed once read.
        let message = unsafe { owned(err) };
        if !err.is_null() {
            // SAFETY: allocated by libpq, not used after this.
            unsafe { ffi::PQfreemem(err.cast()) };
        }
        return Err(PgError {
            sqlstate: "08001".into(),
            message: format!("connection URL not understood: {}", message.trim()),
        });
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: an array ended by an entry whose keyword is NULL.
        let opt = unsafe { &*opts.add(i) };
        if opt.keyword.is_null() {
            break;
        }
        if !opt.val.is_null() {
            // SAFETY: NUL-terminated strings owned by the array (values kept as they are: a
            // password may start or end with a space).
            let (k, v) = unsafe { (CStr::from_ptr(opt.keyword), CStr::from_ptr(opt.val)) };
            out.push((
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            ));
        }
        i += 1;
    }
    // SAFETY: the array PQconninfoParse returned, not used after this.
    unsafe { ffi::PQconninfoFree(opts) };
    Ok(out)
}

/// For a URL naming several hosts: libpq's `host`, `port` and `hostaddr` settings with the
/// host `last` (`host:port`, as [`PgConn::server`] gives it) moved to the end of the list.
/// libpq tries the hosts in order, so a host that just went silent would cost a whole connect
/// timeout on every try before the others are reached (after a failover, the new primary).
/// `None` when the URL names fewer than two hosts or `last` is not one of them.
pub fn hosts_with_last(url: &str, last: &str) -> Option<Vec<(&'static str, String)>> {
    let params = parse_conninfo(url).ok()?;
    let list = |key: &str| -> Vec<String> {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (hosts, ports, addrs) = (list("host"), list("port"), list("hostaddr"));
    if hosts.len() < 2 {
        return None;
    }
    // One port for all, one per host, or none; an empty one is libpq's default.
    let port = |i: usize| {
        let p = match ports.len() {
            n if n == hosts.len() => ports[i].as_str(),
            1 => ports[0].as_str(),
            _ => "",
        };
        if p.is_empty() {
            "5432"
        } else {
            p
        }
    };
    let at = (0..hosts.len()).find(|&i| format!("{}:{}", hosts[i], port(i)) == last)?;
    let order: Vec<usize> = (0..hosts.len()).filter(|&i| i != at).chain([at]).collect();
    let join = |v: &[String]| {
        order
            .iter()
            .map(|&i| v[i].as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = vec![("host", join(&hosts))];
    if ports.len() == hosts.len() {
        out.push(("port", join(&ports)));
    }
    if addrs.len() == hosts.len() {
        out.push(("hostaddr", join(&addrs)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_went_silent_is_tried_last() {
        let url = "postgresql://u@10.0.0.1:5431,10.0.0.2:5432/db?target_session_attrs=read-write";
        assert_eq!(
            hosts_with_last(url, "10.0.0.1:5431").unwrap(),
            vec![
                ("host", "10.0.0.2,10.0.0.1".to_string()),
                ("port", "5432,5431".to_string())
            ]
        );
        // One port for every host.
        let url = "postgresql://u@a,b,c/db?port=6000";
        assert_eq!(
            hosts_with_last(url, "b:6000").unwrap(),
            vec![("host", "a,c,b".to_string())]
        );
        // A host without a port has the default one.
        assert_eq!(
            hosts_with_last("postgresql://u@a,b:6000/db", "a:5432").unwrap(),
            vec![("host", "b,a".to_string()), ("port", "6000,".to_string())]
        );
        // One host, or a host the URL does not name: nothing to reorder.
        assert_eq!(hosts_with_last("postgresql://u@a/db", "a:5432"), None);
        assert_eq!(hosts_with_last(url, "d:6000"), None);
    }
}
