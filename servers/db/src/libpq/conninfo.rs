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
